//! The one-buffer form of a feed.
//!
//! ```text
//! version | count: varint | first block (as in a block, without its version byte)
//!         | (count - 1) x entry
//! entry:  author: option<[32]> (none = same as the block before) | time delta: varint
//!         | signature[64] | body (inline or pruned, as in a block)
//! ```
//!
//! Parent and seq are implied by the block before, and the author mostly repeats, so a block
//! with a 32-byte body costs about 69 bytes of overhead (picofeed spends 166).

use serde::{Deserialize, Serialize};

use super::Feed;
use crate::block::encode::{append, join_signature, split_signature};
use crate::block::{
    read_block, write_block, Block, BlockId, BodyRepr, DecodeError, Header, FORMAT_VERSION,
};
use crate::identity::PublicKey;

/// The smallest encoded entry: tag + delta + signature + body tag + length.
const MIN_ENTRY_BYTES: usize = 1 + 1 + 64 + 1 + 1;

#[derive(Serialize, Deserialize)]
struct EntryRepr<'a> {
    author: Option<[u8; 32]>,
    time_delta: u64,
    signature: ([u8; 32], [u8; 32]),
    #[serde(borrow)]
    body: BodyRepr<'a>,
}

pub(super) fn write_feed(feed: &Feed) -> Vec<u8> {
    let body_bytes: usize = feed
        .blocks
        .iter()
        .filter_map(Block::body)
        .map(<[u8]>::len)
        .sum();
    let mut out = Vec::with_capacity(16 + body_bytes + 72 * feed.len() + 100);
    out.push(FORMAT_VERSION);
    append(&(feed.len() as u64), &mut out);
    let mut prev: Option<&Block> = None;
    for block in &feed.blocks {
        match prev {
            None => {
                // The block writer leads with its own version byte; the feed already has one.
                let start = out.len();
                write_block(block, &mut out);
                out.remove(start);
            }
            Some(p) => {
                let entry = EntryRepr {
                    author: (block.author() != p.author()).then_some(block.author().0),
                    time_delta: block.time() - p.time(),
                    signature: split_signature(block.signature()),
                    body: BodyRepr::of(block.body(), block.header()),
                };
                append(&entry, &mut out);
            }
        }
        prev = Some(block);
    }
    out
}

pub(super) fn read_feed(bytes: &[u8]) -> Result<Feed, DecodeError> {
    let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::Version(version));
    }
    let (count, mut rest): (u64, _) =
        postcard::take_from_bytes(rest).map_err(|_| DecodeError::Malformed {
            what: "feed length",
        })?;
    if count == 0 {
        return if rest.is_empty() {
            Ok(Feed::new())
        } else {
            Err(DecodeError::Trailing(rest.len()))
        };
    }
    // Never trust the count for allocation: each entry takes at least MIN_ENTRY_BYTES.
    let possible = rest.len() / MIN_ENTRY_BYTES + 1;
    if count > possible as u64 {
        return Err(DecodeError::Malformed {
            what: "feed length",
        });
    }
    let mut blocks = Vec::with_capacity(count as usize);
    let (first, after) = read_block(rest)?;
    rest = after;
    blocks.push(first);
    for _ in 1..count {
        let (entry, after): (EntryRepr<'_>, _) = postcard::take_from_bytes(rest)
            .map_err(|_| DecodeError::Malformed { what: "feed entry" })?;
        rest = after;
        let prev: &Block = blocks.last().expect("feed holds its first block");
        let (body, body_len, body_hash) = entry.body.resolve()?;
        let header = Header {
            author: entry.author.map_or(prev.author(), PublicKey),
            parent: Some(BlockId(prev.id().0)),
            seq: prev
                .seq()
                .checked_add(1)
                .ok_or(DecodeError::Malformed { what: "feed seq" })?,
            time: prev
                .time()
                .checked_add(entry.time_delta)
                .ok_or(DecodeError::Malformed { what: "feed time" })?,
            body_len,
            body_hash,
        };
        blocks.push(Block::from_checked_parts(
            header,
            join_signature(entry.signature),
            body,
        ));
    }
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(Feed { blocks })
}
