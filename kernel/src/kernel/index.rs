//! The candidate set C in memory: blocks by id, feeds by author, and the canonical order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::block::{Block, BlockId, BlockSet};
use crate::identity::PublicKey;
use crate::slice::FeedLookup;

/// The canonical fold order: (time, author, seq). Time never falls within a feed and a feed
/// has one block per seq (a fork freezes it), so this is a total order that respects seq.
pub(crate) type OrderKey = (u64, PublicKey, u64);

pub(crate) fn key_of(block: &Block) -> OrderKey {
    (block.time(), block.author(), block.seq())
}

/// One author's feed as the kernel holds it: a contiguous chain from genesis.
#[derive(Default)]
pub(crate) struct FeedIndex {
    /// Ids by seq; always starts at genesis because a block enters C only after its parent.
    pub ids: Vec<BlockId>,
    /// A fork was proven at this seq; blocks at or above it are outside C for good.
    pub frozen_at: Option<u64>,
    /// The two blocks that prove the fork.
    pub proof: Option<(Arc<Block>, Arc<Block>)>,
    /// Bytes held, as counted for retention (see [`cost`]).
    pub bytes: u64,
    /// This kernel's arrival order: the feed was the `arrival`-th it stored (persisted).
    pub arrival: u64,
    /// The time of the newest block in `ids` (0 when empty): a walk over the heads as of a
    /// time reads it, not the block, for every feed that wrote nothing since.
    pub last_time: u64,
}

/// A block's weight for the retention budget: its body plus a fixed overhead for the header,
/// signature and indexes.
pub(crate) fn cost(block: &Block) -> u64 {
    BLOCK_OVERHEAD + block.body().map_or(0, |b| b.len() as u64)
}

/// The per-block part of [`cost`].
pub(crate) const BLOCK_OVERHEAD: u64 = 160;

#[derive(Default)]
pub(crate) struct Index {
    pub blocks: BlockSet,
    pub feeds: BTreeMap<PublicKey, FeedIndex>,
    /// C in canonical order, kept only for an order-sensitive fold (see [`Index::ordered`]):
    /// a commutative fold applies blocks as they arrive and needs the canonical order only
    /// for a full re-fold, which sorts C then ([`Index::in_order`]). The map costs about 140
    /// bytes per block, the largest single part of a kernel's memory.
    pub order: Option<BTreeMap<OrderKey, BlockId>>,
    /// Blocks that arrived without their body (a peer collected them, or lied) and whose body
    /// this kernel did not drop itself: the bodies sync may ask peers for.
    pub missing: BTreeSet<BlockId>,
    /// The sum of every feed's `bytes`.
    pub bytes: u64,
    /// The arrival number the next new feed gets.
    pub next_arrival: u64,
    /// Every feed by its arrival number.
    pub by_arrival: BTreeMap<u64, PublicKey>,
}

impl Index {
    /// An empty index; `ordered` keeps the canonical order index.
    pub(crate) fn new(ordered: bool) -> Self {
        Self {
            order: ordered.then(BTreeMap::new),
            ..Self::default()
        }
    }

    /// The ids of C in canonical order: from the order index when kept, else sorted now.
    pub(crate) fn in_order(&self) -> Vec<BlockId> {
        match &self.order {
            Some(order) => order.values().copied().collect(),
            None => {
                let mut keyed: Vec<(OrderKey, BlockId)> =
                    self.blocks.values().map(|b| (key_of(b), b.id())).collect();
                keyed.sort_unstable();
                keyed.into_iter().map(|(_, id)| id).collect()
            }
        }
    }

    /// The key of the last block of C in canonical order.
    pub(crate) fn last_key(&self) -> Option<OrderKey> {
        match &self.order {
            Some(order) => order.keys().next_back().copied(),
            None => self.blocks.values().map(|b| key_of(b)).max(),
        }
    }

    /// Whether inserting a block of `author` creates its feed (then [`Index::insert`] gives
    /// it the next arrival number).
    pub(crate) fn is_new_feed(&self, author: &PublicKey) -> bool {
        !self.feeds.contains_key(author)
    }

    pub(crate) fn insert(&mut self, block: Arc<Block>) {
        let (next, by_arrival) = (&mut self.next_arrival, &mut self.by_arrival);
        let feed = self.feeds.entry(block.author()).or_insert_with(|| {
            *next += 1;
            by_arrival.insert(*next - 1, block.author());
            FeedIndex {
                arrival: *next - 1,
                ..FeedIndex::default()
            }
        });
        debug_assert_eq!(feed.ids.len() as u64, block.seq());
        feed.ids.push(block.id());
        feed.last_time = block.time();
        feed.bytes += cost(&block);
        self.bytes += cost(&block);
        if let Some(order) = &mut self.order {
            order.insert(key_of(&block), block.id());
        }
        self.blocks.insert(block);
    }

    /// Freezes `author`'s feed at `seq`: removes the blocks at and above it and returns them.
    pub(crate) fn freeze(&mut self, author: &PublicKey, seq: u64) -> Vec<Arc<Block>> {
        let Some(feed) = self.feeds.get_mut(author) else {
            return Vec::new();
        };
        feed.frozen_at = Some(feed.frozen_at.map_or(seq, |f| f.min(seq)));
        let cut = usize::try_from(seq)
            .unwrap_or(usize::MAX)
            .min(feed.ids.len());
        let removed: Vec<BlockId> = feed.ids.drain(cut..).collect();
        let removed = self.remove_all(&removed);
        self.refresh_last_time(author);
        let freed: u64 = removed.iter().map(|b| cost(b)).sum();
        if let Some(feed) = self.feeds.get_mut(author) {
            feed.bytes = feed.bytes.saturating_sub(freed);
        }
        self.bytes = self.bytes.saturating_sub(freed);
        removed
    }

    /// Records the two blocks proving a fork in `author`'s feed (after [`Index::freeze`]) and
    /// counts them in the feed's bytes: proofs are stored, so they count against capacity.
    /// Returns the pair it replaces (a fork found lower in the feed supersedes one above it),
    /// which the caller deletes.
    pub(crate) fn set_proof(
        &mut self,
        author: &PublicKey,
        pair: (Arc<Block>, Arc<Block>),
    ) -> Option<(Arc<Block>, Arc<Block>)> {
        let feed = self.feeds.get_mut(author)?;
        feed.bytes += cost(&pair.0) + cost(&pair.1);
        self.bytes += cost(&pair.0) + cost(&pair.1);
        let old = feed.proof.replace(pair);
        if let Some((a, b)) = &old {
            feed.bytes = feed.bytes.saturating_sub(cost(a) + cost(b));
            self.bytes = self.bytes.saturating_sub(cost(a) + cost(b));
        }
        old
    }

    fn refresh_last_time(&mut self, author: &PublicKey) {
        if let Some(feed) = self.feeds.get_mut(author) {
            feed.last_time = feed
                .ids
                .last()
                .and_then(|id| self.blocks.get(id))
                .map_or(0, |b| b.time());
        }
    }

    /// Removes `author`'s feed whole (retention); returns its blocks and fork proof.
    pub(crate) fn evict(&mut self, author: &PublicKey) -> Vec<Arc<Block>> {
        let Some(feed) = self.feeds.remove(author) else {
            return Vec::new();
        };
        self.bytes = self.bytes.saturating_sub(feed.bytes);
        self.by_arrival.remove(&feed.arrival);
        let mut removed = self.remove_all(&feed.ids);
        if let Some((a, b)) = feed.proof {
            removed.extend([a, b]);
        }
        removed
    }

    /// Takes blocks out of the id map and the order (not out of their feed's id list).
    fn remove_all(&mut self, ids: &[BlockId]) -> Vec<Arc<Block>> {
        ids.iter()
            .filter_map(|id| {
                let block = self.blocks.remove(id)?;
                if let Some(order) = &mut self.order {
                    order.remove(&key_of(&block));
                }
                self.missing.remove(id);
                Some(block)
            })
            .collect()
    }

    /// Replaces a header-only block by its full copy.
    pub(crate) fn restore_body(&mut self, full: Arc<Block>) {
        let added = full.header().body_len as u64;
        if let Some(feed) = self.feeds.get_mut(&full.author()) {
            feed.bytes += added;
            self.bytes += added;
        }
        self.missing.remove(&full.id());
        self.blocks.insert(full);
    }

    /// Replaces a block by its pruned form (garbage collection).
    pub(crate) fn prune(&mut self, pruned: Arc<Block>) {
        let freed = pruned.header().body_len as u64;
        if let Some(feed) = self.feeds.get_mut(&pruned.author()) {
            let freed = freed.min(feed.bytes);
            feed.bytes -= freed;
            self.bytes = self.bytes.saturating_sub(freed);
        }
        self.blocks.insert(pruned);
    }

    /// Removes the newest block of a feed (used to undo a refused `create_block`).
    pub(crate) fn pop(&mut self, id: &BlockId) -> Option<Arc<Block>> {
        let block = self.blocks.remove(id)?;
        if let Some(order) = &mut self.order {
            order.remove(&key_of(&block));
        }
        self.missing.remove(id);
        if let Some(feed) = self.feeds.get_mut(&block.author()) {
            if feed.ids.last() == Some(id) {
                feed.ids.pop();
                feed.last_time = feed
                    .ids
                    .last()
                    .and_then(|id| self.blocks.get(id))
                    .map_or(0, |b| b.time());
                let freed = cost(&block).min(feed.bytes);
                feed.bytes -= freed;
                self.bytes = self.bytes.saturating_sub(freed);
            }
        }
        Some(block)
    }
}

impl FeedLookup for Index {
    fn block_at(&self, author: &PublicKey, seq: u64) -> Option<&Block> {
        let feed = self.feeds.get(author)?;
        let id = feed.ids.get(usize::try_from(seq).ok()?)?;
        self.blocks.get(id).map(|b| &**b)
    }
}
