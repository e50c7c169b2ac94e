//! Read access to the kernel: states, digests, heads, blocks, counters.

use std::sync::Arc;

use super::{Error, Head, Kernel, Stats};
use crate::block::{Block, BlockId};
use crate::identity::PublicKey;
use crate::slice::{AnySlice, Cell, Digest, Slice, Subscription};
use crate::store::BlockStore;

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

    /// blake3 over the sorted ids of the candidate set: peers holding the same blocks have the
    /// same `set_hash`, and then the same digests.
    pub fn set_hash(&self) -> Digest {
        let mut ids: Vec<&BlockId> = self.index.blocks.keys().collect();
        ids.sort_unstable();
        let mut hasher = blake3::Hasher::new();
        for id in ids {
            hasher.update(&id.0);
        }
        Digest(*hasher.finalize().as_bytes())
    }

    /// Number of blocks at the start of a feed that count or were collected (they form a
    /// prefix: a block counts only if its parent counts or was collected).
    fn counted_len(&self, ids: &[BlockId]) -> usize {
        ids.partition_point(|id| self.fold.links(id))
    }

    /// The newest counted (or collected) block of every feed, ordered by author.
    pub fn heads(&self) -> Vec<Head> {
        self.index
            .feeds
            .keys()
            .filter_map(|author| self.head(author))
            .collect()
    }

    /// The newest counted block of `author`'s feed.
    pub fn head(&self, author: &PublicKey) -> Option<Head> {
        let feed = self.index.feeds.get(author)?;
        let len = self.counted_len(&feed.ids);
        let id = *feed.ids.get(len.checked_sub(1)?)?;
        Some(Head {
            author: *author,
            seq: len as u64 - 1,
            id,
        })
    }

    /// Counted blocks of `author`'s feed from `from_seq` on, at most `max_blocks` of them and
    /// about `max_bytes` (at least one block is returned if any is available).
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
        let len = self.counted_len(&feed.ids);
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
