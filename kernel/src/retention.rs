//! Retention: which feeds a kernel keeps when its byte budget is exceeded.
//!
//! Own feeds are always kept and do not count against the budget; the budget bounds the bytes
//! of other authors' feeds. Over budget, the lowest-ranked feeds are evicted whole (their slice
//! contributions go with them, by a re-fold) and a bounded, expiring tombstone refuses them for
//! a while, so a peer re-sending an evicted feed does not bring it straight back.
//!
//! The default ranking, [`OldestLongest`], keeps older feeds first, then longer ones, then the
//! most recently extended: a swarm of fresh identities cannot push out established feeds,
//! because fresh feeds are young and short. (DESIGN.md's draft put recency first; recency is
//! the one criterion a spammer controls, so it comes last here.)

use std::cmp::Ordering;

use crate::identity::PublicKey;

/// What a ranking sees of a feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedSummary {
    /// The feed's author.
    pub author: PublicKey,
    /// Blocks held.
    pub blocks: u64,
    /// Bytes held (bodies plus a fixed per-block overhead).
    pub bytes: u64,
    /// Time of the genesis block: the feed's age.
    pub genesis_time: u64,
    /// Time of the newest block.
    pub last_time: u64,
}

/// A ranking of feeds for retention. Must be a total order (ties broken, e.g. by author) so
/// every peer with the same feeds evicts the same ones.
pub trait Retention: Send + Sync + 'static {
    /// `Ordering::Less` if `a` is more worth keeping than `b`.
    fn rank(&self, a: &FeedSummary, b: &FeedSummary) -> Ordering;
}

/// The default ranking: older genesis first, then more blocks, then more recently extended,
/// then by author.
#[derive(Clone, Copy, Debug, Default)]
pub struct OldestLongest;

impl Retention for OldestLongest {
    fn rank(&self, a: &FeedSummary, b: &FeedSummary) -> Ordering {
        a.genesis_time
            .cmp(&b.genesis_time)
            .then(b.blocks.cmp(&a.blocks))
            .then(b.last_time.cmp(&a.last_time))
            .then(a.author.cmp(&b.author))
    }
}
