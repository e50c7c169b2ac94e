//! Sync messages and their wire form: the format byte, then postcard.
//!
//! ```text
//! message: version | tag: varint | payload
//!   0 Heads      : count | (author[32] | seq | id[32])*
//!   1 Want       : count | (author[32] | from_seq)*
//!   2 Blocks     : count | (len | encoded block)*
//!   3 WantBodies : count | id[32]*
//!   4 Reconcile  : open: (0 | 1 rank) | salt | count | (upper | part)* | count | declined author[32]*
//!        upper   : 0 (past the largest key) | 1 | len | key prefix[len <= 32]
//!        part    : 0 Skip | 1 Fingerprint fp[16] | 2 Ids count id prefix[8]*
//!                | 3 Have len bitmap[len] heads | 4 Differ heads
//!        heads   : count | (author[32] | seq | id[32])*
//! ```
//!
//! Every message a machine sends is cut into pages that stay within the receiver's
//! [`Limits`] by count *and* by encoded bytes ([`Message::encoded_len`] computes the size
//! without encoding), so an honest peer never sends what the other side must refuse.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::range::{
    bound_bytes, bound_from, IdPrefix, Part, Reconcile, FINGERPRINT_BYTES, ID_PREFIX_BYTES,
};
use crate::block::{Block, BlockId, DecodeError, FORMAT_VERSION};
use crate::identity::PublicKey;
use crate::kernel::Head;

/// A request for the blocks of one feed from a height on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Want {
    /// The feed.
    pub author: PublicKey,
    /// The first height wanted.
    pub from_seq: u64,
}

/// One sync message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// The sender's newest counted block per feed (possibly one page of many).
    Heads(Vec<Head>),
    /// Blocks the sender lacks.
    Want(Vec<Want>),
    /// Blocks: an answer to a `Want` or a `WantBodies`, a push of newly accepted blocks, or
    /// fork proofs.
    Blocks(Vec<Arc<Block>>),
    /// Blocks the sender holds without their body (header only): it asks for full copies.
    /// The answer is a `Blocks` message with the full copies the other side holds, or
    /// nothing. Counted against [`Limits::max_wants`].
    WantBodies(Vec<BlockId>),
    /// One message of a range-based reconciliation of heads (see [`crate::sync`]).
    Reconcile(Reconcile),
}

/// Size caps every decoder applies before it allocates, and every sender respects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest message in bytes.
    pub max_message_bytes: usize,
    /// Most blocks in one message.
    pub max_blocks: usize,
    /// Most heads in one message.
    pub max_heads: usize,
    /// Most wants (feeds in a `Want`, ids in a `WantBodies`, declined feeds in a
    /// `Reconcile`) in one message.
    pub max_wants: usize,
    /// Most ranges in one `Reconcile` (its heads count against [`Limits::max_heads`]).
    pub max_ranges: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 4 * 1024 * 1024,
            max_blocks: 512,
            max_heads: 4096,
            max_wants: 4096,
            max_ranges: 4096,
        }
    }
}

#[derive(Serialize, Deserialize)]
enum Repr<'a> {
    Heads(Vec<([u8; 32], u64, [u8; 32])>),
    Want(Vec<Want>),
    #[serde(borrow)]
    Blocks(Vec<&'a [u8]>),
    WantBodies(Vec<[u8; 32]>),
    Reconcile {
        open: Option<u64>,
        salt: u64,
        #[serde(borrow)]
        ranges: Vec<(Option<&'a [u8]>, PartRepr)>,
        declined: Vec<[u8; 32]>,
    },
}

type HeadRepr = ([u8; 32], u64, [u8; 32]);

#[derive(Serialize, Deserialize)]
enum PartRepr {
    Skip,
    Fingerprint([u8; FINGERPRINT_BYTES]),
    Ids(Vec<IdPrefix>),
    Have(Vec<u8>, Vec<HeadRepr>),
    Differ(Vec<HeadRepr>),
}

fn head_repr(head: &Head) -> HeadRepr {
    (head.author.0, head.seq, head.id.0)
}

fn head_from(repr: HeadRepr) -> Head {
    Head {
        author: PublicKey(repr.0),
        seq: repr.1,
        id: BlockId(repr.2),
    }
}

fn too_many(what: &'static str, count: usize, max: usize) -> Result<(), DecodeError> {
    if count > max {
        return Err(DecodeError::TooMany {
            what,
            count: count as u64,
            max: max as u64,
        });
    }
    Ok(())
}

/// Bytes of a postcard varint.
pub(crate) fn varint_len(n: u64) -> usize {
    (64 - n.max(1).leading_zeros() as usize).div_ceil(7)
}

/// A block's encoded size ([`Block::encode`]) computed from its fields, without encoding it:
/// format byte, author, parent option, seq, time, signature, body tag, then the body's length
/// and bytes (or, pruned, its length and hash).
pub(crate) fn block_len(block: &Block) -> usize {
    let body_len = block.header().body_len;
    1 + 32
        + 1
        + if block.parent().is_some() { 32 } else { 0 }
        + varint_len(block.seq())
        + varint_len(block.time())
        + 64
        + 1
        + varint_len(u64::from(body_len))
        + match block.body() {
            Some(body) => body.len(),
            None => 32,
        }
}

/// A block's share of a `Blocks` message: its length prefix and its bytes.
fn block_item_len(block: &Arc<Block>) -> usize {
    let len = block_len(block);
    varint_len(len as u64) + len
}

fn head_item_len(head: &Head) -> usize {
    64 + varint_len(head.seq)
}

/// A reconcile range's share of its message: the upper bound and the part.
pub(super) fn range_len(upper: &Option<PublicKey>, part: &Part) -> usize {
    let upper = match upper {
        None => 1,
        Some(key) => {
            let len = bound_bytes(key).len();
            1 + varint_len(len as u64) + len
        }
    };
    let heads = |heads: &[Head]| -> usize {
        varint_len(heads.len() as u64) + heads.iter().map(head_item_len).sum::<usize>()
    };
    upper
        + 1
        + match part {
            Part::Skip => 0,
            Part::Fingerprint(_) => FINGERPRINT_BYTES,
            Part::Ids(ids) => varint_len(ids.len() as u64) + ID_PREFIX_BYTES * ids.len(),
            Part::Have { held, heads: h } => varint_len(held.len() as u64) + held.len() + heads(h),
            Part::Differ(h) => heads(h),
        }
}

fn want_item_len(want: &Want) -> usize {
    32 + varint_len(want.from_seq)
}

/// Format byte and variant tag (every tag is below 128: one byte).
const PREFIX: usize = 2;

/// Cuts `items` into pages of at most `max_count` items whose message stays within
/// `max_bytes`. An item that does not fit an empty page is left out (it would be refused);
/// the second value counts those.
fn paginate<T>(
    items: Vec<T>,
    max_count: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> (Vec<Vec<T>>, usize) {
    let max_count = max_count.max(1);
    // The count prefix is charged at its largest, so a page never outgrows the cap.
    let empty = PREFIX + varint_len(max_count as u64);
    let mut pages = Vec::new();
    let mut page = Vec::new();
    let mut bytes = empty;
    let mut left_out = 0;
    for item in items {
        let n = size(&item);
        if empty + n > max_bytes {
            left_out += 1;
            continue;
        }
        if page.len() >= max_count || bytes + n > max_bytes {
            pages.push(std::mem::take(&mut page));
            bytes = empty;
        }
        bytes += n;
        page.push(item);
    }
    if !page.is_empty() {
        pages.push(page);
    }
    (pages, left_out)
}

impl Message {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push(FORMAT_VERSION);
        match self {
            Message::Heads(heads) => {
                let repr = Repr::Heads(heads.iter().map(|h| (h.author.0, h.seq, h.id.0)).collect());
                postcard::to_extend(&repr, out).expect("Vec write")
            }
            Message::Want(wants) => {
                postcard::to_extend(&Repr::Want(wants.clone()), out).expect("Vec write")
            }
            Message::Blocks(blocks) => {
                let encoded: Vec<Vec<u8>> = blocks.iter().map(|b| b.encode()).collect();
                let repr = Repr::Blocks(encoded.iter().map(Vec::as_slice).collect());
                postcard::to_extend(&repr, out).expect("Vec write")
            }
            Message::WantBodies(ids) => {
                let repr = Repr::WantBodies(ids.iter().map(|id| id.0).collect());
                postcard::to_extend(&repr, out).expect("Vec write")
            }
            Message::Reconcile(reconcile) => {
                let ranges = reconcile
                    .ranges
                    .iter()
                    .map(|(upper, part)| {
                        let part = match part {
                            Part::Skip => PartRepr::Skip,
                            Part::Fingerprint(fp) => PartRepr::Fingerprint(*fp),
                            Part::Ids(ids) => PartRepr::Ids(ids.clone()),
                            Part::Have { held, heads } => {
                                PartRepr::Have(held.clone(), heads.iter().map(head_repr).collect())
                            }
                            Part::Differ(h) => PartRepr::Differ(h.iter().map(head_repr).collect()),
                        };
                        (upper.as_ref().map(bound_bytes), part)
                    })
                    .collect();
                let repr = Repr::Reconcile {
                    open: reconcile.open,
                    salt: reconcile.salt,
                    ranges,
                    declined: reconcile.declined.iter().map(|a| a.0).collect(),
                };
                postcard::to_extend(&repr, out).expect("Vec write")
            }
        }
    }

    /// The length of [`Message::encode`]'s output, computed without encoding.
    pub fn encoded_len(&self) -> usize {
        let (count, items) = match self {
            Message::Heads(heads) => (heads.len(), heads.iter().map(head_item_len).sum()),
            Message::Want(wants) => (wants.len(), wants.iter().map(want_item_len).sum()),
            Message::Blocks(blocks) => (blocks.len(), blocks.iter().map(block_item_len).sum()),
            Message::WantBodies(ids) => (ids.len(), 32 * ids.len()),
            Message::Reconcile(r) => {
                let ranges: usize = r.ranges.iter().map(|(u, p)| range_len(u, p)).sum();
                return PREFIX
                    + 1
                    + r.open.map_or(0, varint_len)
                    + varint_len(r.salt)
                    + varint_len(r.ranges.len() as u64)
                    + ranges
                    + varint_len(r.declined.len() as u64)
                    + 32 * r.declined.len();
            }
        };
        PREFIX + varint_len(count as u64) + items
    }

    /// `heads` as `Heads` messages within `limits`.
    pub fn heads_pages(heads: Vec<Head>, limits: &Limits) -> Vec<Message> {
        let (pages, _) = paginate(
            heads,
            limits.max_heads,
            limits.max_message_bytes,
            head_item_len,
        );
        pages.into_iter().map(Message::Heads).collect()
    }

    /// Answer `ranges` (consecutive from the smallest key) and `declined` as `Reconcile`
    /// messages within `limits`: a page after the first starts with a skip up to where the
    /// page before it ended. A part with more heads than one message may carry is cut to fit.
    pub fn reconcile_pages(
        ranges: Vec<(Option<PublicKey>, Part)>,
        mut declined: Vec<PublicKey>,
        salt: u64,
        limits: &Limits,
    ) -> Vec<Message> {
        declined.truncate(limits.max_wants);
        let max_ranges = limits.max_ranges.max(2);
        // Format byte, tag, open, salt, both counts at their largest, the declined feeds.
        let empty = PREFIX + 1 + varint_len(salt) + 2 * varint_len(u64::MAX) + 32 * declined.len();
        let mut pages = Vec::new();
        let mut page: Vec<(Option<PublicKey>, Part)> = Vec::new();
        let (mut bytes, mut heads) = (empty, 0);
        let mut lower: Option<PublicKey> = None;
        for (upper, mut part) in ranges {
            truncate(&mut part, limits.max_heads);
            let n = range_len(&upper, &part);
            let h = part.items();
            let full = page.len() + 1 >= max_ranges
                || bytes + n > limits.max_message_bytes
                || heads + h > limits.max_heads;
            if full && !page.is_empty() {
                pages.push(std::mem::take(&mut page));
                bytes = empty;
                heads = 0;
                if let Some(lower) = lower {
                    let skip = (Some(lower), Part::Skip);
                    bytes += range_len(&skip.0, &skip.1);
                    page.push(skip);
                }
            }
            bytes += n;
            heads += h;
            lower = upper;
            page.push((upper, part));
        }
        if !page.is_empty() || !declined.is_empty() {
            pages.push(page);
        }
        pages
            .into_iter()
            .enumerate()
            .map(|(i, ranges)| {
                Message::Reconcile(Reconcile {
                    open: None,
                    salt,
                    ranges,
                    declined: if i == 0 {
                        std::mem::take(&mut declined)
                    } else {
                        Vec::new()
                    },
                })
            })
            .collect()
    }

    /// `wants` as `Want` messages within `limits`.
    pub fn want_pages(wants: Vec<Want>, limits: &Limits) -> Vec<Message> {
        let (pages, _) = paginate(
            wants,
            limits.max_wants,
            limits.max_message_bytes,
            want_item_len,
        );
        pages.into_iter().map(Message::Want).collect()
    }

    /// `ids` as `WantBodies` messages within `limits`.
    pub fn want_bodies_pages(ids: Vec<BlockId>, limits: &Limits) -> Vec<Message> {
        let (pages, _) = paginate(ids, limits.max_wants, limits.max_message_bytes, |_| 32);
        pages.into_iter().map(Message::WantBodies).collect()
    }

    /// `blocks` as `Blocks` messages within `limits`. A block that alone exceeds the byte cap
    /// (possible only with a cap below the largest block) is left out; the second value counts
    /// those.
    pub fn blocks_pages(blocks: Vec<Arc<Block>>, limits: &Limits) -> (Vec<Message>, usize) {
        let (pages, left_out) = paginate(
            blocks,
            limits.max_blocks,
            limits.max_message_bytes,
            block_item_len,
        );
        (pages.into_iter().map(Message::Blocks).collect(), left_out)
    }

    /// Decodes a message, enforcing `limits` before anything is allocated from a length.
    /// Blocks are decoded but not verified.
    ///
    /// # Errors
    /// A [`DecodeError`] for bytes that are not exactly one message within the limits.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        too_many("message bytes", bytes.len(), limits.max_message_bytes)?;
        let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::Version(version));
        }
        check_reconcile_count(rest, limits)?;
        let (repr, rest): (Repr<'_>, _) = postcard::take_from_bytes(rest)
            .map_err(|_| DecodeError::Malformed { what: "message" })?;
        if !rest.is_empty() {
            return Err(DecodeError::Trailing(rest.len()));
        }
        Ok(match repr {
            Repr::Heads(heads) => {
                too_many("heads", heads.len(), limits.max_heads)?;
                Message::Heads(
                    heads
                        .into_iter()
                        .map(|(author, seq, id)| Head {
                            author: PublicKey(author),
                            seq,
                            id: BlockId(id),
                        })
                        .collect(),
                )
            }
            Repr::Want(wants) => {
                too_many("wants", wants.len(), limits.max_wants)?;
                Message::Want(wants)
            }
            Repr::Blocks(blocks) => {
                too_many("blocks", blocks.len(), limits.max_blocks)?;
                Message::Blocks(
                    blocks
                        .into_iter()
                        .map(|b| Block::decode(b).map(Arc::new))
                        .collect::<Result<_, _>>()?,
                )
            }
            Repr::WantBodies(ids) => {
                too_many("wants", ids.len(), limits.max_wants)?;
                Message::WantBodies(ids.into_iter().map(BlockId).collect())
            }
            Repr::Reconcile {
                open,
                salt,
                ranges,
                declined,
            } => Message::Reconcile(decode_reconcile(open, salt, ranges, declined, limits)?),
        })
    }
}

/// A reconcile message's range count, checked before postcard builds the list: a range can be
/// two bytes on the wire and fifty in memory, so the count is refused before anything is
/// allocated from it. Other messages and bytes too short to say pass on to the decoder.
fn check_reconcile_count(rest: &[u8], limits: &Limits) -> Result<(), DecodeError> {
    fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
        let mut value = 0u64;
        for (i, &b) in bytes.iter().enumerate().take(10) {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some((value, &bytes[i + 1..]));
            }
        }
        None
    }
    // Reconcile is variant 4; then `open` (0, or 1 and a varint), the salt, the range count.
    let Some((4, rest)) = varint(rest) else {
        return Ok(());
    };
    let rest = match rest.split_first() {
        Some((1, rest)) => match varint(rest) {
            Some((_, rest)) => rest,
            None => return Ok(()),
        },
        Some((_, rest)) => rest,
        None => return Ok(()),
    };
    let Some((_, rest)) = varint(rest) else {
        return Ok(());
    };
    if let Some((count, _)) = varint(rest) {
        too_many(
            "ranges",
            usize::try_from(count).unwrap_or(usize::MAX),
            limits.max_ranges,
        )?;
    }
    Ok(())
}

/// Cuts a part's list to `max` items (an `Ids` list is never longer than `ITEMS_MAX`).
fn truncate(part: &mut Part, max: usize) {
    match part {
        Part::Ids(ids) => ids.truncate(max),
        Part::Have { heads, .. } | Part::Differ(heads) => heads.truncate(max),
        Part::Skip | Part::Fingerprint(_) => {}
    }
}

/// Checks a reconcile message's shape: within the limits, bounds strictly increasing (past
/// the largest key only at the end), and each range's heads in author order inside it.
fn decode_reconcile(
    open: Option<u64>,
    salt: u64,
    ranges: Vec<(Option<&[u8]>, PartRepr)>,
    declined: Vec<[u8; 32]>,
    limits: &Limits,
) -> Result<Reconcile, DecodeError> {
    too_many("ranges", ranges.len(), limits.max_ranges)?;
    too_many("wants", declined.len(), limits.max_wants)?;
    let heads: usize = ranges
        .iter()
        .map(|(_, p)| match p {
            PartRepr::Ids(ids) => ids.len(),
            PartRepr::Have(_, h) | PartRepr::Differ(h) => h.len(),
            _ => 0,
        })
        .sum();
    too_many("heads", heads, limits.max_heads)?;
    let malformed = |what| DecodeError::Malformed { what };
    let mut lower: Option<PublicKey> = None;
    let mut ended = false;
    let mut out = Vec::with_capacity(ranges.len());
    for (upper, part) in ranges {
        if ended {
            return Err(malformed("range after the last key"));
        }
        let upper = match upper {
            None => {
                ended = true;
                None
            }
            Some(bytes) => {
                let key = bound_from(bytes).ok_or(malformed("range bound"))?;
                if lower.is_some_and(|l| key <= l) {
                    return Err(malformed("range order"));
                }
                Some(key)
            }
        };
        let inside = |heads: Vec<HeadRepr>| -> Result<Vec<Head>, DecodeError> {
            let heads: Vec<Head> = heads.into_iter().map(head_from).collect();
            let ordered = heads.windows(2).all(|w| w[0].author < w[1].author);
            let within = heads
                .iter()
                .all(|h| lower.is_none_or(|l| h.author >= l) && upper.is_none_or(|u| h.author < u));
            if ordered && within {
                Ok(heads)
            } else {
                Err(malformed("range heads"))
            }
        };
        let part = match part {
            PartRepr::Skip => Part::Skip,
            PartRepr::Fingerprint(fp) => Part::Fingerprint(fp),
            PartRepr::Ids(ids) => Part::Ids(ids),
            PartRepr::Have(held, h) => {
                // One bit per id a peer may list.
                too_many("have bits", held.len(), limits.max_heads.div_ceil(8).max(1))?;
                Part::Have {
                    held,
                    heads: inside(h)?,
                }
            }
            PartRepr::Differ(h) => Part::Differ(inside(h)?),
        };
        out.push((upper, part));
        lower = upper;
    }
    Ok(Reconcile {
        open,
        salt,
        ranges: out,
        declined: declined.into_iter().map(PublicKey).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::sync::range::{id_prefix, salt_key};
    use proptest::prelude::*;

    #[test]
    fn limits_are_enforced_before_decoding() {
        let limits = Limits {
            max_blocks: 1,
            ..Limits::default()
        };
        let identity = Identity::from_secret([5; 32]);
        let a = Arc::new(Block::sign(&identity, None, 1, vec![1]));
        let b = Arc::new(Block::sign(&identity, Some((a.id(), 0, 1)), 2, vec![2]));
        let bytes = Message::Blocks(vec![a.clone(), b]).encode();
        assert!(matches!(
            Message::decode(&bytes, &limits),
            Err(DecodeError::TooMany { what: "blocks", .. })
        ));
        let small = Limits {
            max_message_bytes: 8,
            ..Limits::default()
        };
        assert!(matches!(
            Message::decode(&bytes, &small),
            Err(DecodeError::TooMany {
                what: "message bytes",
                ..
            })
        ));
        let one = Message::Blocks(vec![a]);
        assert_eq!(Message::decode(&one.encode(), &limits), Ok(one));
        let wants = Limits {
            max_wants: 1,
            ..Limits::default()
        };
        let bodies = Message::WantBodies(vec![BlockId([1; 32]), BlockId([2; 32])]);
        assert!(matches!(
            Message::decode(&bodies.encode(), &wants),
            Err(DecodeError::TooMany { what: "wants", .. })
        ));
    }

    #[test]
    fn rejects_unknown_version_and_trailing_bytes() {
        let mut bytes = Message::Want(Vec::new()).encode();
        bytes.push(0);
        assert_eq!(
            Message::decode(&bytes, &Limits::default()),
            Err(DecodeError::Trailing(1))
        );
        bytes[0] = 9;
        assert_eq!(
            Message::decode(&bytes, &Limits::default()),
            Err(DecodeError::Version(9))
        );
    }

    #[test]
    fn pages_stay_within_bytes_and_count() {
        let identity = Identity::from_secret([6; 32]);
        let mut blocks = Vec::new();
        let mut parent = None;
        for i in 0..40u64 {
            let block = Arc::new(Block::sign(
                &identity,
                parent,
                1_000 + i,
                vec![i as u8; 3_000],
            ));
            parent = Some((block.id(), i, 1_000 + i));
            blocks.push(block);
        }
        let limits = Limits {
            max_message_bytes: 10_000,
            max_blocks: 5,
            ..Limits::default()
        };
        let (pages, left_out) = Message::blocks_pages(blocks.clone(), &limits);
        assert_eq!(left_out, 0);
        let mut carried = Vec::new();
        for page in &pages {
            let bytes = page.encode();
            assert!(bytes.len() <= limits.max_message_bytes, "{}", bytes.len());
            let Ok(Message::Blocks(decoded)) = Message::decode(&bytes, &limits) else {
                panic!("a page does not decode within the limits");
            };
            assert!(decoded.len() <= limits.max_blocks);
            carried.extend(decoded);
        }
        assert_eq!(carried, blocks, "every block once, in order");
        let tiny = Limits {
            max_message_bytes: 1_000,
            ..limits
        };
        let (pages, left_out) = Message::blocks_pages(blocks, &tiny);
        assert!(pages.is_empty());
        assert_eq!(left_out, 40, "a block that can never fit is not sent");
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let key = any::<[u8; 32]>();
        prop_oneof![
            prop::collection::vec((key, any::<u64>(), key), 0..40).prop_map(|h| {
                Message::Heads(
                    h.into_iter()
                        .map(|(a, seq, id)| Head {
                            author: PublicKey(a),
                            seq,
                            id: BlockId(id),
                        })
                        .collect(),
                )
            }),
            prop::collection::vec((key, any::<u64>()), 0..40).prop_map(|w| {
                Message::Want(
                    w.into_iter()
                        .map(|(a, from_seq)| Want {
                            author: PublicKey(a),
                            from_seq,
                        })
                        .collect(),
                )
            }),
            prop::collection::vec(key, 0..200)
                .prop_map(|ids| Message::WantBodies(ids.into_iter().map(BlockId).collect())),
            prop::collection::vec(
                (any::<u64>(), 0usize..300, any::<bool>(), any::<bool>()),
                0..20
            )
            .prop_map(|specs| {
                let identity = Identity::from_secret([8; 32]);
                let genesis = Block::sign(&identity, None, 7, vec![1]);
                Message::Blocks(
                    specs
                        .into_iter()
                        .map(|(time, len, linked, pruned)| {
                            let parent = linked.then(|| (genesis.id(), 0, 7));
                            let block = Block::sign(&identity, parent, time, vec![3; len]);
                            Arc::new(if pruned { block.pruned() } else { block })
                        })
                        .collect(),
                )
            }),
            arb_reconcile().prop_map(Message::Reconcile),
        ]
    }

    /// Reconcile messages of every shape that decodes: sorted keys, each either a bound that
    /// ends a range or a head inside the current one.
    fn arb_reconcile() -> impl Strategy<Value = Reconcile> {
        (
            prop::collection::btree_set(any::<[u8; 32]>(), 0..30),
            prop::collection::vec((any::<bool>(), 0u8..4, any::<u64>(), any::<[u8; 32]>()), 30),
            any::<Option<u64>>(),
            any::<bool>(),
            prop::collection::vec(any::<[u8; 32]>(), 0..5),
            any::<u64>(),
        )
            .prop_map(|(keys, specs, open, to_end, declined, seq_salt)| {
                let mut ranges = Vec::new();
                let mut heads = Vec::new();
                let mut kind = 0;
                let part = |kind: u8, heads: Vec<Head>| match kind {
                    0 if heads.is_empty() => Part::Skip,
                    1 if heads.is_empty() => Part::Fingerprint([kind; 16]),
                    0 => Part::Ids(
                        heads
                            .iter()
                            .map(|h| id_prefix(&salt_key(7), &h.id))
                            .collect(),
                    ),
                    2 => Part::Have {
                        held: vec![kind; heads.len() % 2],
                        heads,
                    },
                    _ => Part::Differ(heads),
                };
                for (key, (is_bound, k, seq, id)) in keys.into_iter().zip(specs) {
                    if is_bound {
                        ranges.push((Some(PublicKey(key)), part(kind, std::mem::take(&mut heads))));
                        kind = k;
                    } else {
                        heads.push(Head {
                            author: PublicKey(key),
                            seq,
                            id: BlockId(id),
                        });
                    }
                }
                if to_end || !heads.is_empty() {
                    ranges.push((None, part(kind, heads)));
                }
                Reconcile {
                    open,
                    salt: seq_salt,
                    ranges,
                    declined: declined.into_iter().map(PublicKey).collect(),
                }
            })
    }

    #[test]
    fn reconcile_messages_out_of_shape_are_refused() {
        let key = |b: u8| Some(PublicKey([b; 32]));
        let head = |b: u8| Head {
            author: PublicKey([b; 32]),
            seq: 1,
            id: BlockId([b; 32]),
        };
        let cases = [
            (
                vec![(key(5), Part::Skip), (key(5), Part::Skip)],
                "range order",
            ),
            (
                vec![(key(5), Part::Skip), (key(3), Part::Skip)],
                "range order",
            ),
            (
                vec![(None, Part::Skip), (key(3), Part::Skip)],
                "range after the last key",
            ),
            (vec![(key(5), Part::Differ(vec![head(6)]))], "range heads"),
            (
                vec![(key(5), Part::Skip), (key(9), Part::Differ(vec![head(4)]))],
                "range heads",
            ),
            (
                vec![(
                    None,
                    Part::Have {
                        held: Vec::new(),
                        heads: vec![head(7), head(6)],
                    },
                )],
                "range heads",
            ),
        ];
        for (ranges, what) in cases {
            let message = Message::Reconcile(Reconcile {
                open: None,
                salt: 0,
                ranges,
                declined: Vec::new(),
            });
            assert_eq!(
                Message::decode(&message.encode(), &Limits::default()),
                Err(DecodeError::Malformed { what }),
                "{message:?}"
            );
        }
        // A bound longer than a key.
        let mut bytes = Message::Reconcile(Reconcile {
            open: None,
            salt: 0,
            ranges: vec![(Some(PublicKey([1; 32])), Part::Skip)],
            declined: Vec::new(),
        })
        .encode();
        // format, tag, open (None), salt (0), count, Some, len: the length byte says 32; make
        // it 33.
        assert_eq!(bytes[6], 32);
        bytes[6] = 33;
        bytes.insert(7, 1);
        assert_eq!(
            Message::decode(&bytes, &Limits::default()),
            Err(DecodeError::Malformed {
                what: "range bound"
            })
        );
        // A count past the limit is refused before the ranges are built, however cheap they
        // are on the wire.
        let mut bytes = Message::Reconcile(Reconcile {
            open: None,
            salt: 0,
            ranges: vec![(None, Part::Skip)],
            declined: Vec::new(),
        })
        .encode();
        bytes[4] = 0xff; // the range count (after format, tag, open, salt): a longer varint
        bytes.insert(5, 0x7f);
        assert!(matches!(
            Message::decode(&bytes, &Limits::default()),
            Err(DecodeError::TooMany { what: "ranges", .. })
        ));
        let few = Limits {
            max_ranges: 1,
            ..Limits::default()
        };
        let two = Message::Reconcile(Reconcile {
            open: Some(1),
            salt: 0,
            ranges: vec![(key(1), Part::Skip), (None, Part::Skip)],
            declined: Vec::new(),
        });
        assert!(matches!(
            Message::decode(&two.encode(), &few),
            Err(DecodeError::TooMany { what: "ranges", .. })
        ));
    }

    proptest! {
        #[test]
        fn encoded_len_is_exact_and_messages_round_trip(message in arb_message()) {
            let bytes = message.encode();
            prop_assert_eq!(message.encoded_len(), bytes.len());
            prop_assert_eq!(Message::decode(&bytes, &Limits::default()), Ok(message));
        }

        #[test]
        fn reconcile_pages_stay_within_the_limits_and_keep_every_range(
            reconcile in arb_reconcile(),
            max_ranges in 2usize..6,
            max_heads in 1usize..6,
        ) {
            let limits = Limits {
                max_ranges,
                max_heads,
                max_message_bytes: 2_000,
                ..Limits::default()
            };
            let pages = Message::reconcile_pages(
                reconcile.ranges.clone(),
                reconcile.declined.clone(),
                reconcile.salt,
                &limits,
            );
            let mut kept = Vec::new();
            for page in &pages {
                let bytes = page.encode();
                prop_assert!(bytes.len() <= limits.max_message_bytes);
                let Ok(Message::Reconcile(decoded)) = Message::decode(&bytes, &limits) else {
                    panic!("a page does not decode within the limits: {page:?}");
                };
                kept.extend(decoded.ranges.into_iter().filter(|(_, p)| *p != Part::Skip));
            }
            let expected: Vec<_> = reconcile
                .ranges
                .into_iter()
                .filter(|(_, p)| *p != Part::Skip)
                .map(|(u, mut p)| {
                    truncate(&mut p, max_heads);
                    (u, p)
                })
                .collect();
            prop_assert_eq!(kept, expected);
        }

        #[test]
        fn decoding_junk_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = Message::decode(&bytes, &Limits::default());
        }
    }
}
