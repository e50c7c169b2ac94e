//! Capacity-bounded retention: blocks are ranked before they are admitted, and over the byte
//! budget the lowest-ranked feeds of other authors are evicted whole and tombstoned (see
//! [`crate::retention`]). Followed authors are kept here too.

use std::cmp::Ordering;

use super::index::{cost, key_of, FeedIndex, BLOCK_OVERHEAD};
use super::{Error, Kernel, Run};
use crate::block::Block;
use crate::identity::PublicKey;
use crate::retention::FeedSummary;

/// The most authors a kernel follows.
pub const MAX_FOLLOWS: usize = 65_536;

/// The most feeds remembered as refused for capacity (only verified blocks are remembered;
/// past the bound a refusal is not, and sync may ask for that feed again).
const MAX_CAPACITY_REFUSALS: usize = 65_536;

/// Where a feed stands in retention; see [`Kernel::retention`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Standing {
    /// The kernel's own feed: never evicted, not counted against capacity.
    Own,
    /// Held, ranked among the feeds capacity bounds.
    Kept,
    /// Held, frozen by a fork at this height (it keeps its blocks below and the proof).
    Frozen {
        /// The height of the fork.
        at: u64,
    },
    /// Evicted for capacity; its blocks are refused until the tombstone ends.
    Evicted {
        /// When the tombstone ends (ms since the Unix epoch).
        until: u64,
    },
}

/// One feed as retention sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedStanding {
    /// The feed's author.
    pub author: PublicKey,
    /// Blocks held (0 for an evicted feed).
    pub length: u64,
    /// Bytes held, as counted for capacity (0 for an evicted feed).
    pub bytes: u64,
    /// Position in the ranking, 0 first: own feeds, then the held feeds in the order they are
    /// kept. `None` for an evicted feed.
    pub rank: Option<u64>,
    /// The arrival number (the order this kernel first stored the feed); `None` for an
    /// evicted feed.
    pub arrival: Option<u64>,
    /// Whether the user follows the author.
    pub followed: bool,
    /// Own, kept, frozen or evicted.
    pub standing: Standing,
}

impl Kernel {
    /// Bytes of other authors' feeds held now: what the capacity budget bounds.
    pub(super) fn other_bytes(&self) -> u64 {
        let own = self.index.feeds.get(&self.author()).map_or(0, |f| f.bytes);
        self.index.bytes.saturating_sub(own)
    }

    /// Whether admitting `block` would leave its own feed among those evicted to make room:
    /// even with every feed that ranks below it gone, the store would be over capacity. Such
    /// a block is refused and nothing is evicted for it. Own blocks always have room.
    ///
    /// Under an arrival-order ranking ([`crate::Retention::by_arrival`]) the walk visits only
    /// the feeds that would go, most junior first, and stops once they free enough; an
    /// unfollowed newcomer is refused at once. Other rankings compare with every feed held.
    pub(super) fn no_room_for(&self, block: &Block) -> bool {
        let Some(capacity) = self.config.capacity_bytes else {
            return false;
        };
        let author = block.author();
        if author == self.author() {
            return false;
        }
        let total = self.other_bytes().saturating_add(cost(block));
        if total <= capacity {
            return false;
        }
        let need = total - capacity;
        let held = self.index.feeds.get(&author);
        let followed = self.follows.contains(&author);
        if held.is_none() && !followed && self.retention.newcomers_rank_last() {
            return true;
        }
        if self.retention.by_arrival() {
            let mut freed = 0u64;
            for victim in self.eviction_order() {
                // The walk reached the candidate's place: every feed after it ranks above.
                if victim == author
                    || (held.is_none() && followed && self.follows.contains(&victim))
                {
                    return true;
                }
                freed += self.index.feeds.get(&victim).map_or(0, |f| f.bytes);
                if freed >= need {
                    return false;
                }
            }
            return true;
        }
        let mut candidate =
            held.and_then(|feed| self.summary(&author, feed))
                .unwrap_or(FeedSummary {
                    author,
                    blocks: 0,
                    bytes: 0,
                    genesis_time: block.time(),
                    last_time: block.time(),
                    arrival: self.index.next_arrival,
                    followed,
                });
        candidate.blocks += 1;
        candidate.bytes += cost(block);
        candidate.last_time = block.time();
        let own = self.author();
        let below: u64 = self
            .index
            .feeds
            .iter()
            .filter(|(a, _)| **a != own && **a != author)
            .filter_map(|(a, feed)| self.summary(a, feed))
            .filter(|feed| self.retention.rank(feed, &candidate) == Ordering::Greater)
            .map(|feed| feed.bytes)
            .sum();
        below < need
    }

    /// Other authors' feeds in the order they would go, first to go first. Under an
    /// arrival-order ranking this is a walk of the arrival index (unfollowed feeds, most
    /// junior first, then followed ones), lazy; otherwise every feed is ranked.
    fn eviction_order(&self) -> Box<dyn Iterator<Item = PublicKey> + '_> {
        let own = self.author();
        if self.retention.by_arrival() {
            let junior_first = || self.index.by_arrival.values().rev().copied();
            let unfollowed = junior_first().filter(move |a| *a != own && !self.follows.contains(a));
            let followed = junior_first().filter(move |a| *a != own && self.follows.contains(a));
            return Box::new(unfollowed.chain(followed));
        }
        let mut feeds: Vec<FeedSummary> = self
            .index
            .feeds
            .iter()
            .filter(|(a, _)| **a != own)
            .filter_map(|(author, feed)| self.summary(author, feed))
            .collect();
        feeds.sort_by(|a, b| self.retention.rank(b, a));
        Box::new(feeds.into_iter().map(|f| f.author))
    }

    /// Counts a block refused for capacity and remembers its feed, with the bytes held now.
    pub(super) fn refused_for_capacity(&mut self, author: PublicKey) {
        self.stats.over_capacity += 1;
        let held = self.other_bytes();
        // Past the bound a refusal is not remembered (sync may ask for that feed again); the
        // ones remembered are never wiped wholesale.
        if self.capacity_refusals.len() < MAX_CAPACITY_REFUSALS
            || self.capacity_refusals.contains_key(&author)
        {
            self.capacity_refusals.insert(author, held);
        }
    }

    /// Whether blocks of `author`'s feed are refused now, so sync need not ask for them: the
    /// feed is tombstoned; or a block of it was refused for capacity and the store holds no
    /// less than it did then (a feed held in part whose next block has no room, or a
    /// newcomer's); or it is one this kernel does not hold, by an author the user does not
    /// follow, and the store is too full for a new feed that the ranking puts last.
    pub fn refuses_feed(&self, author: &PublicKey) -> bool {
        if self.is_tombstoned(author) {
            return true;
        }
        if self
            .capacity_refusals
            .get(author)
            .is_some_and(|&held| self.other_bytes() >= held)
        {
            return true;
        }
        let Some(capacity) = self.config.capacity_bytes else {
            return false;
        };
        *author != self.author()
            && !self.index.feeds.contains_key(author)
            && !self.follows.contains(author)
            && self.retention.newcomers_rank_last()
            && self.other_bytes().saturating_add(BLOCK_OVERHEAD) > capacity
    }

    /// Over the byte budget, evicts the lowest-ranked feeds of other authors, whole, and
    /// tombstones them.
    pub(super) fn enforce_capacity(&mut self, run: &mut Run) {
        let Some(capacity) = self.config.capacity_bytes else {
            return;
        };
        let mut other = self.other_bytes();
        if other <= capacity {
            return;
        }
        let mut victims = Vec::new();
        for victim in self.eviction_order() {
            if other <= capacity {
                break;
            }
            other = other.saturating_sub(self.index.feeds.get(&victim).map_or(0, |f| f.bytes));
            victims.push(victim);
        }
        let now = self.clock.now();
        let until = now.saturating_add(self.config.tombstone_ttl_ms);
        for victim in victims {
            let removed = self.index.evict(&victim);
            self.stats.evicted_feeds += 1;
            self.stats.evicted_blocks += removed.len() as u64;
            for block in removed {
                self.fold.forget_status(&block.id());
                run.touch(key_of(&block));
                run.removed.push(block);
            }
            run.arrivals.insert(victim);
            self.tombstone(victim, until, run);
        }
    }

    /// What the ranking sees of a feed. A feed frozen at genesis holds no block of C, only
    /// its fork proof; it is summarised from the proof, so it can still be evicted.
    pub(super) fn summary(&self, author: &PublicKey, feed: &FeedIndex) -> Option<FeedSummary> {
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
            arrival: feed.arrival,
            followed: self.follows.contains(author),
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

    /// Sets the byte budget for other authors' feeds ([`crate::Config::capacity_bytes`]);
    /// `None` lifts it. A lower budget evicts at the next dispatch that finds the store over
    /// it; a higher one (or none) forgets the feeds refused for room, so sync asks for them
    /// again.
    pub fn set_capacity_bytes(&mut self, bytes: Option<u64>) {
        let grows = match (self.config.capacity_bytes, bytes) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(old), Some(new)) => new > old,
        };
        if grows {
            self.capacity_refusals.clear();
        }
        self.config.capacity_bytes = bytes;
    }

    /// Whether `author`'s feed is refused for now (evicted recently).
    pub fn is_tombstoned(&self, author: &PublicKey) -> bool {
        self.tombstones
            .get(author)
            .is_some_and(|&until| until > self.clock.now())
    }

    /// Follows `author`: its feed ranks above every feed the user does not follow, and a
    /// tombstone that refused it is lifted, so peers can send it again. Persisted with the
    /// store. Returns whether the author was not followed before.
    ///
    /// # Errors
    /// [`Error::TooManyFollows`] past [`MAX_FOLLOWS`]; [`Error::Store`] if the commit fails
    /// (nothing changes then).
    pub fn follow(&mut self, author: PublicKey) -> Result<bool, Error> {
        if self.follows.contains(&author) {
            return Ok(false);
        }
        if self.follows.len() >= MAX_FOLLOWS {
            return Err(Error::TooManyFollows { max: MAX_FOLLOWS });
        }
        self.follows.insert(author);
        self.capacity_refusals.remove(&author);
        let lifted = self.tombstones.remove(&author);
        let mut run = Run::default();
        run.follows.push((author, true));
        if lifted.is_some() {
            run.tombstones.push((author, None));
        }
        if let Err(error) = self.commit_run(run) {
            self.follows.remove(&author);
            if let Some(until) = lifted {
                self.tombstones.insert(author, until);
            }
            return Err(error);
        }
        Ok(true)
    }

    /// Stops following `author`; its feed is ranked by arrival again (and may be evicted at
    /// the next dispatch that finds the store over capacity). Returns whether it was followed.
    ///
    /// # Errors
    /// [`Error::Store`] if the commit fails (nothing changes then).
    pub fn unfollow(&mut self, author: &PublicKey) -> Result<bool, Error> {
        if !self.follows.remove(author) {
            return Ok(false);
        }
        let mut run = Run::default();
        run.follows.push((*author, false));
        if let Err(error) = self.commit_run(run) {
            self.follows.insert(*author);
            return Err(error);
        }
        Ok(true)
    }

    /// Every feed held, in rank order (own feeds first), then every feed evicted whose
    /// tombstone lasts, soonest to end first.
    pub fn retention(&self) -> Vec<FeedStanding> {
        let own = self.author();
        let mut held: Vec<FeedSummary> = self
            .index
            .feeds
            .iter()
            .filter(|(a, _)| **a != own)
            .filter_map(|(a, feed)| self.summary(a, feed))
            .collect();
        held.sort_by(|a, b| self.retention.rank(a, b));
        let mut out = Vec::with_capacity(held.len() + 1);
        if let Some(feed) = self.index.feeds.get(&own).filter(|f| !f.ids.is_empty()) {
            out.push(FeedStanding {
                author: own,
                length: feed.ids.len() as u64,
                bytes: feed.bytes,
                rank: Some(0),
                arrival: Some(feed.arrival),
                followed: self.follows.contains(&own),
                standing: match feed.frozen_at {
                    Some(at) => Standing::Frozen { at },
                    None => Standing::Own,
                },
            });
        }
        for summary in held {
            let frozen = self.index.feeds[&summary.author].frozen_at;
            out.push(FeedStanding {
                author: summary.author,
                length: summary.blocks,
                bytes: summary.bytes,
                rank: Some(out.len() as u64),
                arrival: Some(summary.arrival),
                followed: summary.followed,
                standing: frozen.map_or(Standing::Kept, |at| Standing::Frozen { at }),
            });
        }
        let now = self.clock.now();
        let mut evicted: Vec<(u64, PublicKey)> = self
            .tombstones
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(a, until)| (*until, *a))
            .collect();
        evicted.sort_unstable();
        out.extend(evicted.into_iter().map(|(until, author)| FeedStanding {
            author,
            length: 0,
            bytes: 0,
            rank: None,
            arrival: None,
            followed: self.follows.contains(&author),
            standing: Standing::Evicted { until },
        }));
        out
    }

    /// The authors the user follows.
    pub fn follows(&self) -> impl Iterator<Item = &PublicKey> {
        self.follows.iter()
    }

    /// Whether the user follows `author`.
    pub fn is_followed(&self, author: &PublicKey) -> bool {
        self.follows.contains(author)
    }
}
