//! The virtual network: what travels on a link, how big it is, and how long it takes.

use std::sync::Arc;

use blockend_kernel::sync::Message;
use blockend_kernel::Block;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::config::{Latency, Network};

/// Framing added to every message on the wire (length prefix, stream and protocol framing),
/// in bytes.
pub const FRAME_BYTES: usize = 16;

/// What one message on a link carries.
#[derive(Clone, Debug)]
pub enum Wire {
    /// A sync-protocol message, handled by `sync::Protocol` (passed decoded: the blocks stay
    /// shared between the peers' kernels).
    Sync(Message),
    /// The dissemination model's push: blocks, each with the hop count it arrives at.
    Push(Vec<(Arc<Block>, u16)>),
    /// Raw bytes (adversaries), decoded by the receiving protocol.
    Bytes(Arc<Vec<u8>>),
}

/// A varint's length in bytes.
fn varint(n: u64) -> usize {
    (64 - n.max(1).leading_zeros() as usize).div_ceil(7)
}

/// A block's size on the wire, without encoding it: the format byte, author, parent flag and
/// id, seq, time, body length and body, signature (what `Block::encode` writes).
pub fn block_bytes(block: &Block) -> usize {
    let body = block.header().body_len as usize;
    1 + 32
        + 1
        + if block.parent().is_some() { 32 } else { 0 }
        + varint(block.seq())
        + varint(block.time())
        + 64
        + 1
        + match block.body() {
            Some(_) => varint(body as u64) + body,
            None => varint(body as u64) + 32,
        }
}

/// Bytes the push model adds to each pushed block: its hop annotation (control, not block
/// bytes).
pub const PUSH_ITEM_BYTES: usize = 4;

/// Format byte and variant tag that open every sync message.
const MESSAGE_PREFIX: usize = 2;

/// Bytes on the wire by what they pay for. [`Bytes::total`] is [`Wire::bytes`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bytes {
    /// Encoded blocks, each with its length prefix in a `Blocks` message.
    pub blocks: u64,
    /// `Heads` messages, whole.
    pub heads: u64,
    /// `Want` and `WantBodies` messages, whole.
    pub wants: u64,
    /// Everything else: framing, push hop annotations, the header of a `Blocks` message
    /// (format byte, tag, count), adversaries' raw bytes.
    pub control: u64,
}

impl Bytes {
    /// The four parts together.
    pub fn total(&self) -> u64 {
        self.blocks + self.heads + self.wants + self.control
    }
}

impl std::ops::AddAssign for Bytes {
    fn add_assign(&mut self, other: Self) {
        self.blocks += other.blocks;
        self.heads += other.heads;
        self.wants += other.wants;
        self.control += other.control;
    }
}

impl Wire {
    /// Bytes on the wire, framing included.
    pub fn bytes(&self) -> usize {
        self.bytes_by_kind().total() as usize
    }

    /// Bytes on the wire by what they pay for (see [`Bytes`]); the parts sum to
    /// [`Wire::bytes`]. Framing is control on every message; a push's blocks are blocks and
    /// their hop annotations control; an adversary's raw bytes are control whatever they hold.
    /// The mesh model grafts and prunes without messages, so no bytes pay for mesh management.
    pub fn bytes_by_kind(&self) -> Bytes {
        let mut parts = Bytes {
            control: FRAME_BYTES as u64,
            ..Bytes::default()
        };
        match self {
            Wire::Push(blocks) => {
                parts.blocks = blocks.iter().map(|(b, _)| block_bytes(b) as u64).sum();
                parts.control += (PUSH_ITEM_BYTES * blocks.len()) as u64;
            }
            Wire::Bytes(raw) => parts.control += raw.len() as u64,
            // Every variant by name, so a new one is classed here before it compiles.
            Wire::Sync(message) => match message {
                Message::Blocks(blocks) => {
                    parts.blocks = blocks
                        .iter()
                        .map(|b| {
                            let len = block_bytes(b) as u64;
                            varint(len) as u64 + len
                        })
                        .sum();
                    parts.control += (MESSAGE_PREFIX + varint(blocks.len() as u64)) as u64;
                }
                Message::Heads(_) | Message::Reconcile(_) => {
                    parts.heads = message.encoded_len() as u64
                }
                Message::Want(_) | Message::WantBodies(_) => {
                    parts.wants = message.encoded_len() as u64
                }
            },
        }
        parts
    }
}

impl Latency {
    /// Draws one latency, in virtual microseconds.
    pub fn sample_us(&self, rng: &mut ChaCha8Rng) -> u64 {
        let ms = match *self {
            Latency::Constant { ms } => ms,
            Latency::Uniform { min_ms, max_ms } => {
                if max_ms > min_ms {
                    rng.gen_range(min_ms..max_ms)
                } else {
                    min_ms
                }
            }
            Latency::LogNormal { median_ms, sigma } => {
                // Box-Muller: one standard normal from two uniforms.
                let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
                let u2: f64 = rng.gen();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                median_ms * (sigma * z).exp()
            }
        };
        (ms.max(0.0) * 1_000.0) as u64
    }
}

impl Network {
    /// Microseconds a message of `bytes` occupies a link.
    pub fn transmit_us(&self, bytes: usize) -> u64 {
        match self.bandwidth_bytes_per_s {
            0 => 0,
            bw => (bytes as u64).saturating_mul(1_000_000) / bw,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockend_kernel::kernel::Head;
    use blockend_kernel::sync::Want;
    use blockend_kernel::Identity;

    #[test]
    fn block_bytes_matches_the_encoding() {
        let identity = Identity::from_secret([1; 32]);
        let genesis = Block::sign(
            &identity,
            None,
            1_700_000_000_000,
            b"{\"value\":1}".to_vec(),
        );
        let next = Block::sign(
            &identity,
            Some((genesis.id(), 0, genesis.time())),
            1_700_000_000_100,
            vec![7; 300],
        );
        for block in [&genesis, &next] {
            assert_eq!(block_bytes(block), block.encoded_len());
            assert_eq!(block_bytes(&block.pruned()), block.pruned().encoded_len());
        }
    }

    #[test]
    fn sync_sizes_match_the_encoding() {
        let identity = Identity::from_secret([2; 32]);
        let block = Arc::new(Block::sign(&identity, None, 5, vec![1, 2, 3]));
        let message = Message::Blocks(vec![block.clone(), block]);
        let wire = Wire::Sync(message.clone());
        let encoded = message.encode().len();
        assert_eq!(wire.bytes(), encoded + FRAME_BYTES);
    }

    #[test]
    fn every_wire_splits_its_bytes_into_parts_that_sum_to_the_total() {
        let identity = Identity::from_secret([3; 32]);
        let genesis = Arc::new(Block::sign(&identity, None, 5, vec![1, 2, 3]));
        let big = Arc::new(Block::sign(
            &identity,
            Some((genesis.id(), 0, 5)),
            6,
            vec![9; 400],
        ));
        let pruned = Arc::new(big.pruned());
        // 130 blocks: a count prefix of two bytes.
        let mut many = vec![genesis.clone(), big.clone(), pruned];
        many.extend((0..127u64).map(|i| Arc::new(Block::sign(&identity, None, i, vec![i as u8]))));
        let head = Head {
            author: identity.public(),
            seq: 300,
            id: big.id(),
        };
        let want = Want {
            author: identity.public(),
            from_seq: 200,
        };
        let messages = [
            Message::Heads(vec![head; 3]),
            Message::Want(vec![want; 2]),
            Message::WantBodies(vec![big.id(), genesis.id()]),
            Message::Blocks(Vec::new()),
            Message::Blocks(vec![genesis.clone()]),
            Message::Blocks(many.clone()),
        ];
        for message in messages {
            let wire = Wire::Sync(message.clone());
            let parts = wire.bytes_by_kind();
            let total = (message.encode().len() + FRAME_BYTES) as u64;
            assert_eq!(parts.total(), total, "{message:?}");
            assert_eq!(wire.bytes() as u64, total);
            let (blocks, heads, wants) = match &message {
                Message::Blocks(blocks) => {
                    // A block's share of a message: what one more block adds to its encoding.
                    let empty = Message::Blocks(Vec::new()).encode().len();
                    let items: usize = blocks
                        .iter()
                        .map(|b| Message::Blocks(vec![b.clone()]).encode().len() - empty)
                        .sum();
                    // Each block's encoding behind its length prefix (every block here is
                    // under 16 KiB: one or two bytes).
                    let prefixed: usize = blocks
                        .iter()
                        .map(|b| b.encode().len())
                        .map(|len| len + if len < 128 { 1 } else { 2 })
                        .sum();
                    assert_eq!(items, prefixed);
                    (items as u64, 0, 0)
                }
                Message::Heads(_) | Message::Reconcile(_) => (0, total - FRAME_BYTES as u64, 0),
                Message::Want(_) | Message::WantBodies(_) => (0, 0, total - FRAME_BYTES as u64),
            };
            assert_eq!(
                (parts.blocks, parts.heads, parts.wants),
                (blocks, heads, wants)
            );
        }
        let pushed: Vec<(Arc<Block>, u16)> = many.iter().map(|b| (b.clone(), 3)).collect();
        let push = Wire::Push(pushed);
        let parts = push.bytes_by_kind();
        let encoded: usize = many.iter().map(|b| b.encode().len()).sum();
        assert_eq!(parts.blocks, encoded as u64);
        assert_eq!(
            parts.control,
            (FRAME_BYTES + PUSH_ITEM_BYTES * many.len()) as u64
        );
        assert_eq!(parts.total(), push.bytes() as u64);
        let raw = Wire::Bytes(Arc::new(vec![0xff; 77]));
        assert_eq!(
            raw.bytes_by_kind(),
            Bytes {
                control: 77 + FRAME_BYTES as u64,
                ..Bytes::default()
            }
        );
    }
}
