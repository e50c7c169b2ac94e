//! What the machine remembers about one connected peer. Everything here grows from the
//! peer's own claims or from what was sent to it, so every map is capped.

use std::collections::{BTreeMap, BTreeSet};

use super::reconcile::{
    DECLINE_TICKS, MAX_DECLINED, RECONCILES_PER_TICK, RECONCILE_BYTES_PER_TICK,
};
use crate::block::{Block, BlockId};
use crate::identity::PublicKey;
use crate::kernel::Source;

/// Most feeds remembered per peer (known heads, pending wants).
const MAX_KNOWN_FEEDS: usize = 1 << 16;

/// Most proof blocks remembered as sent to one peer on one connection. Past it, no more
/// proofs go to that peer until it reconnects: a peer cannot make the machine resend proofs by
/// filling the memory of what it was sent.
pub(super) const MAX_PROOFS_SENT: usize = 1 << 12;

/// Most body requests remembered per peer; past it, that peer is asked no more until old
/// requests age out.
pub(super) const MAX_BODIES_ASKED: usize = 1 << 12;

/// Ticks after which a body asked of a peer may be asked of it again: a body nobody could
/// give (collected everywhere, or never published) costs each peer one id per this many
/// ticks, and never fills the memory of what was asked for good.
pub(super) const BODY_RETRY_TICKS: u64 = 30;

/// Most feeds remembered per peer as shown a diverging block (see `Peer::divergences`).
pub(super) const MAX_DIVERGENCES: usize = 1 << 12;

/// Ticks after which an unanswered want counts as lost.
pub(super) const WANT_TICKS: u64 = 2;

/// Per-peer counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStats {
    /// Blocks received from the peer.
    pub blocks_received: u64,
    /// Blocks sent to the peer.
    pub blocks_sent: u64,
    /// Invalid blocks and malformed messages from the peer.
    pub invalid: u32,
    /// Blocks not sent because one alone is larger than [`super::Limits::max_message_bytes`]
    /// (only with a cap set below the kernel's block size cap).
    pub blocks_not_sent: u64,
}

pub(super) struct Peer {
    /// How the kernel knows this peer (see [`crate::Kernel::dispatch_from`]). Never reused.
    pub source: Source,
    /// Highest seq per feed the peer is known to hold (from its heads, or what we exchanged).
    pub known: BTreeMap<PublicKey, u64>,
    /// The want in flight per feed: (from_seq asked, tick when asked). A heads message does not
    /// ask again for what is already asked, so a periodic reconciliation during a long
    /// catch-up does not start a second transfer of the same blocks. A want unanswered for
    /// [`WANT_TICKS`] ticks counts as lost and is asked again on the next tick.
    pub pending: BTreeMap<PublicKey, (u64, u64)>,
    /// Fork-proof blocks sent on this connection: each goes to a peer once.
    pub proofs_sent: BTreeSet<BlockId>,
    /// Bodies asked of this peer, with the tick when: each id is asked of a peer at most once
    /// per [`BODY_RETRY_TICKS`].
    pub bodies_asked: BTreeMap<BlockId, u64>,
    /// Feeds whose head the peer claims with another id than ours at that height, with the
    /// tick when we showed it our block there: once per [`BODY_RETRY_TICKS`] per feed.
    pub divergences: BTreeMap<PublicKey, u64>,
    /// Feeds the peer pushed past a gap (orphans): asked for on the next tick if still behind.
    pub gaps: BTreeSet<PublicKey>,
    /// Feeds left out of this connection's reconciliation (declined by either side), with the
    /// tick when; see `reconcile.rs`.
    pub declined: BTreeMap<PublicKey, u64>,
    /// The tick when the peer last opened a reconciliation with us, and its rank then.
    pub opened_at: Option<u64>,
    pub rank: u64,
    /// The tick when we last opened one with the peer.
    pub sent_open_at: Option<u64>,
    /// What the peer's reconcile messages cost on the current tick.
    pub reconciles: Spent,
    pub stats: PeerStats,
}

/// What one peer's reconcile messages cost on one tick.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spent {
    pub tick: u64,
    /// Messages answered.
    pub messages: u32,
    /// Bytes of answers.
    pub bytes: usize,
    /// Heads walked to answer them.
    pub walked: u64,
}

impl Peer {
    pub fn new(source: Source) -> Self {
        Self {
            source,
            known: BTreeMap::new(),
            pending: BTreeMap::new(),
            proofs_sent: BTreeSet::new(),
            bodies_asked: BTreeMap::new(),
            divergences: BTreeMap::new(),
            gaps: BTreeSet::new(),
            declined: BTreeMap::new(),
            opened_at: None,
            rank: 0,
            sent_open_at: None,
            reconciles: Spent::default(),
            stats: PeerStats::default(),
        }
    }

    pub fn knows(&mut self, author: PublicKey, seq: u64) {
        if self.known.len() >= MAX_KNOWN_FEEDS && !self.known.contains_key(&author) {
            return;
        }
        let known = self.known.entry(author).or_insert(seq);
        *known = (*known).max(seq);
    }

    pub fn has(&self, block: &Block) -> bool {
        self.known
            .get(&block.author())
            .is_some_and(|&s| s >= block.seq())
    }

    /// Whether the peer may hold `block`: it claims it, or nothing it showed says it does
    /// not (reconciliation shows no heads where both sides agree).
    pub fn may_have(&self, block: &Block) -> bool {
        self.known
            .get(&block.author())
            .is_none_or(|&s| s >= block.seq())
    }

    /// Whether the peer claims more of `author`'s feed than `ours` (our newest counted seq).
    pub fn is_ahead(&self, author: &PublicKey, ours: Option<u64>) -> bool {
        self.known.get(author).copied() > ours
    }

    /// Whether `from_seq` of `author` was asked of this peer less than [`WANT_TICKS`] ago.
    pub fn asked(&self, author: &PublicKey, from_seq: u64, now: u64) -> bool {
        self.pending
            .get(author)
            .is_some_and(|&(seq, at)| seq == from_seq && now.saturating_sub(at) < WANT_TICKS)
    }

    /// Whether to show the peer our block where its head diverges from `author`'s feed: once
    /// per [`BODY_RETRY_TICKS`] per feed, and never for more than [`MAX_DIVERGENCES`] feeds
    /// at once.
    pub fn show_divergence(&mut self, author: PublicKey, now: u64) -> bool {
        if let Some(&at) = self.divergences.get(&author) {
            if now.saturating_sub(at) < BODY_RETRY_TICKS {
                return false;
            }
        }
        if self.divergences.len() >= MAX_DIVERGENCES {
            self.divergences
                .retain(|_, at| now.saturating_sub(*at) < BODY_RETRY_TICKS);
            if self.divergences.len() >= MAX_DIVERGENCES {
                return false;
            }
        }
        self.divergences.insert(author, now);
        true
    }

    /// Leaves `author` out of this connection's fingerprints for [`DECLINE_TICKS`] from `now`.
    /// False when the table is full (the feed stays in).
    pub fn decline(&mut self, author: PublicKey, now: u64) -> bool {
        if self.declined.len() >= MAX_DECLINED && !self.declined.contains_key(&author) {
            self.expire_declines(now);
            if self.declined.len() >= MAX_DECLINED {
                return false;
            }
        }
        self.declined.insert(author, now);
        true
    }

    /// Forgets the declines older than [`DECLINE_TICKS`].
    pub fn expire_declines(&mut self, now: u64) {
        self.declined
            .retain(|_, at| now.saturating_sub(*at) < DECLINE_TICKS);
    }

    /// Whether one more reconcile message may be answered on tick `now`
    /// ([`RECONCILES_PER_TICK`]), counting it.
    pub fn reconcile_allowed(&mut self, now: u64) -> bool {
        self.new_tick(now);
        self.reconciles.messages += 1;
        self.reconciles.messages <= RECONCILES_PER_TICK
    }

    /// Whether this tick's budget of heads walked (`budget`, see
    /// [`WALKS_PER_TICK`](super::reconcile::WALKS_PER_TICK)) still
    /// buys a walk; spending is [`Peer::walked`].
    pub fn may_walk(&mut self, budget: u64, now: u64) -> bool {
        self.new_tick(now);
        self.reconciles.walked < budget
    }

    /// Counts `heads` walked for the peer on tick `now`.
    pub fn walked(&mut self, heads: u64, now: u64) {
        self.new_tick(now);
        self.reconciles.walked = self.reconciles.walked.saturating_add(heads);
    }

    /// Spends `bytes` of this tick's answer budget ([`RECONCILE_BYTES_PER_TICK`]) if it still
    /// holds them.
    pub fn spend_reconcile_bytes(&mut self, bytes: usize, now: u64) -> bool {
        self.new_tick(now);
        let fits = self.reconciles.bytes + bytes <= RECONCILE_BYTES_PER_TICK;
        if fits {
            self.reconciles.bytes += bytes;
        }
        fits
    }

    fn new_tick(&mut self, now: u64) {
        if self.reconciles.tick != now {
            self.reconciles = Spent {
                tick: now,
                ..Spent::default()
            };
        }
    }

    pub fn note_gap(&mut self, author: PublicKey) {
        if self.gaps.len() < MAX_KNOWN_FEEDS {
            self.gaps.insert(author);
        }
    }

    pub fn record_want(&mut self, author: PublicKey, from_seq: u64, now: u64) {
        if self.pending.len() < MAX_KNOWN_FEEDS || self.pending.contains_key(&author) {
            self.pending.insert(author, (from_seq, now));
        }
    }
}
