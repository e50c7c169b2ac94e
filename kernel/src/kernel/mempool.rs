//! Blocks that cannot enter the candidate set yet: orphans (parent unknown) and blocks dated
//! in the future. Bounded by count and bytes; the oldest arrival is evicted first.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use super::report::Source;
use crate::block::{Block, BlockId, IdMap};

/// Rough per-block cost beyond the body, for the byte bound.
const BLOCK_OVERHEAD: usize = 192;

/// The release time of deferred blocks: never by the clock, only by the next poll.
const DEFERRED: u64 = u64::MAX;

struct Pooled {
    block: Arc<Block>,
    held_until: Option<u64>,
    /// Who offered it, so a fault found when it is finally placed is blamed on its sender,
    /// not on whoever sent the block that released it.
    source: Option<Source>,
}

/// A block leaving the mempool, with who offered it.
pub(crate) type Released = (Arc<Block>, Option<Source>);

pub(crate) struct Mempool {
    blocks: IdMap<Pooled>,
    children: IdMap<Vec<BlockId>>,
    due: BTreeSet<(u64, BlockId)>,
    arrivals: VecDeque<BlockId>,
    bytes: usize,
    max_blocks: usize,
    max_bytes: usize,
    pub(crate) evicted: u64,
}

fn cost(block: &Block) -> usize {
    block.header().body_len as usize + BLOCK_OVERHEAD
}

impl Mempool {
    pub(crate) fn new(max_blocks: usize, max_bytes: usize) -> Self {
        Self {
            blocks: IdMap::default(),
            children: IdMap::default(),
            due: BTreeSet::new(),
            arrivals: VecDeque::new(),
            bytes: 0,
            max_blocks,
            max_bytes,
            evicted: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.blocks.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn contains(&self, id: &BlockId) -> bool {
        self.blocks.contains_key(id)
    }

    /// The waiting copy of a block, if any.
    pub(crate) fn get(&self, id: &BlockId) -> Option<&Arc<Block>> {
        self.blocks.get(id).map(|p| &p.block)
    }

    /// Adds a block whose parent is missing. A block without a parent is never an orphan;
    /// such a call is ignored.
    pub(crate) fn add_orphan(&mut self, block: Arc<Block>, source: Option<Source>) {
        let Some(parent) = block.parent() else {
            return;
        };
        self.children.entry(parent).or_default().push(block.id());
        self.insert(block, None, source);
    }

    /// Adds a block dated after `until - skew`, to be released at `until`.
    pub(crate) fn hold(&mut self, block: Arc<Block>, until: u64, source: Option<Source>) {
        self.due.insert((until, block.id()));
        self.insert(block, Some(until), source);
    }

    /// Replaces a waiting header-only copy by a full copy of the same block, so the body is
    /// not lost when the block is placed. Returns the waiting copy's release time (`Some(None)`
    /// for an orphan), or `None` if no header-only copy of it waits.
    pub(crate) fn restore_body(&mut self, full: &Arc<Block>) -> Option<Option<u64>> {
        let pooled = self.blocks.get_mut(&full.id())?;
        if pooled.block.body().is_some() || full.body().is_none() {
            return None;
        }
        self.bytes -= cost(&pooled.block);
        pooled.block = full.clone();
        self.bytes += cost(full);
        Some(pooled.held_until)
    }

    fn insert(&mut self, block: Arc<Block>, held_until: Option<u64>, source: Option<Source>) {
        let id = block.id();
        self.bytes += cost(&block);
        self.blocks.insert(
            id,
            Pooled {
                block,
                held_until,
                source,
            },
        );
        self.arrivals.push_back(id);
        while self.blocks.len() > self.max_blocks || self.bytes > self.max_bytes {
            let Some(oldest) = self.arrivals.pop_front() else {
                break;
            };
            if self.remove(&oldest).is_some() {
                self.evicted += 1;
            }
        }
        // Ids taken out by stitching stay in `arrivals` until popped; keep it proportional.
        if self.arrivals.len() > 2 * self.blocks.len() + 64 {
            let blocks = &self.blocks;
            self.arrivals.retain(|id| blocks.contains_key(id));
        }
    }

    fn remove(&mut self, id: &BlockId) -> Option<Released> {
        let pooled = self.blocks.remove(id)?;
        self.bytes -= cost(&pooled.block);
        match pooled.held_until {
            Some(until) => {
                self.due.remove(&(until, *id));
            }
            None => {
                if let Some(parent) = pooled.block.parent() {
                    if let Some(siblings) = self.children.get_mut(&parent) {
                        siblings.retain(|c| c != id);
                        if siblings.is_empty() {
                            self.children.remove(&parent);
                        }
                    }
                }
            }
        }
        Some((pooled.block, pooled.source))
    }

    /// Takes the orphans waiting for `parent`.
    pub(crate) fn take_children(&mut self, parent: &BlockId) -> Vec<Released> {
        let Some(ids) = self.children.remove(parent) else {
            return Vec::new();
        };
        ids.iter()
            .filter_map(|id| {
                let pooled = self.blocks.remove(id)?;
                self.bytes -= cost(&pooled.block);
                Some((pooled.block, pooled.source))
            })
            .collect()
    }

    /// Takes the held blocks whose release time is at or before `now`.
    pub(crate) fn take_due(&mut self, now: u64) -> Vec<Released> {
        let due: Vec<(u64, BlockId)> = self
            .due
            .range(..=(now, BlockId([0xff; 32])))
            .copied()
            .collect();
        due.iter().filter_map(|(_, id)| self.remove(id)).collect()
    }

    /// Adds a block deferred to the next poll (see [`super::Outcome::Deferred`]).
    pub(crate) fn defer(&mut self, block: Arc<Block>, source: Option<Source>) {
        self.hold(block, DEFERRED, source);
    }

    /// Takes every deferred block out, in id order.
    pub(crate) fn take_deferred(&mut self) -> Vec<Released> {
        let deferred: Vec<BlockId> = self
            .due
            .range((DEFERRED, BlockId([0; 32]))..)
            .map(|(_, id)| *id)
            .collect();
        deferred.iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Whether any block waits for the next poll.
    pub(crate) fn has_deferred(&self) -> bool {
        self.due.last().is_some_and(|(t, _)| *t == DEFERRED)
    }

    /// When the next held block is due (deferred blocks are not held by time).
    pub(crate) fn next_due(&self) -> Option<u64> {
        self.due.first().map(|(t, _)| *t).filter(|t| *t != DEFERRED)
    }
}

/// Fingerprints of blocks found invalid, so a resend costs one lookup. Bounded, oldest first out.
pub(crate) struct InvalidCache {
    known: foldhash::HashMap<[u8; 32], crate::block::BlockError>,
    order: VecDeque<[u8; 32]>,
    max: usize,
}

impl InvalidCache {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            known: foldhash::HashMap::default(),
            order: VecDeque::new(),
            max,
        }
    }

    pub(crate) fn get(&self, fingerprint: &[u8; 32]) -> Option<&crate::block::BlockError> {
        self.known.get(fingerprint)
    }

    pub(crate) fn insert(&mut self, fingerprint: [u8; 32], error: crate::block::BlockError) {
        if self.max == 0 || self.known.insert(fingerprint, error).is_some() {
            return;
        }
        self.order.push_back(fingerprint);
        while self.order.len() > self.max {
            if let Some(old) = self.order.pop_front() {
                self.known.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn chain(n: usize) -> Vec<Arc<Block>> {
        let identity = Identity::from_secret([3; 32]);
        let mut feed = crate::Feed::new();
        for i in 0..n {
            feed.append(&identity, vec![i as u8], 1000 + i as u64);
        }
        feed.into_blocks().into_iter().map(Arc::new).collect()
    }

    #[test]
    fn evicts_oldest_arrival_when_over_count() {
        let blocks = chain(6);
        let mut pool = Mempool::new(3, usize::MAX);
        for block in &blocks[1..] {
            pool.add_orphan(block.clone(), None);
        }
        assert_eq!(pool.len(), 3);
        assert_eq!(pool.evicted, 2);
        assert!(!pool.contains(&blocks[1].id()) && !pool.contains(&blocks[2].id()));
        assert!(pool.contains(&blocks[5].id()));
    }

    #[test]
    fn evicts_when_over_bytes() {
        let blocks = chain(5);
        let mut pool = Mempool::new(usize::MAX, 2 * (BLOCK_OVERHEAD + 1));
        for block in &blocks[1..] {
            pool.add_orphan(block.clone(), None);
        }
        assert_eq!(pool.len(), 2);
        assert!(pool.bytes() <= 2 * (BLOCK_OVERHEAD + 1));
    }

    #[test]
    fn takes_children_and_due_blocks() {
        let blocks = chain(3);
        let mut pool = Mempool::new(16, usize::MAX);
        pool.add_orphan(blocks[1].clone(), Some(Source(1)));
        pool.hold(blocks[2].clone(), 5_000, Some(Source(2)));
        assert_eq!(pool.next_due(), Some(5_000));
        let children = pool.take_children(&blocks[0].id());
        assert_eq!(children, vec![(blocks[1].clone(), Some(Source(1)))]);
        assert!(pool.take_due(4_999).is_empty());
        assert_eq!(
            pool.take_due(5_000),
            vec![(blocks[2].clone(), Some(Source(2)))]
        );
        assert_eq!((pool.len(), pool.bytes()), (0, 0));
    }
}
