//! Capacity-bounded retention: over the byte budget, the lowest-ranked feeds of other authors
//! are evicted whole and tombstoned (see [`crate::retention`]).

use super::index::{key_of, FeedIndex};
use super::{Kernel, Run};
use crate::identity::PublicKey;
use crate::retention::FeedSummary;

impl Kernel {
    /// Over the byte budget, evicts the lowest-ranked feeds of other authors, whole, and
    /// tombstones them.
    pub(super) fn enforce_capacity(&mut self, run: &mut Run) {
        let Some(capacity) = self.config.capacity_bytes else {
            return;
        };
        let own = self.author();
        let mut other: u64 = self
            .index
            .feeds
            .iter()
            .filter(|(a, _)| **a != own)
            .map(|(_, f)| f.bytes)
            .sum();
        if other <= capacity {
            return;
        }
        let mut feeds: Vec<FeedSummary> = self
            .index
            .feeds
            .iter()
            .filter(|(a, _)| **a != own)
            .filter_map(|(author, feed)| self.summary(author, feed))
            .collect();
        feeds.sort_by(|a, b| self.retention.rank(a, b));
        let now = self.clock.now();
        let until = now.saturating_add(self.config.tombstone_ttl_ms);
        while other > capacity {
            let Some(victim) = feeds.pop() else {
                break;
            };
            other = other.saturating_sub(victim.bytes);
            let removed = self.index.evict(&victim.author);
            self.stats.evicted_feeds += 1;
            self.stats.evicted_blocks += removed.len() as u64;
            for block in removed {
                self.fold.status.remove(&block.id());
                run.touch(key_of(&block));
                run.removed.push(block);
            }
            self.tombstone(victim.author, until, run);
        }
    }

    /// What the ranking sees of a feed. A feed frozen at genesis holds no block of C, only
    /// its fork proof; it is summarised from the proof, so it can still be evicted.
    fn summary(&self, author: &PublicKey, feed: &FeedIndex) -> Option<FeedSummary> {
        let proof = feed.proof.as_ref().map(|(a, b)| (a.clone(), b.clone()));
        let first = feed
            .ids
            .first()
            .and_then(|id| self.index.blocks.get(id).cloned())
            .or_else(|| proof.as_ref().map(|(a, _)| a.clone()))?;
        let last = feed
            .ids
            .last()
            .and_then(|id| self.index.blocks.get(id).cloned())
            .or_else(|| proof.as_ref().map(|(_, b)| b.clone()))?;
        Some(FeedSummary {
            author: *author,
            blocks: feed.ids.len() as u64,
            bytes: feed.bytes,
            genesis_time: first.time(),
            last_time: last.time(),
        })
    }

    fn tombstone(&mut self, author: PublicKey, until: u64, run: &mut Run) {
        let now = self.clock.now();
        // Expired tombstones go first; then, if still full, the one expiring soonest.
        let expired: Vec<PublicKey> = self
            .tombstones
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(a, _)| *a)
            .collect();
        for gone in expired {
            self.tombstones.remove(&gone);
            run.tombstones.push((gone, None));
        }
        while self.tombstones.len() >= self.config.max_tombstones.max(1) {
            let Some(soonest) = self
                .tombstones
                .iter()
                .min_by_key(|(a, t)| (**t, **a))
                .map(|(a, _)| *a)
            else {
                break;
            };
            self.tombstones.remove(&soonest);
            run.tombstones.push((soonest, None));
        }
        self.tombstones.insert(author, until);
        run.tombstones.push((author, Some(until)));
    }

    /// Whether `author`'s feed is refused for now (evicted recently).
    pub fn is_tombstoned(&self, author: &PublicKey) -> bool {
        self.tombstones
            .get(author)
            .is_some_and(|&until| until > self.clock.now())
    }
}
