//! Range-based set reconciliation of heads: the conversation.
//!
//! On connect, and on every tick with each peer that did not open one with it since its last
//! tick, a machine opens a reconciliation: the
//! fingerprints of its heads in [`BUCKETS`] ranges (or, with few heads, their ids). The
//! receiver answers range by range: nothing where its own fingerprint agrees; where it
//! differs, the ids of its heads there if it has at most [`ITEMS_MAX`] of them, else the
//! fingerprints of [`BUCKETS`] sub-ranges cut at its own heads. A list of ids (8-byte
//! prefixes: 8 bytes a head instead of 66) is answered with which of them the receiver holds
//! and its own heads in the range that were not listed ([`Part::Have`]); the lister then sends
//! its heads that were not held ([`Part::Differ`]). Both sides treat every head they are shown
//! like a heads message (wants, fork proofs, divergences). The conversation ends when nothing
//! differs; there is no session state, so a lost message costs one round, made good on the
//! next tick.
//!
//! With n heads and d differences that is about log16(n / 32) + 2 round trips and, per
//! difference, a split of 16 fingerprints per level, 32 ids and a head or two, instead of n
//! heads every tick. While many heads differ (blocks still spreading by push when a round
//! starts) the id lists keep a round near 8 bytes a head.
//!
//! With a grace ([`Config::grace_ms`](super::Config), the node's and the simulator's
//! [`DISSEMINATION`](super::DISSEMINATION)`.grace_ms`), each side reconciles its heads as of
//! that long ago: a block younger than the grace is still spreading by push, so a round that
//! starts while a burst is spreading costs what it costs when nothing is, and a block push
//! failed to deliver is found one grace later. Two sides whose clocks differ disagree only on
//! blocks within the difference of the grace window, for as long as the difference lasts.
//!
//! An id prefix is a keyed hash of the id under the round's salt, which the opener picks
//! (from a secret seed in the node) and every answer carries: a third party cannot grind two
//! heads to one prefix ahead of a round between two others, and a chance collision (2^-64 per
//! pair) hides one difference for one round. A participant can only confuse its own rounds.
//!
//! What one peer can make the machine do is bounded per tick: [`RECONCILES_PER_TICK`]
//! reconcile messages answered (the rest are ignored, unpunished: an honest peer's next round
//! starts on the next tick), each costing at most two walks over the heads in its ranges
//! (strictly increasing, checked when decoding) and memory for one message;
//! [`WALKS_PER_TICK`] walks over every head held, in all; and [`RECONCILE_BYTES_PER_TICK`]
//! bytes of answers, paged within [`Limits`](super::Limits). Ranges past a budget are skipped
//! and found again on the next round. A walk reads each feed's index entry once (the head as
//! of the grace is found by a binary search only in feeds written within it): the whole d = 0
//! round at 100,000 feeds, a walk on each side, takes 26 ms in `blockend bench reconcile`.
//!
//! Peers whose retention differs never agree on the feeds one of them will not take. Such a
//! feed is **declined**: the side that refuses it (evicted, refused for capacity, frozen by a
//! fork proof) names it in its answer, and both sides leave it out of this connection's
//! fingerprints for [`DECLINE_TICKS`] ticks, so it is not found again every round (at most
//! [`MAX_DECLINED`] feeds per peer; past that, the rest are found again each round).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use super::message::range_len;
use super::range::{bound_between, id_prefix, salt_key, Accumulator, IdPrefix, Part, Reconcile};
use super::{Message, Protocol, Step};
use crate::identity::PublicKey;
use crate::kernel::{Head, Kernel};

/// Sub-ranges a differing range is cut into.
pub const BUCKETS: usize = 16;

/// A differing range with at most this many heads is answered with their ids.
pub const ITEMS_MAX: u64 = 32;

/// Reconcile messages answered per peer per tick.
pub const RECONCILES_PER_TICK: u32 = 16;

/// Bytes of answers to reconcile messages per peer per tick (ranges past it are skipped, left
/// for the next round). Room for the splits of about 10,000 differing ranges; a peer cannot
/// buy more than this with any number of small messages.
pub const RECONCILE_BYTES_PER_TICK: usize = 4 << 20;

/// Walks over every feed held that one peer's reconcile messages may cost per tick: the
/// budget is this many times the feeds held, plus [`WALK_SLACK`] feeds. Every feed a walk
/// visits counts, declined or not. An honest round walks about twice per level of splitting
/// where its ranges differ (a fingerprint, then the split): a round between two peers that
/// differ everywhere at 100,000 feeds has four levels, eight walks; one between peers that
/// nearly agree, about two. A peer sending [`RECONCILES_PER_TICK`] messages each spanning
/// every feed would buy 32 without the budget. Ranges met past it are skipped, as past the
/// byte budget, and found again on the next round.
pub const WALKS_PER_TICK: u64 = 8;

/// Heads walked per peer per tick on top of [`WALKS_PER_TICK`] walks (a small store's rounds
/// never meet the budget).
pub const WALK_SLACK: u64 = 4_096;

/// Ticks a declined feed stays out of a connection's fingerprints.
pub const DECLINE_TICKS: u64 = 150;

/// Most feeds declined per peer at once.
pub const MAX_DECLINED: usize = 1 << 16;

/// The ranges of one message: consecutive upper bounds with their parts.
type Ranges = Vec<(Option<PublicKey>, Part)>;

/// A range's bounds as a `BTreeMap` range.
fn span(
    lower: Option<PublicKey>,
    upper: Option<PublicKey>,
) -> (Bound<PublicKey>, Bound<PublicKey>) {
    (
        lower.map_or(Bound::Unbounded, Bound::Included),
        upper.map_or(Bound::Unbounded, Bound::Excluded),
    )
}

/// This side's heads in a range as of `as_of` (see [`Kernel::heads_in`]), less the feeds left
/// out of the connection, counting in `walked` every feed the walk visits: declined feeds and
/// feeds with no head as of the grace cost a visit too, and the peer chooses its declines.
fn own<'a>(
    kernel: &'a Kernel,
    declined: &'a BTreeMap<PublicKey, u64>,
    as_of: Option<u64>,
    (lower, upper): (Option<PublicKey>, Option<PublicKey>),
    walked: &'a Cell<u64>,
) -> impl Iterator<Item = Head> + 'a {
    kernel
        .walk_heads(span(lower, upper), as_of)
        .inspect(move |_| walked.set(walked.get() + 1))
        .flatten()
        .filter(move |h| declined.is_empty() || !declined.contains_key(&h.author))
}

fn ids(key: &[u8; 32], heads: impl Iterator<Item = Head>) -> Vec<IdPrefix> {
    heads.map(|h| id_prefix(key, &h.id)).collect()
}

fn summarise(heads: impl Iterator<Item = Head>) -> Accumulator {
    let mut acc = Accumulator::default();
    for head in heads {
        acc.add(&head.id);
    }
    acc
}

/// The fingerprints of `count` heads cut into up to [`BUCKETS`] ranges of about equal size.
fn split(heads: impl Iterator<Item = Head>, count: u64, upper: Option<PublicKey>) -> Ranges {
    let buckets = (BUCKETS as u64).min(count).max(1);
    let mut out = Vec::with_capacity(buckets as usize);
    let mut acc = Accumulator::default();
    let mut bucket = 0;
    let mut prev: Option<PublicKey> = None;
    for (i, head) in heads.enumerate() {
        let b = (i as u64 * buckets / count.max(1)).min(buckets - 1);
        if b != bucket {
            if let Some(prev) = prev {
                out.push((
                    Some(bound_between(&prev, &head.author)),
                    Part::Fingerprint(acc.fingerprint()),
                ));
            }
            acc = Accumulator::default();
            bucket = b;
        }
        acc.add(&head.id);
        prev = Some(head.author);
    }
    out.push((upper, Part::Fingerprint(acc.fingerprint())));
    out
}

/// This side's rank for breaking ties between openings: the first 8 bytes of its author key.
fn rank(kernel: &Kernel) -> u64 {
    let key = kernel.author().0;
    u64::from_le_bytes(key[..8].try_into().expect("8 bytes"))
}

/// What a message's heads made the machine want to send.
#[derive(Default)]
pub(super) struct Learned {
    pub wants: Vec<super::Want>,
    pub proofs: Vec<(std::sync::Arc<crate::Block>, std::sync::Arc<crate::Block>)>,
    pub diverging: Vec<std::sync::Arc<crate::Block>>,
    /// Feeds shown with another head than ours that we will not take.
    pub declined: Vec<PublicKey>,
}

impl<P: Ord + Clone> Protocol<P> {
    /// The opening of a reconciliation with `peer`: one message, or pages of it within the
    /// limits (the first marked as opening).
    pub(super) fn opening(&self, kernel: &Kernel, peer: &P) -> Vec<Message> {
        let Some(state) = self.peers.get(peer) else {
            return Vec::new();
        };
        let declined = &state.declined;
        let as_of = self.as_of(kernel);
        let salt = self.salt(kernel, state.source);
        let key = salt_key(salt);
        // Our own round: its walks are ours to pay, nobody's budget.
        let walked = Cell::new(0);
        let acc = summarise(own(kernel, declined, as_of, (None, None), &walked));
        let ranges = if acc.count() <= self.items_max() {
            vec![(
                None,
                Part::Ids(ids(
                    &key,
                    own(kernel, declined, as_of, (None, None), &walked),
                )),
            )]
        } else {
            split(
                own(kernel, declined, as_of, (None, None), &walked),
                acc.count(),
                None,
            )
        };
        let mut pages = Message::reconcile_pages(ranges, Vec::new(), salt, &self.config.limits);
        if pages.is_empty() {
            // Nothing held: an empty list still opens the round, so the peer answers with its
            // heads.
            pages.push(Message::Reconcile(Reconcile {
                open: None,
                salt,
                ranges: vec![(None, Part::Ids(Vec::new()))],
                declined: Vec::new(),
            }));
        }
        if let Some(Message::Reconcile(first)) = pages.first_mut() {
            first.open = Some(rank(kernel));
        }
        pages
    }

    /// A salt for a round this side opens with the peer known as `source`: unpredictable to
    /// others when [`Config::salt_seed`](super::Config) is secret (the node draws it at
    /// random), distinct per peer and per tick.
    fn salt(&self, kernel: &Kernel, source: crate::kernel::Source) -> u64 {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.config.salt_seed.to_le_bytes());
        hasher.update(&kernel.author().0);
        hasher.update(&source.0.to_le_bytes());
        hasher.update(&self.ticks.to_le_bytes());
        let bytes = hasher.finalize();
        u64::from_le_bytes(bytes.as_bytes()[..8].try_into().expect("8 bytes"))
    }

    /// Ids listed for a range at most: [`ITEMS_MAX`], or fewer if one message may carry fewer.
    fn items_max(&self) -> u64 {
        ITEMS_MAX.min(self.config.limits.max_heads.max(1) as u64)
    }

    /// The time heads are reconciled as of: now less [`Config::grace_ms`](super::Config), or
    /// the newest heads with no grace.
    fn as_of(&self, kernel: &Kernel) -> Option<u64> {
        let grace = self.config.grace_ms;
        (grace > 0).then(|| kernel.now().saturating_sub(grace))
    }

    /// Sends `peer` an opening (`pages`, or a fresh one) and remembers when.
    pub(super) fn open_reconcile(
        &mut self,
        kernel: &Kernel,
        peer: &P,
        pages: Option<Vec<Message>>,
        step: &mut Step<P>,
    ) {
        let pages = pages.unwrap_or_else(|| self.opening(kernel, peer));
        if let Some(state) = self.peers.get_mut(peer) {
            state.sent_open_at = Some(self.ticks);
        }
        self.send(peer, pages, step);
    }

    /// Whether to open a round with `peer` on this tick: not if it opened one since our last
    /// tick, unless we both did and our rank is the lower.
    pub(super) fn opens(&self, kernel: &Kernel, peer: &P) -> bool {
        let now = self.ticks;
        let Some(state) = self.peers.get(peer) else {
            return false;
        };
        let recent = |at: Option<u64>| at.is_some_and(|at| at + 1 >= now);
        !recent(state.opened_at) || (recent(state.sent_open_at) && rank(kernel) < state.rank)
    }

    /// Answers one reconcile message from `from` (see the module docs).
    pub(super) fn on_reconcile(
        &mut self,
        kernel: &Kernel,
        from: &P,
        message: Reconcile,
        step: &mut Step<P>,
    ) {
        let now = self.ticks;
        let limits = self.config.limits;
        let Some(peer) = self.peers.get_mut(from) else {
            return;
        };
        if !peer.reconcile_allowed(now) {
            return;
        }
        if let Some(rank) = message.open {
            peer.opened_at = Some(now);
            peer.rank = rank;
        }
        for author in message.declined {
            peer.decline(author, now);
        }
        let as_of = self.as_of(kernel);
        let walk_budget = WALKS_PER_TICK
            .saturating_mul(kernel.feed_count() as u64)
            .saturating_add(WALK_SLACK);
        // The round's salt: the opener's, carried by every answer.
        let salt = message.salt;
        let key = salt_key(salt);
        let mut reply: Ranges = Vec::new();
        let mut learned = Learned::default();
        let mut lower: Option<PublicKey> = None;
        for (upper, part) in message.ranges {
            let peer = self.peers.get_mut(from).expect("a connected peer");
            if !matches!(part, Part::Skip | Part::Differ(_)) && !peer.may_walk(walk_budget, now) {
                // Past this tick's walks: the range waits for the next round.
                reply.push((upper, Part::Skip));
                lower = upper;
                continue;
            }
            let walked = Cell::new(0u64);
            let answer = match part {
                Part::Skip => vec![(upper, Part::Skip)],
                Part::Fingerprint(fp) => {
                    let declined = &self.peers[from].declined;
                    let acc = summarise(own(kernel, declined, as_of, (lower, upper), &walked));
                    if acc.fingerprint() == fp {
                        vec![(upper, Part::Skip)]
                    } else if acc.count() <= self.items_max() {
                        let ids = ids(&key, own(kernel, declined, as_of, (lower, upper), &walked));
                        vec![(upper, Part::Ids(ids))]
                    } else {
                        split(
                            own(kernel, declined, as_of, (lower, upper), &walked),
                            acc.count(),
                            upper,
                        )
                    }
                }
                Part::Ids(theirs) => {
                    // One walk over our heads here, keeping no more than the list and one
                    // message of unlisted heads, whatever the range holds.
                    let declined = &self.peers[from].declined;
                    let listed: BTreeSet<IdPrefix> = theirs.iter().copied().collect();
                    let mut matched: BTreeSet<IdPrefix> = BTreeSet::new();
                    let mut heads: Vec<Head> = Vec::new();
                    for head in own(kernel, declined, as_of, (lower, upper), &walked) {
                        let id = id_prefix(&key, &head.id);
                        if listed.contains(&id) {
                            matched.insert(id);
                        } else if heads.len() < limits.max_heads {
                            heads.push(head);
                        }
                    }
                    let mut held = vec![0u8; theirs.len().div_ceil(8)];
                    for (i, id) in theirs.iter().enumerate() {
                        if matched.contains(id) {
                            held[i / 8] |= 1 << (i % 8);
                        }
                    }
                    let all = held.iter().enumerate().all(|(i, byte)| {
                        let bits = (theirs.len() - i * 8).min(8);
                        u32::from(*byte) == (1u32 << bits) - 1
                    });
                    if all && heads.is_empty() {
                        vec![(upper, Part::Skip)]
                    } else {
                        vec![(upper, Part::Have { held, heads })]
                    }
                }
                Part::Have { held, heads } => {
                    self.learn(kernel, from, &heads, &mut learned);
                    let declined = &self.peers[from].declined;
                    let mine: Vec<Head> =
                        own(kernel, declined, as_of, (lower, upper), &walked).collect();
                    // The bits follow the list we sent. If our heads here changed since so
                    // that the bitmap's length no longer fits, every head we hold here goes; a
                    // change that keeps the length (20 heads become 19) shifts the bits, and a
                    // head the peer lacks may be taken as held: found again next round.
                    let aligned = held.len() == mine.len().div_ceil(8);
                    let shown: BTreeSet<(PublicKey, crate::BlockId)> =
                        heads.iter().map(|h| (h.author, h.id)).collect();
                    let differ: Vec<Head> = mine
                        .into_iter()
                        .enumerate()
                        .filter(|(i, h)| {
                            let is_held = aligned && held[i / 8] & (1 << (i % 8)) != 0;
                            !is_held && !shown.contains(&(h.author, h.id))
                        })
                        .map(|(_, h)| h)
                        .take(limits.max_heads)
                        .collect();
                    if differ.is_empty() {
                        vec![(upper, Part::Skip)]
                    } else {
                        vec![(upper, Part::Differ(differ))]
                    }
                }
                Part::Differ(theirs) => {
                    self.learn(kernel, from, &theirs, &mut learned);
                    vec![(upper, Part::Skip)]
                }
            };
            lower = upper;
            // Only what this tick's budget still buys goes; the rest of the range waits for
            // the next round.
            let bytes: usize = answer.iter().map(|(u, p)| range_len(u, p)).sum();
            let peer = self.peers.get_mut(from).expect("a connected peer");
            peer.walked(walked.get(), now);
            if peer.spend_reconcile_bytes(bytes, now) {
                reply.extend(answer);
            } else {
                reply.push((upper, Part::Skip));
            }
        }
        let pages = Message::reconcile_pages(compact(reply), learned.declined, salt, &limits);
        self.send(from, pages, step);
        self.send_wants(from, learned.wants, step);
        self.send_proofs(from, learned.proofs, step);
        self.send_blocks(from, learned.diverging, step);
    }
}

/// Merges neighbouring skips and drops the skips at the end (keys after the last range are
/// skipped anyway).
fn compact(ranges: Ranges) -> Ranges {
    let mut out: Ranges = Vec::with_capacity(ranges.len());
    for (upper, part) in ranges {
        if part == Part::Skip {
            if let Some((last, Part::Skip)) = out.last_mut() {
                *last = upper;
                continue;
            }
        }
        out.push((upper, part));
    }
    while matches!(out.last(), Some((_, Part::Skip))) {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    #[test]
    fn compact_merges_skips_and_drops_the_tail() {
        let fp = Part::Fingerprint([1; 16]);
        let ranges = vec![
            (Some(key(1)), Part::Skip),
            (Some(key(2)), Part::Skip),
            (Some(key(3)), fp.clone()),
            (Some(key(4)), Part::Skip),
            (None, Part::Skip),
        ];
        assert_eq!(
            compact(ranges),
            vec![(Some(key(2)), Part::Skip), (Some(key(3)), fp)]
        );
    }
}
