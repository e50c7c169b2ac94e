//! Sync messages and their wire form: the format byte, then postcard.
//!
//! ```text
//! message: version | tag: varint | payload
//!   0 Heads  : count | (author[32] | seq | id[32])*
//!   1 Want   : count | (author[32] | from_seq)*
//!   2 Blocks : count | (len | encoded block)*
//! ```

use std::sync::Arc;

use serde::{Deserialize, Serialize};

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
    /// Blocks: an answer to a `Want`, or a push of newly accepted blocks.
    Blocks(Vec<Arc<Block>>),
}

/// Size caps every decoder applies before it allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest message in bytes.
    pub max_message_bytes: usize,
    /// Most blocks in one message.
    pub max_blocks: usize,
    /// Most heads in one message.
    pub max_heads: usize,
    /// Most wants in one message.
    pub max_wants: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 4 * 1024 * 1024,
            max_blocks: 512,
            max_heads: 4096,
            max_wants: 4096,
        }
    }
}

#[derive(Serialize, Deserialize)]
enum Repr<'a> {
    Heads(Vec<([u8; 32], u64, [u8; 32])>),
    Want(Vec<Want>),
    #[serde(borrow)]
    Blocks(Vec<&'a [u8]>),
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

impl Message {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT_VERSION];
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
                out.reserve(encoded.iter().map(|e| e.len() + 3).sum());
                postcard::to_extend(&repr, out).expect("Vec write")
            }
        }
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

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
}
