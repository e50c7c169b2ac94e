//! The pieces of range-based set reconciliation: the reconcile message, range bounds and
//! fingerprints. The conversation itself is in `reconcile.rs`.
//!
//! The set reconciled is the heads, one per feed, ordered by author. A range is a half-open
//! interval of author keys; a message is a run of consecutive ranges from the smallest key
//! on, each with a [`Part`] saying what the sender knows of its heads there.
//!
//! A **bound** is a 32-byte key; on the wire it is written without its trailing zero bytes.
//! The bounds a machine chooses are the shortest prefix of a key that still separates it from
//! the key before it, padded with zeros, so with n random authors a bound costs about
//! log256(n) + 1 bytes.
//!
//! A **fingerprint** is the first 16 bytes of blake3 over the sum modulo 2^256 of the head ids
//! in the range (each id read as a little-endian number) and their count: an id names one
//! block and so one (author, seq) pair, and a sum is put together without re-hashing, so a
//! range's fingerprint costs one addition per head. (This is negentropy's fingerprint. A sum is
//! weaker than a hash of the list against an attacker that picks many items to make two sets
//! collide; an author picks only its own ids, by signing blocks, and a collision hides a
//! difference between the two peers it targets, not from the swarm: the same blocks still
//! travel by push and by every other pair's reconciliation.)

use crate::block::BlockId;
use crate::identity::PublicKey;
use crate::kernel::Head;

/// Bytes of a fingerprint on the wire.
pub const FINGERPRINT_BYTES: usize = 16;

/// A range's fingerprint.
pub type Fingerprint = [u8; FINGERPRINT_BYTES];

/// Bytes of the id prefix that stands for a head in a [`Part::Ids`] list.
pub const ID_PREFIX_BYTES: usize = 8;

/// The first [`ID_PREFIX_BYTES`] of a head's id.
pub type IdPrefix = [u8; ID_PREFIX_BYTES];

/// The key a round's [`Reconcile::salt`] stands for.
pub fn salt_key(salt: u64) -> [u8; 32] {
    *blake3::hash(&salt.to_le_bytes()).as_bytes()
}

/// A head's id prefix in a round salted with `key` ([`salt_key`]): the first bytes of a keyed
/// blake3 of the id, so two ids share a prefix by chance alone, whoever signed them.
pub fn id_prefix(key: &[u8; 32], id: &BlockId) -> IdPrefix {
    let mut out = [0; ID_PREFIX_BYTES];
    out.copy_from_slice(&blake3::keyed_hash(key, &id.0).as_bytes()[..ID_PREFIX_BYTES]);
    out
}

/// What the sender of a reconcile message says about its heads in one range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// Nothing: the range agreed, or is not part of this exchange.
    Skip,
    /// The fingerprint of the sender's heads in the range. The receiver answers with nothing
    /// if its own agrees, else with the ids of its heads there (few) or the fingerprints of
    /// sub-ranges.
    Fingerprint(Fingerprint),
    /// The id prefixes ([`id_prefix`], salted with the round's salt) of every head the sender
    /// has in the range, in author order. The receiver answers with [`Part::Have`].
    Ids(Vec<IdPrefix>),
    /// The answer to [`Part::Ids`]: which of the listed heads the receiver holds as heads (bit
    /// `i % 8` of byte `i / 8` for the `i`-th), and its heads in the range that were not
    /// listed. The receiver of this sends the heads it listed that were not held
    /// ([`Part::Differ`]).
    Have {
        /// One bit per listed id: set where the sender of `Have` holds that head.
        held: Vec<u8>,
        /// The sender's heads in the range whose ids were not listed.
        heads: Vec<Head>,
    },
    /// Heads in the range the receiver's [`Part::Have`] showed it lacks. Final.
    Differ(Vec<Head>),
}

impl Part {
    /// Heads and ids the part carries (counted against `Limits::max_heads`).
    pub fn items(&self) -> usize {
        match self {
            Part::Skip | Part::Fingerprint(_) => 0,
            Part::Ids(ids) => ids.len(),
            Part::Have { heads, .. } | Part::Differ(heads) => heads.len(),
        }
    }
}

/// One message of a reconciliation (`sync::Message::Reconcile`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reconcile {
    /// Set on the message that opens a round, to the sender's rank (the first 8 bytes of its
    /// author key, little-endian). A peer that opened a round with us since our last tick is
    /// not sent an opening of ours, since one round tells both sides what they lack; when both
    /// sides opened on the same tick, the lower rank keeps opening and the higher one stops.
    pub open: Option<u64>,
    /// The round's salt for [`Part::Ids`] prefixes: the opener picks it (unpredictable to
    /// others), every answer carries the salt of the message it answers, so a peer cannot
    /// grind two heads to one prefix ahead of a round between two others.
    pub salt: u64,
    /// Consecutive ranges from the smallest key: range `i` spans from the upper bound of range
    /// `i - 1` (the smallest key for the first) up to its own upper bound, exclusive; `None` is
    /// past the largest key and may only end the list. Keys after the last range are skipped.
    pub ranges: Vec<(Option<PublicKey>, Part)>,
    /// Feeds the sender will not take from the receiver (evicted, refused for capacity, frozen
    /// by a fork proof): both sides leave them out of this connection's fingerprints for a
    /// while, so a difference neither side will act on is not found again every round.
    pub declined: Vec<PublicKey>,
}

/// A bound's bytes on the wire: the key without its trailing zero bytes.
pub(crate) fn bound_bytes(bound: &PublicKey) -> &[u8] {
    let len = bound.0.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &bound.0[..len]
}

/// The key a bound's wire bytes stand for (padded with zeros), or `None` past 32 bytes.
pub(crate) fn bound_from(bytes: &[u8]) -> Option<PublicKey> {
    let mut key = [0; 32];
    key.get_mut(..bytes.len())?.copy_from_slice(bytes);
    Some(PublicKey(key))
}

/// The shortest bound `b` (as a zero-padded prefix of `next`) with `prev < b <= next`.
pub(crate) fn bound_between(prev: &PublicKey, next: &PublicKey) -> PublicKey {
    let first = prev
        .0
        .iter()
        .zip(next.0.iter())
        .position(|(a, b)| a != b)
        .unwrap_or(31);
    let mut key = [0; 32];
    key[..=first].copy_from_slice(&next.0[..=first]);
    PublicKey(key)
}

/// A running fingerprint: the sum of ids modulo 2^256 and their count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Accumulator {
    sum: [u64; 4],
    count: u64,
}

impl Accumulator {
    fn limbs(id: &BlockId) -> [u64; 4] {
        std::array::from_fn(|i| {
            u64::from_le_bytes(id.0[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
        })
    }

    /// Adds an id.
    pub fn add(&mut self, id: &BlockId) {
        let limbs = Self::limbs(id);
        let mut carry = false;
        for (s, l) in self.sum.iter_mut().zip(limbs) {
            let (v, c1) = s.overflowing_add(l);
            let (v, c2) = v.overflowing_add(u64::from(carry));
            *s = v;
            carry = c1 || c2;
        }
        self.count += 1;
    }

    /// Heads added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The fingerprint of what was added.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut hasher = blake3::Hasher::new();
        for limb in self.sum {
            hasher.update(&limb.to_le_bytes());
        }
        hasher.update(&self.count.to_le_bytes());
        let mut out = [0; FINGERPRINT_BYTES];
        out.copy_from_slice(&hasher.finalize().as_bytes()[..FINGERPRINT_BYTES]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_fingerprint_depends_on_the_set_not_the_order(
            ids in prop::collection::vec(any::<[u8; 32]>(), 0..40),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut forward = Accumulator::default();
            let mut backward = Accumulator::default();
            for id in &ids {
                forward.add(&BlockId(*id));
            }
            for id in ids.iter().rev() {
                backward.add(&BlockId(*id));
            }
            prop_assert_eq!(forward.fingerprint(), backward.fingerprint());
            if !ids.is_empty() {
                // Leaving one id out changes the fingerprint.
                let at = cut.index(ids.len());
                let mut without = Accumulator::default();
                for (i, id) in ids.iter().enumerate() {
                    if i != at {
                        without.add(&BlockId(*id));
                    }
                }
                prop_assert_ne!(without.fingerprint(), backward.fingerprint());
            }
        }

        #[test]
        fn a_bound_separates_two_keys_and_survives_the_wire(
            a in any::<[u8; 32]>(),
            b in any::<[u8; 32]>(),
        ) {
            prop_assume!(a != b);
            let (prev, next) = if a < b { (PublicKey(a), PublicKey(b)) } else { (PublicKey(b), PublicKey(a)) };
            let bound = bound_between(&prev, &next);
            prop_assert!(prev < bound && bound <= next);
            prop_assert_eq!(bound_from(bound_bytes(&bound)), Some(bound));
        }
    }

    #[test]
    fn bounds_are_short_for_keys_that_differ_early() {
        let prev = PublicKey([0x10; 32]);
        let next = PublicKey([0x20; 32]);
        let bound = bound_between(&prev, &next);
        assert_eq!(bound_bytes(&bound), &[0x20]);
        assert_eq!(bound_from(&[0; 33]), None, "a bound is at most a key");
        assert_eq!(bound_bytes(&PublicKey([0; 32])), &[] as &[u8]);
    }
}
