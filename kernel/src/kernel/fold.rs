//! Folding the candidate set into slice states.
//!
//! Order-sensitive kernels fold C in canonical order. A block that sorts after everything
//! folded so far is applied at once; one that sorts earlier rewinds to the last checkpoint
//! before it and replays the rest. A block before the oldest checkpoint forces a full re-fold,
//! which is counted, never refused. When every slice is commutative, blocks are applied as they
//! arrive. A removal in a commutative kernel rewinds to the last checkpoint taken *in arrival
//! order* before the earliest-arrived removed block and replays what arrived after it: any order
//! that keeps each feed in seq order gives the same state, and arrival order does. So removing
//! blocks that arrived recently (a peer's blocks evicted or expired soon after they came) costs
//! the blocks that arrived after them, not the whole store; only a removal older than the
//! oldest checkpoint re-folds everything (counted in `full_refolds`).

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use super::index::{Index, OrderKey};
use crate::block::{BlockId, IdMap};
use crate::slice::{AnySlice, Context, Verdict};

/// Where a block of C stands after the last fold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Accepted by a slice, rejected by none, parent counted: reduced into the state.
    Counted,
    /// No slice wants it.
    Ignored,
    /// A slice rejects it in the state it was judged against. It stays in C and links its
    /// feed: the blocks after it are judged on their own.
    Rejected { slice: usize, reason: Arc<str> },
    /// Garbage-collected: the body is gone and it contributes nothing, but the chain runs
    /// through it, so its children may count.
    Collected,
}

/// What the fold keeps per block of C, in one map: its status after the last fold and, in
/// commutative mode, its arrival position. One map, not two: at 100,000 blocks a map costs
/// about 55 bytes per block, and a simulated swarm holds one per peer.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    status: Option<Status>,
    position: u64,
}

/// [`Entry::position`] of a block that has none (order-sensitive mode, or not arrived yet).
const NO_POSITION: u64 = u64::MAX;

impl Entry {
    const EMPTY: Entry = Entry {
        status: None,
        position: NO_POSITION,
    };

    fn position(&self) -> Option<u64> {
        (self.position != NO_POSITION).then_some(self.position)
    }
}

struct Checkpoint {
    key: OrderKey,
    states: Vec<Box<dyn Any + Send + Sync>>,
}

pub(crate) struct Fold {
    pub slices: Vec<Box<dyn AnySlice>>,
    pub commutative: bool,
    entries: IdMap<Entry>,
    folded: Option<OrderKey>,
    checkpoints: VecDeque<Checkpoint>,
    since_checkpoint: usize,
    interval: usize,
    max_checkpoints: usize,
    accepts: Vec<usize>,
    /// Commutative mode: C in the order it was applied, by arrival position (each block's
    /// position is in its [`Entry`]).
    arrivals: BTreeMap<u64, BlockId>,
    next_position: u64,
    /// Commutative mode: states after the block at each position.
    arrival_checkpoints: VecDeque<(u64, Vec<Box<dyn Any + Send + Sync>>)>,
    since_arrival_checkpoint: usize,
    /// Blocks that became counted during the current dispatch.
    pub newly_counted: Vec<BlockId>,
    pub full_refolds: u64,
    pub evaluations: u64,
    pub reductions: u64,
}

impl Fold {
    pub(crate) fn new(slices: Vec<Box<dyn AnySlice>>, interval: usize, max: usize) -> Self {
        let commutative = slices.iter().all(|s| s.commutative());
        Self {
            slices,
            commutative,
            entries: IdMap::default(),
            folded: None,
            checkpoints: VecDeque::new(),
            since_checkpoint: 0,
            interval: interval.max(1),
            max_checkpoints: max.max(1),
            accepts: Vec::new(),
            arrivals: BTreeMap::new(),
            next_position: 0,
            arrival_checkpoints: VecDeque::new(),
            since_arrival_checkpoint: 0,
            newly_counted: Vec::new(),
            full_refolds: 0,
            evaluations: 0,
            reductions: 0,
        }
    }

    pub(crate) fn counts(&self, id: &BlockId) -> bool {
        matches!(self.status(id), Some(Status::Counted))
    }

    /// Where a block of C stands after the last fold.
    pub(crate) fn status(&self, id: &BlockId) -> Option<&Status> {
        self.entries.get(id).and_then(|e| e.status.as_ref())
    }

    /// Every block's status, in no particular order.
    pub(crate) fn statuses(&self) -> impl Iterator<Item = (&BlockId, &Status)> {
        self.entries
            .iter()
            .filter_map(|(id, e)| e.status.as_ref().map(|s| (id, s)))
    }

    /// Forgets the status of a block taken out of C. Its arrival position stays until the
    /// next [`Fold::update`] has rewound past it.
    pub(crate) fn forget_status(&mut self, id: &BlockId) {
        if let Some(entry) = self.entries.get_mut(id) {
            entry.status = None;
            if entry.position == NO_POSITION {
                self.entries.remove(id);
            }
        }
    }

    /// Judges one block against the current states and reduces it if it counts.
    pub(crate) fn evaluate(&mut self, index: &Index, id: &BlockId) {
        let Some(block) = index.blocks.get(id) else {
            return;
        };
        self.evaluations += 1;
        // Every block of C links its feed (its parent is in C), whatever the parent's verdict:
        // one rejected block does not silence the rest of its feed.
        let status = if block.body().is_none() {
            Status::Collected
        } else {
            let parent = block.parent().and_then(|p| index.blocks.get(&p));
            let ctx = Context::new(block, parent.map(|p| &**p), index);
            self.accepts.clear();
            let mut rejected = None;
            for (i, slice) in self.slices.iter().enumerate() {
                match slice.filter(&ctx) {
                    Verdict::Accept => self.accepts.push(i),
                    Verdict::Ignore => {}
                    Verdict::Reject(reason) => {
                        rejected = Some(Status::Rejected {
                            slice: i,
                            reason: reason.into(),
                        });
                        break;
                    }
                }
            }
            match rejected {
                Some(status) => status,
                None if self.accepts.is_empty() => Status::Ignored,
                None => {
                    for &i in &self.accepts {
                        self.slices[i].reduce(&ctx);
                    }
                    self.reductions += 1;
                    Status::Counted
                }
            }
        };
        let counted = status == Status::Counted;
        let entry = self.entries.entry(*id).or_insert(Entry::EMPTY);
        let before = entry.status.replace(status);
        if counted && before != Some(Status::Counted) {
            self.newly_counted.push(*id);
        }
    }

    /// Folds in blocks just inserted into C (`inserted`, in arrival order) and accounts for
    /// removals and rewritten blocks (`changed`: removed, collected, restored), of which
    /// `earliest` sorts first.
    pub(crate) fn update(
        &mut self,
        index: &Index,
        inserted: &[BlockId],
        earliest: Option<OrderKey>,
        changed: &[BlockId],
    ) {
        if self.commutative {
            if !changed.is_empty() {
                self.rewind(index, changed);
            }
            for id in inserted {
                // A block inserted and removed again in the same run (evicted, cut by a fork)
                // never arrives: it would leave a stale entry that a later rewind replays.
                if index.blocks.contains_key(id) {
                    self.arrive(index, *id);
                }
            }
            return;
        }
        if let Some(key) = earliest {
            self.refold_from(index, key);
        }
    }

    /// Continues from restored states and statuses (a persisted snapshot) as if everything in
    /// `index` had been folded.
    pub(crate) fn resume(&mut self, index: &Index, status: IdMap<Status>) {
        self.entries = status
            .into_iter()
            .map(|(id, status)| {
                let entry = Entry {
                    status: Some(status),
                    position: NO_POSITION,
                };
                (id, entry)
            })
            .collect();
        self.checkpoints.clear();
        self.since_checkpoint = 0;
        self.folded = index.last_key();
        self.newly_counted.clear();
        if self.commutative {
            // Arrival order after a restore: canonical order, with no checkpoint yet.
            self.clear_arrivals();
            for id in index.in_order() {
                let position = self.next_position;
                self.next_position += 1;
                self.arrivals.insert(position, id);
                self.entries.entry(id).or_insert(Entry::EMPTY).position = position;
            }
        }
    }

    /// Whether placing a block at `key` would re-fold everything: an order-sensitive fold,
    /// and the key sorts before every checkpoint it keeps (but not after all it folded).
    pub(crate) fn would_refold_all(&self, key: OrderKey) -> bool {
        if self.commutative || self.folded.is_none_or(|f| key > f) {
            return false;
        }
        self.checkpoints.front().is_none_or(|c| c.key >= key)
    }

    /// Re-folds everything from scratch, in canonical order.
    pub(crate) fn refold_all(&mut self, index: &Index) {
        self.full_refolds += 1;
        for slice in &mut self.slices {
            slice.reset();
        }
        self.checkpoints.clear();
        self.since_checkpoint = 0;
        self.folded = None;
        if self.commutative {
            self.clear_arrivals();
            for id in index.in_order() {
                self.arrive(index, id);
            }
            return;
        }
        self.apply_after(index, None);
    }

    /// Forgets a block taken back out of C without a re-fold (a refused `create_block`, which
    /// contributed nothing).
    pub(crate) fn forget(&mut self, id: &BlockId) {
        if let Some(position) = self.entries.remove(id).and_then(|e| e.position()) {
            self.arrivals.remove(&position);
        }
    }

    fn clear_arrivals(&mut self) {
        self.arrivals.clear();
        self.entries.retain(|_, e| {
            e.position = NO_POSITION;
            e.status.is_some()
        });
        self.arrival_checkpoints.clear();
        self.since_arrival_checkpoint = 0;
    }

    /// Commutative mode: applies a block that just entered C, at the end of the arrival order.
    fn arrive(&mut self, index: &Index, id: BlockId) {
        let position = self.next_position;
        self.next_position += 1;
        let entry = self.entries.entry(id).or_insert(Entry::EMPTY);
        if let Some(old) = entry.position() {
            self.arrivals.remove(&old);
        }
        entry.position = position;
        self.arrivals.insert(position, id);
        self.evaluate(index, &id);
        self.after_arrival(position);
    }

    fn after_arrival(&mut self, position: u64) {
        self.since_arrival_checkpoint += 1;
        if self.since_arrival_checkpoint >= self.interval {
            self.since_arrival_checkpoint = 0;
            let states = self.slices.iter().map(|s| s.snapshot()).collect();
            self.arrival_checkpoints.push_back((position, states));
            if self.arrival_checkpoints.len() > self.max_checkpoints {
                self.arrival_checkpoints.pop_front();
            }
        }
    }

    /// Commutative mode: undoes the blocks from the earliest-arrived changed one on, by
    /// restoring the checkpoint before it and replaying the later arrivals that are still in
    /// C (as they are now: a collected block replays as collected).
    fn rewind(&mut self, index: &Index, changed: &[BlockId]) {
        let Some(earliest) = changed
            .iter()
            .filter_map(|id| self.entries.get(id).and_then(Entry::position))
            .min()
        else {
            return;
        };
        while self
            .arrival_checkpoints
            .back()
            .is_some_and(|(p, _)| *p >= earliest)
        {
            self.arrival_checkpoints.pop_back();
        }
        let start = match self.arrival_checkpoints.back() {
            Some((position, states)) => {
                for (slice, state) in self.slices.iter_mut().zip(states) {
                    slice.restore(state.as_ref());
                }
                Some(*position)
            }
            None => {
                self.full_refolds += 1;
                for slice in &mut self.slices {
                    slice.reset();
                }
                None
            }
        };
        self.since_arrival_checkpoint = 0;
        let lower = start.map_or(Bound::Unbounded, Bound::Excluded);
        let replay: Vec<(u64, BlockId)> = self
            .arrivals
            .range((lower, Bound::Unbounded))
            .map(|(p, id)| (*p, *id))
            .collect();
        for (position, id) in replay {
            if self.entries.get(&id).and_then(Entry::position) != Some(position) {
                self.arrivals.remove(&position); // a stale entry: the block arrived again later
                continue;
            }
            if !index.blocks.contains_key(&id) {
                self.arrivals.remove(&position);
                self.entries.remove(&id);
                continue;
            }
            self.evaluate(index, &id);
            self.after_arrival(position);
        }
    }

    fn refold_from(&mut self, index: &Index, key: OrderKey) {
        if self.folded.is_none_or(|f| key > f) {
            let start = self.folded;
            self.apply_after(index, start);
            return;
        }
        while self.checkpoints.back().is_some_and(|c| c.key >= key) {
            self.checkpoints.pop_back();
        }
        match self.checkpoints.back() {
            Some(checkpoint) => {
                for (slice, state) in self.slices.iter_mut().zip(&checkpoint.states) {
                    slice.restore(state.as_ref());
                }
                let start = Some(checkpoint.key);
                self.since_checkpoint = 0;
                self.folded = start;
                self.apply_after(index, start);
            }
            None => self.refold_all(index),
        }
    }

    /// Applies every block of C after `start`, in order, taking checkpoints on the way.
    fn apply_after(&mut self, index: &Index, start: Option<OrderKey>) {
        let lower = start.map_or(Bound::Unbounded, Bound::Excluded);
        let Some(order) = &index.order else {
            debug_assert!(false, "an order-sensitive fold keeps the order index");
            return;
        };
        for (key, id) in order.range((lower, Bound::Unbounded)) {
            self.evaluate(index, id);
            self.folded = Some(*key);
            if self.commutative {
                continue;
            }
            self.since_checkpoint += 1;
            if self.since_checkpoint >= self.interval {
                self.since_checkpoint = 0;
                self.checkpoints.push_back(Checkpoint {
                    key: *key,
                    states: self.slices.iter().map(|s| s.snapshot()).collect(),
                });
                if self.checkpoints.len() > self.max_checkpoints {
                    self.checkpoints.pop_front();
                }
            }
        }
    }
}
