//! What a dispatch did, block by block.

use std::sync::{Arc, OnceLock};

use crate::block::{Block, BlockError, BlockId, IdMap};

/// Who offered blocks to the kernel, as the driver numbers its peers (see
/// [`crate::Kernel::dispatch_from`]). The kernel remembers it for blocks that wait (orphans,
/// future-dated blocks), so a fault found when such a block is finally placed is blamed on the
/// peer that sent it, not on the peer whose block released it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source(pub u64);

/// The fate of one block offered to [`crate::Kernel::dispatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// New, valid, and counted: reduced into the slice states.
    Accepted,
    /// Already known (in the store or waiting in the mempool); cost a lookup, no reducer call.
    Duplicate,
    /// Valid, but no slice wants it. It is kept in the candidate set and judged again when
    /// the set changes.
    Ignored,
    /// Valid, but a slice rejects it in the current state. Kept in the candidate set and judged
    /// again on the next fold; not pushed to peers, but served to a peer that asks for its
    /// feed, so peers holding the same feeds hold the same blocks. Its feed stays linked: the
    /// blocks after it are judged on their own.
    Rejected {
        /// The rejecting slice.
        slice: String,
        /// The slice's reason.
        reason: String,
    },
    /// Valid, and arrived without its body (collected by garbage collection elsewhere) or
    /// already expired: kept as a header so the chain has no gap, contributing nothing.
    Collected,
    /// Its parent is unknown; it waits in the bounded mempool and is stitched in when the
    /// parent arrives.
    WaitingForParent,
    /// Dated after now plus the allowed clock skew; held and applied when its time comes.
    TimestampFromFuture {
        /// The block's time.
        time: u64,
        /// The kernel's clock when it arrived.
        now: u64,
    },
    /// Valid, from a peer, and it sorts before every checkpoint of an order-sensitive fold,
    /// so placing it re-folds every retained block, and a peer's block already did so since
    /// the last [`crate::Kernel::poll`]. It waits (like a held block) and is applied at the
    /// next poll, together with every other such block: peers buy at most two full re-folds
    /// per poll, however many messages bring them. Local dispatches are never deferred.
    Deferred,
    /// Invalid in itself (signature, key, size, link to its parent). Dropped for good; the
    /// sender is to blame.
    Invalid(BlockError),
    /// Its feed forked below or at this block's height and is frozen there.
    Frozen {
        /// The height at which the feed is frozen.
        at: u64,
    },
    /// Accepted, then evicted with its whole feed because the store is over its byte budget
    /// and the feed ranks lowest.
    Evicted,
    /// Valid as far as checked, but the store is full and this block's feed ranks below every
    /// feed that would have to go to make room for it (see [`crate::retention`]): refused at
    /// the door, nothing stored, nothing evicted, nobody blamed. A block of a feed not held
    /// is refused before its signature is checked.
    OverCapacity,
    /// Its feed was evicted for capacity a short while ago and is refused until `until`.
    Tombstoned {
        /// When the tombstone expires (ms since the Unix epoch).
        until: u64,
    },
    /// This block proves a fork: it and the block already held at its height are kept as
    /// proof, and the feed is frozen at this height.
    Fork {
        /// The height of the fork.
        seq: u64,
    },
}

impl Outcome {
    /// Whether the sender of this block is at fault (an intrinsic fault).
    pub fn is_invalid(&self) -> bool {
        matches!(self, Outcome::Invalid(_))
    }
}

/// The result of a dispatch.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// One entry per block offered, plus blocks released from the mempool during this dispatch
    /// (stitched orphans, held blocks whose time came). Held blocks released by the clock come
    /// first, then blocks refused by the cheap checks (duplicate, cached invalid, size, frozen
    /// feed), then the rest in the order offered, each followed by the orphans it stitched in.
    /// Read them with [`Report::outcomes`]; look a block up with [`Report::outcome`].
    pub(crate) outcomes: Vec<(BlockId, Outcome)>,
    /// Blocks that became counted during this dispatch, in fold order: what a driver pushes
    /// to its peers.
    pub accepted: Vec<Arc<Block>>,
    /// Fork proofs found during this dispatch, to spread so every peer freezes the same way.
    pub proofs: Vec<Arc<Block>>,
    /// The invalid blocks of this dispatch whose sender is known, with that sender: the blocks
    /// it offered now, and blocks it offered earlier that waited and were found invalid now.
    /// Penalise these senders, never simply the sender of the current message.
    pub blame: Vec<(Source, BlockId)>,
    /// Where each block's last outcome sits in `outcomes`, built by the first
    /// [`Report::outcome`] on a large report, so looking every block of a message up costs
    /// linear time, not quadratic (a peer's message may carry thousands of blocks). Every
    /// change to `outcomes` other than an outcome rewritten in place resets it.
    positions: OnceLock<IdMap<usize>>,
}

/// Reports up to this many outcomes are searched, not indexed.
const SCAN_MAX: usize = 16;

impl Report {
    /// A report of blocks accepted elsewhere and nothing else: what a driver hands its sync
    /// machine for blocks written outside a dispatch it saw (see [`crate::sync::Event::Local`]).
    pub fn from_accepted(blocks: Vec<Arc<Block>>) -> Self {
        Self {
            accepted: blocks,
            ..Self::default()
        }
    }

    /// Every outcome of this dispatch, in the order described at [`Report`]'s field: a block
    /// can appear more than once (an orphan that waited, then was stitched in).
    pub fn outcomes(&self) -> &[(BlockId, Outcome)] {
        &self.outcomes
    }

    /// The outcome for `id`, if it was part of this dispatch: its last one.
    pub fn outcome(&self, id: &BlockId) -> Option<&Outcome> {
        if self.outcomes.len() <= SCAN_MAX {
            return self
                .outcomes
                .iter()
                .rev()
                .find(|(i, _)| i == id)
                .map(|(_, o)| o);
        }
        let positions = self.positions.get_or_init(|| {
            let mut positions =
                IdMap::with_capacity_and_hasher(self.outcomes.len(), Default::default());
            for (at, (id, _)) in self.outcomes.iter().enumerate() {
                positions.insert(*id, at);
            }
            positions
        });
        positions.get(id).map(|&at| &self.outcomes[at].1)
    }

    /// Appends an outcome.
    pub(crate) fn push(&mut self, id: BlockId, outcome: Outcome) {
        self.positions.take();
        self.outcomes.push((id, outcome));
    }

    /// Drops every outcome of `id`.
    pub(crate) fn forget(&mut self, id: &BlockId) {
        self.positions.take();
        self.outcomes.retain(|(i, _)| i != id);
    }

    /// Appends everything `later` reports after what this one does.
    pub(crate) fn append(&mut self, mut later: Report) {
        self.positions.take();
        self.outcomes.append(&mut later.outcomes);
        self.accepted.append(&mut later.accepted);
        self.proofs.append(&mut later.proofs);
        self.blame.append(&mut later.blame);
    }

    /// How many blocks had an outcome matching `pred`.
    pub fn count(&self, pred: impl Fn(&Outcome) -> bool) -> usize {
        self.outcomes.iter().filter(|(_, o)| pred(o)).count()
    }

    /// Number of intrinsically invalid blocks.
    pub fn invalid(&self) -> usize {
        self.count(Outcome::is_invalid)
    }

    /// How many invalid blocks `source` is to blame for in this dispatch.
    pub fn invalid_from(&self, source: Source) -> usize {
        self.blame.iter().filter(|(s, _)| *s == source).count()
    }
}
