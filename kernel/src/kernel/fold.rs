//! Folding the candidate set into slice states.
//!
//! Order-sensitive kernels fold C in canonical order. A block that sorts after everything
//! folded so far is applied at once; one that sorts earlier rewinds to the last checkpoint
//! before it and replays the rest. A block before the oldest checkpoint forces a full re-fold,
//! which is counted, never refused. When every slice is commutative, blocks are applied as they
//! arrive and only removals re-fold.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use super::index::{Index, OrderKey};
use crate::block::BlockId;
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

struct Checkpoint {
    key: OrderKey,
    states: Vec<Box<dyn Any + Send + Sync>>,
}

pub(crate) struct Fold {
    pub slices: Vec<Box<dyn AnySlice>>,
    pub commutative: bool,
    pub status: HashMap<BlockId, Status>,
    folded: Option<OrderKey>,
    checkpoints: VecDeque<Checkpoint>,
    since_checkpoint: usize,
    interval: usize,
    max_checkpoints: usize,
    accepts: Vec<usize>,
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
            status: HashMap::new(),
            folded: None,
            checkpoints: VecDeque::new(),
            since_checkpoint: 0,
            interval: interval.max(1),
            max_checkpoints: max.max(1),
            accepts: Vec::new(),
            newly_counted: Vec::new(),
            full_refolds: 0,
            evaluations: 0,
            reductions: 0,
        }
    }

    pub(crate) fn counts(&self, id: &BlockId) -> bool {
        matches!(self.status.get(id), Some(Status::Counted))
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
        let before = self.status.insert(*id, status);
        if counted && before != Some(Status::Counted) {
            self.newly_counted.push(*id);
        }
    }

    /// Folds in blocks just inserted into C (`inserted`, in arrival order) and accounts for
    /// removals, of which `earliest_removed` sorts first.
    pub(crate) fn update(
        &mut self,
        index: &Index,
        inserted: &[BlockId],
        earliest: Option<OrderKey>,
        removed: bool,
    ) {
        if self.commutative {
            if removed {
                self.refold_all(index);
            } else {
                for id in inserted {
                    self.evaluate(index, id);
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
    pub(crate) fn resume(&mut self, index: &Index, status: HashMap<BlockId, Status>) {
        self.status = status;
        self.checkpoints.clear();
        self.since_checkpoint = 0;
        self.folded = index.order.keys().next_back().copied();
        self.newly_counted.clear();
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
        self.apply_after(index, None);
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
        for (key, id) in index.order.range((lower, Bound::Unbounded)) {
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
