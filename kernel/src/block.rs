//! Blocks: a signed header that commits to its body by hash.
//!
//! The header is `{ author, parent, seq, time, body_len, body_hash }`; its encoding (a version
//! byte, then postcard) is hashed with blake3 to give the [`BlockId`], and the author signs the
//! id. Because the header commits to the body by hash, the body can be dropped (garbage
//! collection keeps the header so the chain has no gap) and the block stays verifiable.
//! When the body travels with the block its hash is recomputed, never sent.

pub(crate) mod encode;
mod set;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use encode::FORMAT_VERSION;
pub(crate) use encode::{read_block, write_block, BodyRepr};
pub(crate) use set::{BlockSet, IdMap};

use crate::identity::{Identity, PublicKey};

/// Hard ceiling on a body's size, whatever the configured limits say: bodies are counted in
/// a `u32` on the wire.
pub const MAX_BODY_BYTES: usize = u32::MAX as usize;

/// The id of a block: blake3 of its encoded header.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlockId(pub [u8; 32]);

/// Hashes the id's first 8 bytes: an id is already a blake3 output, so those are as uniform as
/// all 32. A pair of ids that share them costs 2^32 hashes, a hundred such ids about 2^63, so
/// with a keyed hasher (the kernel's maps are) an attacker cannot aim ids at one bucket. Equal
/// ids hash equally, as `Eq` requires.
impl std::hash::Hash for BlockId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

impl BlockId {
    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockId({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An ed25519 signature over a [`BlockId`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", hex::encode(&self.0[..8]))
    }
}

/// The signed part of a block.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// Who signed the block.
    pub author: PublicKey,
    /// The block before this one in its feed; `None` exactly for genesis (`seq == 0`).
    pub parent: Option<BlockId>,
    /// Height in the feed; genesis is 0.
    pub seq: u64,
    /// Milliseconds since the Unix epoch, by the author's clock; never earlier than the parent's.
    pub time: u64,
    /// Length of the body in bytes.
    pub body_len: u32,
    /// blake3 of the body.
    pub body_hash: [u8; 32],
}

impl Header {
    /// The id this header hashes to.
    pub fn id(&self) -> BlockId {
        let mut buf = [0u8; encode::MAX_HEADER_BYTES];
        let bytes = encode::write_header(self, &mut buf);
        BlockId(*blake3::hash(bytes).as_bytes())
    }
}

/// Why a block is invalid in itself: an *intrinsic* fault, the same verdict on every peer.
///
/// Only these keep a block out of the candidate set for good, and only these count against the
/// peer that sent it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The bytes are not a block of this format.
    #[error("malformed block: {0}")]
    Decode(#[from] DecodeError),
    /// The author's key is not a valid curve point.
    #[error("author key is not a valid ed25519 point")]
    BadKey,
    /// The author's key has small order; signatures by it prove nothing.
    #[error("author key is weak (small order)")]
    WeakKey,
    /// The signature does not verify under the strict rules.
    #[error("signature does not verify")]
    BadSignature,
    /// The body is larger than the configured limit.
    #[error("body of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The body's length.
        len: u64,
        /// The configured limit.
        max: u64,
    },
    /// The block is dated before its parent.
    #[error("time {time} is earlier than the parent's {parent_time}")]
    TimeBeforeParent {
        /// The block's time.
        time: u64,
        /// The parent's time.
        parent_time: u64,
    },
    /// The block's seq is not its parent's plus one.
    #[error("seq {seq} does not follow the parent's {parent_seq}")]
    SeqMismatch {
        /// The block's seq.
        seq: u64,
        /// The parent's seq.
        parent_seq: u64,
    },
    /// The body does not hash to the header's `body_hash` (or its length differs).
    #[error("body does not match the header's hash")]
    BodyMismatch,
    /// The parent was signed by someone else (the kernel keeps one feed per author).
    #[error("parent was signed by another author")]
    ForeignParent,
}

/// Why bytes failed to decode. Decoders never panic and never allocate from an untrusted length.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is empty.
    #[error("empty input")]
    Empty,
    /// The leading format byte is not one this version reads.
    #[error("unknown format version {0}")]
    Version(u8),
    /// The input ended early or a field is out of range.
    #[error("truncated or malformed {what}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
    },
    /// Bytes remain after the value.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// `seq` and `parent` disagree: genesis (seq 0) has no parent and every other block has one.
    #[error("seq {seq} with{} parent", if *has_parent { "" } else { "out" })]
    ParentSeq {
        /// The block's seq.
        seq: u64,
        /// Whether a parent was given.
        has_parent: bool,
    },
    /// A count exceeds its limit.
    #[error("{what}: {count} exceeds the limit of {max}")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// The count found.
        count: u64,
        /// The limit.
        max: u64,
    },
}

/// A block: header, signature and, unless garbage-collected, the body.
#[derive(Clone, PartialEq, Eq)]
pub struct Block {
    header: Header,
    id: BlockId,
    signature: Signature,
    body: Option<Vec<u8>>,
}

impl Block {
    /// Signs a new block by `identity`.
    ///
    /// `parent` is `(id, seq, time)` of the block before it, or `None` for genesis. The block's
    /// time is raised to the parent's if the clock went backwards, so the chain stays monotone.
    ///
    /// # Panics
    /// If `body` is longer than [`MAX_BODY_BYTES`] (4 GiB); configured limits are far lower.
    pub fn sign(
        identity: &Identity,
        parent: Option<(BlockId, u64, u64)>,
        time: u64,
        body: Vec<u8>,
    ) -> Self {
        let (parent, seq, time) = match parent {
            None => (None, 0, time),
            Some((id, seq, parent_time)) => (Some(id), seq + 1, time.max(parent_time)),
        };
        let header = Header {
            author: identity.public(),
            parent,
            seq,
            time,
            body_len: u32::try_from(body.len()).expect("body below MAX_BODY_BYTES"),
            body_hash: *blake3::hash(&body).as_bytes(),
        };
        let id = header.id();
        let signature = identity.sign(&id);
        Self {
            header,
            id,
            signature,
            body: Some(body),
        }
    }

    /// Assembles a block from parts. The body, if given, must match the header's length and
    /// hash; the signature is not checked here (see [`Block::verify`]).
    ///
    /// # Errors
    /// [`BlockError::BodyMismatch`] if the body does not hash to the header's `body_hash`.
    pub fn from_parts(
        header: Header,
        signature: Signature,
        body: Option<Vec<u8>>,
    ) -> Result<Self, BlockError> {
        if let Some(bytes) = &body {
            let len_matches = u32::try_from(bytes.len()) == Ok(header.body_len);
            if !len_matches || *blake3::hash(bytes).as_bytes() != header.body_hash {
                return Err(BlockError::BodyMismatch);
            }
        }
        Ok(Self::from_checked_parts(header, signature, body))
    }

    /// Assembles a block whose body is known to match the header (decoders hash it themselves).
    pub(crate) fn from_checked_parts(
        header: Header,
        signature: Signature,
        body: Option<Vec<u8>>,
    ) -> Self {
        let id = header.id();
        Self {
            header,
            id,
            signature,
            body,
        }
    }

    /// The block's id.
    pub fn id(&self) -> BlockId {
        self.id
    }
    /// The signed header.
    pub fn header(&self) -> &Header {
        &self.header
    }
    /// The author's key.
    pub fn author(&self) -> PublicKey {
        self.header.author
    }
    /// The parent's id, `None` for genesis.
    pub fn parent(&self) -> Option<BlockId> {
        self.header.parent
    }
    /// Height in the feed.
    pub fn seq(&self) -> u64 {
        self.header.seq
    }
    /// Milliseconds since the Unix epoch.
    pub fn time(&self) -> u64 {
        self.header.time
    }
    /// The signature over the id.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }
    /// The body, or `None` once garbage collection dropped it.
    pub fn body(&self) -> Option<&[u8]> {
        self.body.as_deref()
    }

    /// The same block without its body (what garbage collection keeps).
    pub fn pruned(&self) -> Self {
        Self {
            body: None,
            ..self.clone()
        }
    }

    /// Checks the signature with the strict rules (see [`PublicKey::verify`]). The body needs
    /// no check here: its hash is part of the signed header, and every constructor (decoding,
    /// signing, [`Block::from_parts`]) makes sure the body matches it.
    ///
    /// # Errors
    /// [`BlockError::BadKey`], [`BlockError::WeakKey`] or [`BlockError::BadSignature`].
    pub fn verify(&self) -> Result<(), BlockError> {
        self.header.author.verify(&self.id, &self.signature)
    }

    /// The structural rules the decoder applies, for blocks built another way
    /// ([`Block::from_parts`]): genesis, and only genesis, has no parent. Every way into the
    /// kernel checks them; a block that breaks them is invalid, never a panic.
    ///
    /// # Errors
    /// [`BlockError::Decode`] with [`DecodeError::ParentSeq`].
    pub fn check_structure(&self) -> Result<(), BlockError> {
        encode::check_parent_seq(self.header.seq, self.header.parent.is_some())?;
        Ok(())
    }

    /// A key that tells copies of a block apart even when they share a header: blake3 over
    /// the id and the signature. The id covers the header and, through the body hash, the body,
    /// so this is as discriminating as hashing the whole encoded block. Invalid blocks are
    /// remembered by this key, never by id alone, so a forged copy cannot shadow the honest one.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.id.0);
        hasher.update(&self.signature.0);
        *hasher.finalize().as_bytes()
    }

    /// The block's size as stored and sent, in bytes.
    pub fn encoded_len(&self) -> usize {
        self.encode().len()
    }

    /// Encodes the block: format byte, then postcard of author, parent, seq, time, signature
    /// and the body (or, once collected, its length and hash).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.body.as_ref().map_or(0, Vec::len));
        write_block(self, &mut out);
        out
    }

    /// Decodes one block, recomputing its body hash and id. Does not verify the signature.
    ///
    /// # Errors
    /// A [`DecodeError`] for bytes that are not exactly one block.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::Version(version));
        }
        let (block, rest) = read_block(rest)?;
        if !rest.is_empty() {
            return Err(DecodeError::Trailing(rest.len()));
        }
        Ok(block)
    }
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("id", &self.id)
            .field("author", &self.header.author)
            .field("seq", &self.header.seq)
            .field("time", &self.header.time)
            .field("body_len", &self.header.body_len)
            .field("pruned", &self.body.is_none())
            .finish()
    }
}
