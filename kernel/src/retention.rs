//! Retention: which feeds a kernel keeps when its byte budget is full.
//!
//! Own feeds are always kept and do not count against the budget; the budget bounds the bytes
//! of other authors' feeds. Blocks are ranked **before** they are admitted: a block whose feed
//! would be among the first to go to make room for it is refused at the door
//! ([`crate::Outcome::OverCapacity`]) before its signature is checked, so a flood is never
//! admitted, folded and evicted. A block that does fit in rank pushes out the lowest-ranked
//! feeds, whole (their slice contributions go with them, by a re-fold), and a bounded,
//! expiring tombstone refuses those for a while, so a peer re-sending an evicted feed does
//! not bring it straight back.
//!
//! # The default ranking
//!
//! "Best" must be something an attacker cannot buy cheaply. A block's time is its author's
//! claim (a genesis can be backdated to 1970) and length is cheap (signing runs at ~50k
//! blocks/s), so neither decides. [`Observed`], the default, ranks by what this node saw:
//!
//! 1. feeds the user follows ([`crate::Kernel::follow`]), then
//! 2. seniority: the order in which this node first stored each feed ([`FeedSummary::arrival`],
//!    a persisted counter, not a clock reading), so a flood of fresh identities arrives last,
//!    whatever its blocks claim, then
//! 3. length (more blocks first), then the author.
//!
//! What it cannot do: a fresh node that meets a flooder before any honest peer stores the
//! flood first and ranks it senior; only feeds the user follows outrank it then. An evicted
//! feed that comes back (after its tombstone) arrives anew, as the most junior feed.
//!
//! [`OldestLongest`] (claimed genesis time first) is kept for applications whose authors are
//! trusted; it is **not** Sybil-proof.

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
    /// Time of the genesis block, as its author claims it.
    pub genesis_time: u64,
    /// Time of the newest block, as its author claims it.
    pub last_time: u64,
    /// This node's arrival order: feeds it stored earlier have lower numbers. Persisted with
    /// the store; a feed not yet stored gets the next number, after every feed held.
    pub arrival: u64,
    /// Whether the user follows the feed's author.
    pub followed: bool,
}

/// A ranking of feeds for retention. Must be a total order (ties broken, e.g. by author) so
/// the ranking is the same however the feeds are listed.
pub trait Retention: Send + Sync + 'static {
    /// `Ordering::Less` if `a` is more worth keeping than `b`.
    fn rank(&self, a: &FeedSummary, b: &FeedSummary) -> Ordering;

    /// Whether a feed this node has not stored yet, and whose author the user does not
    /// follow, always ranks below every feed held (true for [`Observed`]). Sync then does not
    /// ask a full store for feeds it would refuse anyway. `false` (the default) is always
    /// safe.
    fn newcomers_rank_last(&self) -> bool {
        false
    }

    /// Whether [`Retention::rank`] is exactly "followed feeds first, then by ascending
    /// [`FeedSummary::arrival`]" (true for [`Observed`]). The kernel then walks its feeds in
    /// arrival order instead of ranking them all, so a full store judges a block in time
    /// proportional to the feeds that would go for it, not to every feed held. `false` (the
    /// default) is always correct.
    fn by_arrival(&self) -> bool {
        false
    }
}

/// The default ranking: followed feeds first, then by this node's arrival order, then more
/// blocks, then by author. See the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct Observed;

impl Retention for Observed {
    fn rank(&self, a: &FeedSummary, b: &FeedSummary) -> Ordering {
        b.followed
            .cmp(&a.followed)
            .then(a.arrival.cmp(&b.arrival))
            .then(b.blocks.cmp(&a.blocks))
            .then(a.author.cmp(&b.author))
    }

    fn newcomers_rank_last(&self) -> bool {
        true
    }

    fn by_arrival(&self) -> bool {
        // Arrival numbers are unique, so length and author never decide.
        true
    }
}

/// Older claimed genesis first, then more blocks, then more recently extended, then by
/// author. Not Sybil-proof: genesis times are the authors' claims.
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
