//! Expiry garbage collection (DESIGN.md rule 8): timers set when a block enters, bodies
//! dropped and contributions re-folded when they fire.

use std::sync::Arc;

use super::index::key_of;
use super::{Error, Kernel, Outcome, Run};
use crate::block::{Block, BlockId};

/// What a garbage collection did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcReport {
    /// Blocks whose bodies were dropped (their headers stay, so the chains have no gap).
    pub collected: usize,
}

impl Kernel {
    /// Computes a block's expiry (the earliest any slice gives) and sets its timer; a block
    /// that expired before the last garbage collection enters already collected, so digests
    /// stay defined as of that collection.
    pub(super) fn schedule(&mut self, block: Arc<Block>, run: &mut Run) -> Arc<Block> {
        if block.body().is_none() {
            self.index.missing.insert(block.id());
            return block;
        }
        match self.expiry_of(&block) {
            Some(time) if time <= self.gc_time => {
                self.stats.collected += 1;
                Arc::new(block.pruned())
            }
            Some(time) => {
                self.expiry.insert((time, block.id()));
                run.timers.push((time, block.id()));
                block
            }
            None => block,
        }
    }

    /// Garbage collection at `now`: every block whose expiry is at or before `now` loses its
    /// body and its contribution; its header stays, so its feed has no gap and stays
    /// verifiable. The state is re-folded as DESIGN.md rule 7 says, and everything is committed
    /// in one batch: what was collected stays collected after a reopen. Returns once done, so a
    /// caller (or a test) waits for it by calling it.
    ///
    /// # Errors
    /// Only [`Error::Store`].
    pub fn gc(&mut self, now: u64) -> Result<GcReport, Error> {
        let mut run = Run::default();
        let due: Vec<(u64, BlockId)> = self
            .expiry
            .range(..=(now, BlockId([0xff; 32])))
            .copied()
            .collect();
        for timer in due {
            self.expiry.remove(&timer);
            run.timers_done.push(timer);
            let Some(block) = self.index.blocks.get(&timer.1) else {
                continue;
            };
            if block.body().is_none() {
                continue;
            }
            let pruned = Arc::new(block.pruned());
            run.touch(key_of(&pruned));
            self.index.prune(pruned.clone());
            run.pruned.push(pruned);
        }
        if now > self.gc_time {
            self.gc_time = now;
            run.gc_time = Some(now);
        }
        let collected = run.pruned.len();
        self.stats.collected += collected as u64;
        self.fold_run(&mut run);
        self.commit_run(run)?;
        Ok(GcReport { collected })
    }

    /// Whether `block` is a full copy of a block held only as a header that has not expired
    /// here: a peer may have sent the header alone (it collected the block, or it is lying),
    /// and the full copy brings the content back. A block this kernel collected itself expired
    /// by `gc_time`, so it stays collected.
    pub(super) fn restores_body(&self, block: &Block) -> bool {
        let Some(held) = self.index.blocks.get(&block.id()) else {
            return false;
        };
        if held.body().is_some() || block.body().is_none() {
            return false;
        }
        self.expiry_of(block).is_none_or(|t| t > self.gc_time)
    }

    /// Puts the body of `block` back into the held header and re-folds from it.
    pub(super) fn restore_body(&mut self, full: Arc<Block>, run: &mut Run) {
        let id = full.id();
        let author = full.author();
        if let Some(time) = self.expiry_of(&full) {
            self.expiry.insert((time, id));
            run.timers.push((time, id));
        }
        self.index.restore_body(full.clone());
        run.touch(key_of(&full));
        run.pruned.push(full);
        run.pending.push((run.report.outcomes.len(), author));
        run.outcome(id, Outcome::Accepted);
    }

    /// The earliest expiry any slice gives the block.
    pub(super) fn expiry_of(&self, block: &Block) -> Option<u64> {
        let parent = block.parent().and_then(|p| self.index.blocks.get(&p));
        let ctx = crate::slice::Context::new(block, parent.map(|p| &**p), &self.index);
        self.fold
            .slices
            .iter()
            .filter_map(|s| s.expires_at(&ctx))
            .min()
    }

    /// Blocks held without their body that arrived that way (this kernel did not collect them
    /// itself), at most `max`, lowest ids first: what sync asks peers for, so a body one peer
    /// dropped or withheld is fetched from another. A full copy restores the body unless the
    /// block expired here. Kept in memory only: after a reopen nothing is asked.
    pub fn missing_bodies(&self, max: usize) -> Vec<BlockId> {
        self.index.missing.iter().take(max).copied().collect()
    }

    /// [`Kernel::missing_bodies`] in id order from just after `after`, wrapping around to the
    /// lowest id: a scan that resumes where the last one stopped sees every id in turn.
    pub fn missing_bodies_after(&self, after: Option<&BlockId>, max: usize) -> Vec<BlockId> {
        use std::ops::Bound;
        let Some(after) = after else {
            return self.missing_bodies(max);
        };
        let missing = &self.index.missing;
        missing
            .range((Bound::Excluded(*after), Bound::Unbounded))
            .chain(missing.range(..=*after))
            .take(max)
            .copied()
            .collect()
    }

    /// When the next block expires, for drivers that schedule [`Kernel::gc`].
    pub fn next_expiry(&self) -> Option<u64> {
        self.expiry.first().map(|(t, _)| *t)
    }

    /// The time of the last garbage collection (0 if none ran).
    pub fn gc_time(&self) -> u64 {
        self.gc_time
    }
}
