//! Read access to the kernel: states, digests, heads, blocks, counters.

use std::sync::Arc;

use super::fold::Status;
use super::{Error, Head, Kernel, Stats};
use crate::block::{Block, BlockId};
use crate::identity::PublicKey;
use crate::slice::{AnySlice, Cell, Digest, Slice, Subscription};
use crate::store::BlockStore;

/// Where a held block stands ([`Kernel::status`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockStatus {
    /// Reduced into the slice states.
    Counted,
    /// Valid, but no slice wants it: kept, contributing nothing, judged again when the set
    /// changes.
    Ignored,
    /// A slice rejects it in the current state: kept, contributing nothing, judged again on
    /// the next fold.
    Rejected {
        /// The rejecting slice.
        slice: String,
        /// The slice's reason.
        reason: String,
    },
    /// Its body is gone (it expired, or arrived without it): the header keeps the chain whole.
    Collected,
    /// Waiting in the mempool for its parent or for its time to come.
    Waiting,
}

/// Most waiting ancestors [`Kernel::diverging_parent`] walks through.
const MAX_WALK: usize = 1024;

impl Kernel {
    fn cell<S: Slice>(&self) -> Option<&Cell<S>> {
        self.fold
            .slices
            .iter()
            .find_map(|s| s.as_any().downcast_ref::<Cell<S>>())
    }

    /// The current state of slice `S`, or `None` if `S` is not registered.
    pub fn state<S: Slice>(&self) -> Option<&S::State> {
        self.cell::<S>().map(Cell::state)
    }

    /// A stream of slice `S`'s state: the current state at once, then the state after each
    /// change (see [`Subscription`]).
    ///
    /// # Errors
    /// [`Error::UnknownSlice`] if `S` is not registered.
    pub fn subscribe<S: Slice>(&mut self) -> Result<Subscription<S::State>, Error> {
        self.fold
            .slices
            .iter_mut()
            .find_map(|s| s.as_any_mut().downcast_mut::<Cell<S>>())
            .map(Cell::subscribe)
            .ok_or_else(|| Error::UnknownSlice {
                name: std::any::type_name::<S>().to_owned(),
            })
    }

    /// The digest of slice `S`'s state, or `None` if `S` is not registered.
    pub fn digest<S: Slice>(&self) -> Option<Digest> {
        self.cell::<S>().map(|c| c.digest())
    }

    /// The digest of the named slice's state.
    pub fn digest_of(&self, name: &str) -> Option<Digest> {
        self.fold
            .slices
            .iter()
            .find(|s| s.name() == name)
            .map(|s| s.digest())
    }

    /// Every slice's name and state digest, in registration order.
    pub fn digests(&self) -> Vec<(String, Digest)> {
        self.fold
            .slices
            .iter()
            .map(|s| (s.name().to_owned(), s.digest()))
            .collect()
    }

    /// blake3 over the candidate set, sorted by id: each block's id and whether its body is
    /// held. State is a function of exactly that (a block without its body contributes
    /// nothing), so peers with the same `set_hash` have the same digests, and a peer that holds
    /// a block without the body another holds sees a different `set_hash`.
    pub fn set_hash(&self) -> Digest {
        let mut blocks: Vec<(BlockId, bool)> = self
            .index
            .blocks
            .values()
            .map(|b| (b.id(), b.body().is_some()))
            .collect();
        blocks.sort_unstable();
        let mut hasher = blake3::Hasher::new();
        for (id, body) in blocks {
            hasher.update(&id.0);
            hasher.update(&[u8::from(body)]);
        }
        Digest(*hasher.finalize().as_bytes())
    }

    /// The newest block of every feed in the candidate set, ordered by author.
    pub fn heads(&self) -> Vec<Head> {
        self.index
            .feeds
            .keys()
            .filter_map(|author| self.head(author))
            .collect()
    }

    /// The heads of the feeds whose author lies in `range`, in author order (what range-based
    /// reconciliation fingerprints; see [`crate::sync`]). With `as_of`, each feed's newest
    /// block whose time is at most `as_of` (a feed with none is left out): a block younger
    /// than that is still spreading by push, and reconciling it would cost a round per peer
    /// for what push delivers anyway.
    pub fn heads_in(
        &self,
        range: impl std::ops::RangeBounds<PublicKey>,
        as_of: Option<u64>,
    ) -> impl Iterator<Item = Head> + '_ {
        self.walk_heads(range, as_of).flatten()
    }

    /// [`Kernel::heads_in`] with one item per feed visited (`None` for a feed with no head as
    /// of `as_of`), so a caller can count what a walk cost.
    pub(crate) fn walk_heads(
        &self,
        range: impl std::ops::RangeBounds<PublicKey>,
        as_of: Option<u64>,
    ) -> impl Iterator<Item = Option<Head>> + '_ {
        self.index.feeds.range(range).map(move |(author, feed)| {
            let seq = match as_of {
                None => feed.ids.len().checked_sub(1)?,
                // Most feeds wrote nothing within the grace: their head is the newest.
                Some(time) if feed.last_time <= time => feed.ids.len().checked_sub(1)?,
                // Time never falls within a feed, so the blocks dated by `time` are a
                // prefix: a binary search, not a walk back over the newest blocks (a feed
                // that writes every 20 ms has 100 of them within a 2 s grace).
                Some(time) => feed
                    .ids
                    .partition_point(|id| {
                        self.index.blocks.get(id).is_none_or(|b| b.time() <= time)
                    })
                    .checked_sub(1)?,
            };
            Some(Head {
                author: *author,
                seq: seq as u64,
                id: feed.ids[seq],
            })
        })
    }

    /// The newest block of `author`'s feed in the candidate set (counted or not: a peer that
    /// asks for the feed gets all of it, so peers end with the same blocks).
    pub fn head(&self, author: &PublicKey) -> Option<Head> {
        let feed = self.index.feeds.get(author)?;
        let id = *feed.ids.last()?;
        Some(Head {
            author: *author,
            seq: feed.ids.len() as u64 - 1,
            id,
        })
    }

    /// Blocks of `author`'s feed from `from_seq` on, at most `max_blocks` of them and about
    /// `max_bytes` (at least one block is returned if any is available).
    pub fn blocks_from(
        &self,
        author: &PublicKey,
        from_seq: u64,
        max_blocks: usize,
        max_bytes: usize,
    ) -> Vec<Arc<Block>> {
        let Some(feed) = self.index.feeds.get(author) else {
            return Vec::new();
        };
        let len = feed.ids.len();
        let start = usize::try_from(from_seq).unwrap_or(usize::MAX).min(len);
        let mut bytes = 0;
        let mut out = Vec::new();
        for id in &feed.ids[start..len] {
            let block = &self.index.blocks[id];
            let size = block.header().body_len as usize + 160;
            if out.len() >= max_blocks || (!out.is_empty() && bytes + size > max_bytes) {
                break;
            }
            bytes += size;
            out.push(block.clone());
        }
        out
    }

    /// The block at height `seq` of `author`'s feed in the candidate set.
    pub fn block_at(&self, author: &PublicKey, seq: u64) -> Option<Arc<Block>> {
        let feed = self.index.feeds.get(author)?;
        let id = feed.ids.get(usize::try_from(seq).ok()?)?;
        self.index.blocks.get(id).cloned()
    }

    /// For a block whose parent is unknown here: that parent's id, when the feed already holds
    /// another block at the parent's height. The author then signed two chains that part at or
    /// below that height, and fetching the parent (then its parent, while it diverges) walks
    /// down to the height where they part, where the kernel finds the fork. `None` for a block
    /// whose parent is known, or that only runs ahead of the feed.
    pub fn diverging_parent(&self, block: &Block) -> Option<BlockId> {
        // Down through ancestors that wait in the mempool to the first one held nowhere.
        let mut block = block;
        let mut parent = block.parent()?;
        for _ in 0..MAX_WALK {
            if self.index.blocks.contains_key(&parent) {
                return None;
            }
            match self.mempool.get(&parent) {
                Some(waiting) => {
                    block = waiting.as_ref();
                    parent = block.parent()?;
                }
                None => break,
            }
        }
        let ours = self.block_at(&block.author(), block.seq().checked_sub(1)?)?;
        (ours.id() != parent).then_some(parent)
    }

    /// The two blocks proving a fork in `author`'s feed, if it is frozen.
    pub fn fork_proof(&self, author: &PublicKey) -> Option<(Arc<Block>, Arc<Block>)> {
        self.index.feeds.get(author)?.proof.clone()
    }

    /// Authors whose feeds are frozen by a fork, with the height of the fork.
    pub fn frozen_feeds(&self) -> Vec<(PublicKey, u64)> {
        self.index
            .feeds
            .iter()
            .filter_map(|(a, f)| f.frozen_at.map(|at| (*a, at)))
            .collect()
    }

    /// A block of the candidate set by id.
    pub fn block(&self, id: &BlockId) -> Option<Arc<Block>> {
        self.index.blocks.get(id).cloned()
    }

    /// Whether the block is in the candidate set.
    pub fn contains(&self, id: &BlockId) -> bool {
        self.index.blocks.contains_key(id)
    }

    /// Whether the block counts (is reduced into the state).
    pub fn counts(&self, id: &BlockId) -> bool {
        self.fold.counts(id)
    }

    /// Where a block stands here, or `None` when this kernel holds it nowhere (never seen,
    /// evicted with its feed, or dropped as invalid).
    pub fn status(&self, id: &BlockId) -> Option<BlockStatus> {
        if let Some(block) = self.index.blocks.get(id) {
            return Some(match self.fold.status(id) {
                // Without its body a block contributes nothing, whatever the fold last said.
                _ if block.body().is_none() => BlockStatus::Collected,
                Some(Status::Counted) => BlockStatus::Counted,
                Some(Status::Rejected { slice, reason }) => BlockStatus::Rejected {
                    slice: self.fold.slices[*slice].name().to_owned(),
                    reason: reason.to_string(),
                },
                Some(Status::Collected) => BlockStatus::Collected,
                // Not judged yet counts as ignored: no slice took it in the last fold.
                Some(Status::Ignored) | None => BlockStatus::Ignored,
            });
        }
        self.mempool.get(id).map(|_| BlockStatus::Waiting)
    }

    /// A block this kernel holds by id: in the candidate set, or waiting in the mempool (for
    /// its parent, or for its time to come).
    pub fn held_block(&self, id: &BlockId) -> Option<Arc<Block>> {
        self.block(id).or_else(|| self.mempool.get(id).cloned())
    }

    /// `author`'s feed as held (counted or not), as a [`crate::Feed`].
    pub fn feed(&self, author: &PublicKey) -> crate::Feed {
        let blocks = self
            .index
            .feeds
            .get(author)
            .map(|f| {
                f.ids
                    .iter()
                    .map(|id| (*self.index.blocks[id]).clone())
                    .collect()
            })
            .unwrap_or_default();
        crate::Feed::from_blocks(blocks).expect("the kernel only links valid chains")
    }

    /// Feeds held (the candidate set's authors).
    pub fn feed_count(&self) -> usize {
        self.index.feeds.len()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        Stats {
            blocks: self.index.blocks.len(),
            feeds: self.index.feeds.len(),
            mempool_blocks: self.mempool.len(),
            mempool_bytes: self.mempool.bytes(),
            mempool_evicted: self.mempool.evicted,
            full_refolds: self.fold.full_refolds,
            evaluations: self.fold.evaluations,
            reductions: self.fold.reductions,
            own_bytes: self.index.feeds.get(&self.author()).map_or(0, |f| f.bytes),
            other_bytes: self
                .index
                .feeds
                .iter()
                .filter(|(a, _)| **a != self.author())
                .map(|(_, f)| f.bytes)
                .sum(),
            ..self.stats.clone()
        }
    }

    /// The store, for inspection.
    pub fn store(&self) -> &dyn BlockStore {
        self.store.as_ref()
    }

    /// Closes the kernel and hands back its store (every dispatch is already committed), so
    /// it can be reopened with [`KernelBuilder::with_boxed_store`](crate::KernelBuilder::with_boxed_store).
    /// A snapshot of the state is written first so the next open need not replay; if that
    /// write fails, the next open replays every block instead (same state, slower).
    pub fn close(mut self) -> Box<dyn BlockStore> {
        let _ = self.checkpoint();
        self.store
    }
}
