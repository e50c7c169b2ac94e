//! Feeds: chains of blocks, each linked to the one before by id.
//!
//! A feed may hold a contiguous part of a chain (a *slice*), not only from genesis, and may
//! hold blocks of several authors (a conversation); `seq` rises by one per block whoever signs.
//! [`Feed::diff`] compares two feeds, [`Feed::merge`] takes in what another feed adds. Merging
//! never mutates the local feed unless everything it would add verifies and links.

mod encode;

use std::ops::Range;

use crate::block::{Block, BlockError, BlockId, DecodeError};
use crate::identity::Identity;

/// How a feed relates to another, seen from the local side (`local.diff(&remote)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Diff {
    /// Both end at the same block.
    InSync,
    /// Same chain; the local tip is this many blocks past the remote one.
    Ahead(u64),
    /// Same chain; the remote tip is this many blocks past the local one.
    Behind(u64),
    /// Both hold a block at `seq` and the two differ.
    Diverged {
        /// The first height where the feeds disagree.
        seq: u64,
    },
    /// No shared block and no link between them (a gap, or different chains).
    Unrelated,
}

/// What [`Feed::merge`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merged {
    /// The incoming feed adds nothing.
    NothingNew,
    /// Blocks were appended after the local tip.
    FastForward {
        /// How many.
        added: usize,
    },
    /// Blocks that precede the local feed were prepended.
    ReverseMerge {
        /// How many.
        added: usize,
    },
    /// The incoming feed covered the local one and extended it at both ends.
    Extended {
        /// Blocks prepended.
        prepended: usize,
        /// Blocks appended.
        appended: usize,
    },
}

/// Why a feed could not be built, checked or merged. The local feed is never changed by a
/// failed merge.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// A block is invalid in itself.
    #[error("block at seq {seq} is invalid: {error}")]
    Invalid {
        /// Height of the offending block.
        seq: u64,
        /// What is wrong with it.
        error: BlockError,
    },
    /// Consecutive blocks do not link (parent id or seq).
    #[error("block at seq {seq} does not link to the block before it")]
    BrokenChain {
        /// Height of the block that does not link.
        seq: u64,
    },
    /// The feeds hold different blocks at the same height: a fork. Nothing was merged.
    #[error("fork at seq {seq}: the feeds hold different blocks there")]
    Fork {
        /// The first height where they differ.
        seq: u64,
    },
    /// The incoming blocks are adjacent by seq but name another parent.
    #[error("block at seq {seq} names a parent the other feed does not have")]
    WrongParent {
        /// Height of the block whose parent does not match.
        seq: u64,
    },
    /// The incoming blocks neither overlap nor touch the local feed.
    #[error("gap: local feed covers seq {local:?}, incoming covers {incoming:?}")]
    Gap {
        /// Heights the local feed covers.
        local: Range<u64>,
        /// Heights the incoming feed covers.
        incoming: Range<u64>,
    },
    /// The feeds start from different genesis blocks: different chains.
    #[error("the feeds start from different genesis blocks")]
    Unrelated,
    /// The bytes are not a feed.
    #[error("malformed feed: {0}")]
    Decode(#[from] DecodeError),
}

/// A chain of blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Feed {
    blocks: Vec<Block>,
}

impl Feed {
    /// An empty feed.
    pub fn new() -> Self {
        Self::default()
    }

    /// A feed of `blocks`, which must link (each parent is the block before, seq rising by one,
    /// time never falling). Signatures are not checked here; see [`Feed::verify`].
    ///
    /// # Errors
    /// [`FeedError::BrokenChain`] or [`FeedError::Invalid`] for a time before its parent's.
    pub fn from_blocks(blocks: Vec<Block>) -> Result<Self, FeedError> {
        for pair in blocks.windows(2) {
            check_link(&pair[0], &pair[1])?;
        }
        Ok(Self { blocks })
    }

    /// The blocks, oldest first.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }
    /// Consumes the feed into its blocks.
    pub fn into_blocks(self) -> Vec<Block> {
        self.blocks
    }
    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }
    /// Whether the feed holds no block.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
    /// The oldest block.
    pub fn first(&self) -> Option<&Block> {
        self.blocks.first()
    }
    /// The newest block (the tip).
    pub fn last(&self) -> Option<&Block> {
        self.blocks.last()
    }
    /// The block at height `seq`, if this feed holds it.
    pub fn get(&self, seq: u64) -> Option<&Block> {
        let first = self.first()?.seq();
        let index = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.blocks.get(index)
    }

    /// Signs and appends a block with `body` at `time` (raised to the tip's time if earlier).
    pub fn append(&mut self, identity: &Identity, body: Vec<u8>, time: u64) -> &Block {
        let parent = self.last().map(|b| (b.id(), b.seq(), b.time()));
        self.blocks.push(Block::sign(identity, parent, time, body));
        self.blocks.last().expect("just pushed")
    }

    /// Checks every signature and link.
    ///
    /// # Errors
    /// The first [`FeedError`] found, oldest first.
    pub fn verify(&self) -> Result<(), FeedError> {
        for (i, block) in self.blocks.iter().enumerate() {
            if i > 0 {
                check_link(&self.blocks[i - 1], block)?;
            }
            block.verify().map_err(|error| FeedError::Invalid {
                seq: block.seq(),
                error,
            })?;
        }
        Ok(())
    }

    fn seqs(&self) -> Range<u64> {
        match (self.first(), self.last()) {
            (Some(a), Some(b)) => a.seq()..b.seq() + 1,
            _ => 0..0,
        }
    }

    /// Where `self` and `other` first hold different blocks inside their overlap, if they do.
    fn first_difference(&self, other: &Feed, lo: u64, hi: u64) -> Option<u64> {
        // Ids chain, so equal blocks at `hi` mean equal blocks below it.
        if self.get(hi).map(Block::id) == other.get(hi).map(Block::id) {
            return None;
        }
        (lo..=hi).find(|&s| self.get(s).map(Block::id) != other.get(s).map(Block::id))
    }

    /// Compares the local feed with `other` (see [`Diff`]).
    pub fn diff(&self, other: &Feed) -> Diff {
        let (a, b) = (self.seqs(), other.seqs());
        match (a.is_empty(), b.is_empty()) {
            (true, true) => return Diff::InSync,
            (true, false) => return Diff::Behind(b.end - b.start),
            (false, true) => return Diff::Ahead(a.end - a.start),
            _ => {}
        }
        let (lo, hi) = (a.start.max(b.start), a.end.min(b.end));
        if lo < hi {
            if let Some(seq) = self.first_difference(other, lo, hi - 1) {
                // Different genesis blocks: two chains that share nothing.
                if seq == 0 {
                    return Diff::Unrelated;
                }
                return Diff::Diverged { seq };
            }
            return match a.end.cmp(&b.end) {
                std::cmp::Ordering::Equal => Diff::InSync,
                std::cmp::Ordering::Greater => Diff::Ahead(a.end - b.end),
                std::cmp::Ordering::Less => Diff::Behind(b.end - a.end),
            };
        }
        if b.start == a.end {
            return if links(self.last(), other.first()) {
                Diff::Behind(b.end - b.start)
            } else {
                Diff::Diverged { seq: a.end - 1 }
            };
        }
        if a.start == b.end {
            return if links(other.last(), self.first()) {
                Diff::Ahead(a.end - a.start)
            } else {
                Diff::Diverged { seq: b.end - 1 }
            };
        }
        Diff::Unrelated
    }

    /// Takes in the blocks of `other` that extend this feed at either end.
    ///
    /// Every block that would be added is verified (signature and link) first; on any error the
    /// local feed is unchanged.
    ///
    /// # Errors
    /// [`FeedError::Fork`], [`FeedError::Unrelated`], [`FeedError::WrongParent`], [`FeedError::Gap`],
    /// [`FeedError::Invalid`] or [`FeedError::BrokenChain`].
    pub fn merge(&mut self, other: &Feed) -> Result<Merged, FeedError> {
        if other.is_empty() {
            return Ok(Merged::NothingNew);
        }
        if self.is_empty() {
            other.verify()?;
            self.blocks = other.blocks.clone();
            return Ok(Merged::FastForward { added: other.len() });
        }
        let (a, b) = (self.seqs(), other.seqs());
        let (lo, hi) = (a.start.max(b.start), a.end.min(b.end));
        if lo < hi {
            match self.first_difference(other, lo, hi - 1) {
                Some(0) => return Err(FeedError::Unrelated),
                Some(seq) => return Err(FeedError::Fork { seq }),
                None => {}
            }
        } else if b.start == a.end {
            if !links(self.last(), other.first()) {
                return Err(FeedError::WrongParent { seq: b.start });
            }
        } else if a.start == b.end {
            if !links(other.last(), self.first()) {
                return Err(FeedError::WrongParent { seq: a.start });
            }
        } else {
            return Err(FeedError::Gap {
                local: a,
                incoming: b,
            });
        }
        let before: Vec<Block> = (b.start..a.start.min(b.end))
            .filter_map(|s| other.get(s).cloned())
            .collect();
        let after: Vec<Block> = (a.end.max(b.start)..b.end)
            .filter_map(|s| other.get(s).cloned())
            .collect();
        // Check the seams and the new blocks before touching anything.
        let check = |blocks: &[Block], prev: Option<&Block>, next: Option<&Block>| {
            let mut prev = prev;
            for block in blocks.iter().chain(next) {
                if let Some(p) = prev {
                    check_link(p, block)?;
                }
                prev = Some(block);
            }
            blocks.iter().try_for_each(|block| {
                block.verify().map_err(|error| FeedError::Invalid {
                    seq: block.seq(),
                    error,
                })
            })
        };
        check(&before, None, self.first())?;
        check(&after, self.last(), None)?;
        let (prepended, appended) = (before.len(), after.len());
        if prepended > 0 {
            self.blocks.splice(0..0, before);
        }
        self.blocks.extend(after);
        Ok(match (prepended, appended) {
            (0, 0) => Merged::NothingNew,
            (0, added) => Merged::FastForward { added },
            (added, 0) => Merged::ReverseMerge { added },
            (prepended, appended) => Merged::Extended {
                prepended,
                appended,
            },
        })
    }

    /// A new feed of the blocks at indices `range` (clamped to the feed).
    pub fn slice(&self, range: Range<usize>) -> Feed {
        let end = range.end.min(self.len());
        let start = range.start.min(end);
        Feed {
            blocks: self.blocks[start..end].to_vec(),
        }
    }

    /// Keeps the first `len` blocks.
    pub fn truncate(&mut self, len: usize) {
        self.blocks.truncate(len);
    }

    /// Encodes the feed as one buffer (see the `encode` module for the layout): the first block
    /// in full, then per block only what its predecessor does not imply.
    pub fn encode(&self) -> Vec<u8> {
        encode::write_feed(self)
    }

    /// Decodes a feed. Links are implied by the encoding, so a decoded feed always links;
    /// signatures are not checked here (see [`Feed::verify`]).
    ///
    /// # Errors
    /// A [`DecodeError`] for bytes that are not exactly one feed.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        encode::read_feed(bytes)
    }
}

fn links(prev: Option<&Block>, next: Option<&Block>) -> bool {
    match (prev, next) {
        (Some(p), Some(n)) => n.parent() == Some(p.id()) && n.seq() == p.seq() + 1,
        _ => false,
    }
}

fn check_link(prev: &Block, next: &Block) -> Result<(), FeedError> {
    if !links(Some(prev), Some(next)) {
        return Err(FeedError::BrokenChain { seq: next.seq() });
    }
    if next.time() < prev.time() {
        return Err(FeedError::Invalid {
            seq: next.seq(),
            error: BlockError::TimeBeforeParent {
                time: next.time(),
                parent_time: prev.time(),
            },
        });
    }
    Ok(())
}

/// Ids of a feed's blocks, oldest first.
impl Feed {
    /// The ids of the blocks, oldest first.
    pub fn ids(&self) -> impl Iterator<Item = BlockId> + '_ {
        self.blocks.iter().map(Block::id)
    }
}
