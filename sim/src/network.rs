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

impl Wire {
    /// Bytes on the wire, framing included.
    pub fn bytes(&self) -> usize {
        FRAME_BYTES
            + match self {
                Wire::Sync(message) => message.encoded_len(),
                Wire::Push(blocks) => blocks.iter().map(|(b, _)| block_bytes(b) + 4).sum(),
                Wire::Bytes(bytes) => bytes.len(),
            }
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
}
