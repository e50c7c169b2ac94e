//! The wire form of a block: one format byte, then postcard.
//!
//! ```text
//! header (hashed for the id):  version | author[32] | parent: option<[32]> | seq: varint
//!                              | time: varint | body_len: varint | body_hash[32]
//! block (stored and sent):     version | author[32] | parent: option<[32]> | seq: varint
//!                              | time: varint | signature[64] | body
//! body:                        0 | len: varint | bytes        (inline: hash recomputed)
//!                              1 | len: varint | hash[32]     (pruned by garbage collection)
//! ```

use serde::{Deserialize, Serialize};

use super::{Block, BlockId, DecodeError, Header, Signature};
use crate::identity::PublicKey;

/// The format byte that leads every encoded header, block, feed and sync message.
pub const FORMAT_VERSION: u8 = 1;

/// Upper bound of an encoded header: 1 + 32 + 33 + 10 + 10 + 5 + 32.
pub(crate) const MAX_HEADER_BYTES: usize = 128;

#[derive(Serialize)]
struct HeaderRepr<'a> {
    author: &'a [u8; 32],
    parent: Option<&'a [u8; 32]>,
    seq: u64,
    time: u64,
    body_len: u32,
    body_hash: &'a [u8; 32],
}

/// The fields of a block as they travel. Feeds reuse it for their first block.
#[derive(Serialize, Deserialize)]
pub(crate) struct BlockRepr<'a> {
    pub author: [u8; 32],
    pub parent: Option<[u8; 32]>,
    pub seq: u64,
    pub time: u64,
    pub signature: ([u8; 32], [u8; 32]),
    #[serde(borrow)]
    pub body: BodyRepr<'a>,
}

/// A body as it travels: inline (its hash is recomputed) or pruned (only length and hash).
#[derive(Serialize, Deserialize)]
pub(crate) enum BodyRepr<'a> {
    Inline(&'a [u8]),
    Pruned { len: u32, hash: [u8; 32] },
}

/// A body as decoded: the bytes if inline, with its length and hash either way.
pub(crate) type Resolved = (Option<Vec<u8>>, u32, [u8; 32]);

impl<'a> BodyRepr<'a> {
    pub(crate) fn of(body: Option<&'a [u8]>, header: &Header) -> Self {
        match body {
            Some(bytes) => BodyRepr::Inline(bytes),
            None => BodyRepr::Pruned {
                len: header.body_len,
                hash: header.body_hash,
            },
        }
    }

    /// `(body, body_len, body_hash)`, hashing an inline body.
    pub(crate) fn resolve(self) -> Result<Resolved, DecodeError> {
        match self {
            BodyRepr::Inline(bytes) => {
                let len = u32::try_from(bytes.len()).map_err(|_| DecodeError::Malformed {
                    what: "body length",
                })?;
                Ok((Some(bytes.to_vec()), len, *blake3::hash(bytes).as_bytes()))
            }
            BodyRepr::Pruned { len, hash } => Ok((None, len, hash)),
        }
    }
}

pub(crate) fn split_signature(sig: &Signature) -> ([u8; 32], [u8; 32]) {
    let mut r = [0u8; 32];
    let mut s = [0u8; 32];
    r.copy_from_slice(&sig.0[..32]);
    s.copy_from_slice(&sig.0[32..]);
    (r, s)
}

pub(crate) fn join_signature((r, s): ([u8; 32], [u8; 32])) -> Signature {
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&r);
    sig[32..].copy_from_slice(&s);
    Signature(sig)
}

/// Writes the header's hashed form into `buf` and returns the used part.
pub(crate) fn write_header<'b>(header: &Header, buf: &'b mut [u8; MAX_HEADER_BYTES]) -> &'b [u8] {
    buf[0] = FORMAT_VERSION;
    let repr = HeaderRepr {
        author: &header.author.0,
        parent: header.parent.as_ref().map(|p| &p.0),
        seq: header.seq,
        time: header.time,
        body_len: header.body_len,
        body_hash: &header.body_hash,
    };
    let used = postcard::to_slice(&repr, &mut buf[1..])
        .expect("a header always fits MAX_HEADER_BYTES")
        .len();
    &buf[..1 + used]
}

/// Appends the format byte and the block to `out`.
pub(crate) fn write_block(block: &Block, out: &mut Vec<u8>) {
    out.push(FORMAT_VERSION);
    let repr = BlockRepr {
        author: block.header.author.0,
        parent: block.header.parent.map(|p| p.0),
        seq: block.header.seq,
        time: block.header.time,
        signature: split_signature(&block.signature),
        body: BodyRepr::of(block.body(), &block.header),
    };
    append(&repr, out);
}

/// Appends the postcard encoding of `value` to `out`.
pub(crate) fn append<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    let buf = std::mem::take(out);
    *out = postcard::to_extend(value, buf).expect("writing to a Vec cannot fail");
}

/// Checks that genesis, and only genesis, has no parent.
pub(crate) fn check_parent_seq(seq: u64, has_parent: bool) -> Result<(), DecodeError> {
    if (seq == 0) == has_parent {
        return Err(DecodeError::ParentSeq { seq, has_parent });
    }
    Ok(())
}

/// Reads one block (without the leading format byte) and returns the rest of the input.
pub(crate) fn read_block(bytes: &[u8]) -> Result<(Block, &[u8]), DecodeError> {
    let (repr, rest): (BlockRepr<'_>, _) =
        postcard::take_from_bytes(bytes).map_err(|_| DecodeError::Malformed { what: "block" })?;
    check_parent_seq(repr.seq, repr.parent.is_some())?;
    let (body, body_len, body_hash) = repr.body.resolve()?;
    let header = Header {
        author: PublicKey(repr.author),
        parent: repr.parent.map(BlockId),
        seq: repr.seq,
        time: repr.time,
        body_len,
        body_hash,
    };
    Ok((
        Block::from_checked_parts(header, join_signature(repr.signature), body),
        rest,
    ))
}
