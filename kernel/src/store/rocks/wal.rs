//! A read-only reader of RocksDB's write-ahead log, to say what a damaged log cost.
//!
//! RocksDB, asked to recover up to the damage, stops at the first bad record and says nothing
//! about what came after it. This reader walks every `db/*.log` file record by record
//! (32 KiB blocks of `crc32c | length | type | payload` records), finds the first damaged
//! record, skips to the next record whose checksum holds, and collects the blocks written
//! after the damage, so open can say how much is cut off and repair can say which feeds lost
//! which blocks. It never writes.
//!
//! Format: RocksDB `db/log_format.h` (records) and `db/write_batch.cc` (the batch inside a
//! record: sequence, count, then tagged entries).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::block::{Block, BlockId};
use crate::identity::PublicKey;
use crate::store::{Access, StoreError};

const BLOCK: usize = 32 * 1024;
const HEADER: usize = 7;
const FULL: u8 = 1;
const FIRST: u8 = 2;
const MIDDLE: u8 = 3;
const LAST: u8 = 4;

/// The first damaged record of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Damage {
    /// The log file.
    pub file: PathBuf,
    /// The damaged record's first byte.
    pub offset: u64,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// What the log holds, as far as it can be read.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// The first damaged record, if any (a record cut off at the very end of a file is a write
    /// a crash interrupted, never acknowledged, and not damage).
    pub damage: Option<Damage>,
    /// Blocks written after the damage and not deleted since: what a recovery up to the damage
    /// loses (blocks inside the damaged record itself cannot be read).
    pub after: BTreeMap<BlockId, Block>,
    /// The highest seq of each feed in any readable record, before or after the damage: of
    /// its blocks and of its head records.
    pub seen: BTreeMap<PublicKey, u64>,
    /// The feeds with a block or head record in a damaged record, as far as its bytes still
    /// parse (best effort: a damaged record may name no feed), and the highest seq found.
    pub suspects: BTreeMap<PublicKey, u64>,
}

/// Reads every `*.log` file in `db`, oldest first. A missing `db` holds no logs.
///
/// # Errors
/// The failure to list `db` or read a log file, naming it ([`StoreError::PermissionDenied`]
/// when refused, else [`StoreError::Io`]).
pub(super) fn scan(db: &Path) -> Result<Scan, StoreError> {
    let mut logs: Vec<(u64, PathBuf)> = Vec::new();
    let entries = match fs::read_dir(db) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Scan::default()),
        Err(e) => return Err(StoreError::io(db, Access::Read, e)),
    };
    for entry in entries {
        let path = entry
            .map_err(|e| StoreError::io(db, Access::Read, e))?
            .path();
        if path.extension().is_some_and(|e| e == "log") {
            if let Some(number) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
            {
                logs.push((number, path));
            }
        }
    }
    logs.sort();
    let mut scan = Scan::default();
    let mut budget = RESYNC_BUDGET;
    let newest = logs.len().saturating_sub(1);
    for (i, (_, path)) in logs.iter().enumerate() {
        let data = fs::read(path).map_err(|e| StoreError::io(path, Access::Read, e))?;
        read_log(path, &data, i == newest, &mut budget, &mut scan);
    }
    Ok(scan)
}

/// Whether RocksDB reads `kind` as a record of a log that is not recycled (this store never
/// recycles logs): full, first, middle, last, set-compression, timestamp-size and
/// predecessor-info records (`db/log_format.h`). Any other type, recyclable ones included,
/// is damage: RocksDB would read it with another header, skip it or drop the log.
fn valid_kind(kind: u8) -> bool {
    matches!(kind, FULL | FIRST | MIDDLE | LAST | 9 | 10 | 130)
}

/// The end of the 32 KiB block holding `pos` (records never cross one).
fn block_end_of(pos: usize) -> usize {
    (pos / BLOCK + 1) * BLOCK
}

/// Bytes of checksum the resync after damage may compute over a whole scan: past it, the
/// scan only reads records at block starts, so a log of garbage costs a bounded time.
const RESYNC_BUDGET: usize = 16 << 20;

/// The first offset in `from..to` (all inside one block) where a whole valid record starts,
/// spending at most `budget` bytes of checksum.
fn resync(data: &[u8], from: usize, to: usize, budget: &mut usize) -> Option<usize> {
    let block_end = block_end_of(from).min(data.len());
    if *budget == 0 {
        return None;
    }
    (from..to.min(block_end.saturating_sub(HEADER - 1))).find(|&at| {
        if *budget == 0 || !valid_kind(data[at + 6]) {
            return false;
        }
        let len = usize::from(u16::from_le_bytes([data[at + 4], data[at + 5]]));
        if at + HEADER + len > block_end {
            return false;
        }
        *budget = budget.saturating_sub(len + 1);
        record(data, at, block_end).is_ok()
    })
}

/// Whether any whole valid record starts after `pos` in `data`. Only asked of a record in
/// the file's last block (a torn write), so at most 32 KiB are searched, without a budget.
fn any_record_after(data: &[u8], pos: usize) -> bool {
    let mut budget = usize::MAX;
    let mut at = pos + 1;
    while at < data.len() {
        let end = block_end_of(at).min(data.len());
        if resync(data, at, end, &mut budget).is_some() {
            return true;
        }
        at = end;
    }
    false
}

fn read_log(path: &Path, data: &[u8], newest: bool, budget: &mut usize, scan: &mut Scan) {
    let mut pos = 0;
    let mut fragments: Option<Vec<u8>> = None;
    while pos < data.len() {
        let block_end = block_end_of(pos).min(data.len());
        let rest = &data[pos..block_end];
        let trailer = block_end - pos < HEADER;
        if rest.iter().all(|&b| b == 0) {
            // A block's zero trailer, or preallocated space the writer has not reached.
            pos = block_end;
            continue;
        }
        let result = if trailer {
            // Non-zero bytes too few for a header: a header cut off by the end of the file,
            // or damage.
            Err("truncated header")
        } else {
            record(data, pos, block_end)
        };
        let (kind, payload) = match result {
            Ok(record) => record,
            Err(_) if newest && torn(data, pos) && !any_record_after(data, pos) => {
                // A write a crash cut off: never acknowledged, RocksDB drops it too.
                break;
            }
            Err(reason) => {
                if scan.damage.is_none() {
                    scan.damage = Some(Damage {
                        file: path.to_owned(),
                        offset: pos as u64,
                        reason,
                    });
                }
                // Best effort: the writes the damaged record may hold, to name their feeds.
                let mut partial = fragments.take().unwrap_or_default();
                if !trailer {
                    let len = usize::from(u16::from_le_bytes([data[pos + 4], data[pos + 5]]));
                    partial.extend_from_slice(
                        &data[pos + HEADER..(pos + HEADER + len).min(block_end)],
                    );
                }
                suspect(&partial, scan);
                pos = resync(data, pos + 1, block_end, budget).unwrap_or(block_end);
                continue;
            }
        };
        pos += HEADER + payload.len();
        match kind {
            FULL => apply(payload, scan),
            FIRST => fragments = Some(payload.to_vec()),
            MIDDLE | LAST => {
                if let Some(mut batch) = fragments.take() {
                    batch.extend_from_slice(payload);
                    if kind == LAST {
                        apply(&batch, scan);
                    } else {
                        fragments = Some(batch);
                    }
                }
            }
            // Compression, timestamp-size and predecessor records carry no writes.
            _ => {}
        }
    }
}

/// The record at `pos`, if its type is one RocksDB reads, its length fits its block and its
/// checksum holds.
fn record(data: &[u8], pos: usize, block_end: usize) -> Result<(u8, &[u8]), &'static str> {
    let header = data.get(pos..pos + HEADER).ok_or("truncated header")?;
    let stored = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let len = usize::from(u16::from_le_bytes([header[4], header[5]]));
    let kind = header[6];
    if !valid_kind(kind) {
        return Err("unknown record type");
    }
    if pos + HEADER + len > block_end {
        return Err("bad record length");
    }
    let payload = &data[pos + HEADER..pos + HEADER + len];
    if unmask(stored) != crc32c(&[&[kind], payload]) {
        return Err("checksum mismatch");
    }
    Ok((kind, payload))
}

/// Whether the record at `pos` is a write cut off by the end of the file: its header is cut
/// off, or it is of a valid type and its length fits its block but runs past the file's end.
fn torn(data: &[u8], pos: usize) -> bool {
    let Some(header) = data.get(pos..pos + HEADER) else {
        return true;
    };
    let end = pos + HEADER + usize::from(u16::from_le_bytes([header[4], header[5]]));
    valid_kind(header[6]) && end > data.len() && end <= block_end_of(pos)
}

/// Reads what it can of the write batch bytes of a damaged record into `scan.suspects`.
fn suspect(batch: &[u8], scan: &mut Scan) {
    let mut found = Scan {
        damage: scan.damage.clone(),
        ..Scan::default()
    };
    apply(batch, &mut found);
    for (author, seq) in found.seen {
        let head = scan.suspects.entry(author).or_default();
        *head = (*head).max(seq);
    }
}

/// Applies one write batch's block puts and deletes to `scan`.
fn apply(batch: &[u8], scan: &mut Scan) {
    let Some(mut rest) = batch.get(12..) else {
        return;
    };
    let damaged = scan.damage.is_some();
    while let Some((&tag, tail)) = rest.split_first() {
        rest = tail;
        let entry = match tag {
            // value, merge (default family / a named family)
            0x1 | 0x2 => slices(&mut rest, 2),
            0x5 | 0x6 => varint(&mut rest).and_then(|_| slices(&mut rest, 2)),
            // deletion, single deletion
            0x0 | 0x7 => slices(&mut rest, 1),
            0x4 | 0x8 => varint(&mut rest).and_then(|_| slices(&mut rest, 1)),
            // range deletion
            0xF => slices(&mut rest, 2),
            0xE => varint(&mut rest).and_then(|_| slices(&mut rest, 2)),
            // log data, noop
            0x3 => slices(&mut rest, 1).map(|_| Vec::new()),
            0xD => Some(Vec::new()),
            // Anything else is not written by this store; stop reading the batch.
            _ => None,
        };
        let Some(entry) = entry else {
            return;
        };
        match (tag, entry.as_slice()) {
            (0x1 | 0x5, [key, value]) if key.len() == 32 => {
                // Only the blocks family holds a key that is the id of its decoded value.
                if let Ok(block) = Block::decode(value) {
                    if block.id().0[..] == key[..] {
                        let seen = scan.seen.entry(block.author()).or_default();
                        *seen = (*seen).max(block.seq());
                        if damaged {
                            scan.after.insert(block.id(), block);
                        }
                    }
                } else if let (Ok(author), Ok(seq)) = (
                    <[u8; 32]>::try_from(*key),
                    <[u8; 8]>::try_from(&value[..8.min(value.len())]),
                ) {
                    // A head record: author -> seq | id.
                    if value.len() == 40 {
                        let seen = scan.seen.entry(PublicKey(author)).or_default();
                        *seen = (*seen).max(u64::from_be_bytes(seq));
                    }
                }
            }
            (0x0 | 0x4 | 0x7 | 0x8, [key]) if key.len() == 32 => {
                let mut id = [0u8; 32];
                id.copy_from_slice(key);
                scan.after.remove(&BlockId(id));
            }
            _ => {}
        }
    }
}

fn varint(rest: &mut &[u8]) -> Option<u32> {
    let mut value = 0u32;
    for shift in (0..35).step_by(7) {
        let (&byte, tail) = rest.split_first()?;
        *rest = tail;
        value |= u32::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// `n` length-prefixed slices.
fn slices<'a>(rest: &mut &'a [u8], n: usize) -> Option<Vec<&'a [u8]>> {
    (0..n)
        .map(|_| {
            let len = varint(rest)? as usize;
            let (slice, tail) = (rest.get(..len)?, rest.get(len..)?);
            *rest = tail;
            Some(slice)
        })
        .collect()
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC-32C (Castagnoli) of the concatenated parts.
fn crc32c(parts: &[&[u8]]) -> u32 {
    let mut crc = !0u32;
    for part in parts {
        for &byte in *part {
            crc = CRC_TABLE[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
        }
    }
    !crc
}

/// RocksDB stores record checksums masked (rotated and offset), `util/crc32c.h`.
fn unmask(masked: u32) -> u32 {
    masked.wrapping_sub(0xa282_ead8).rotate_left(15)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::Feed;
    use crate::identity::Identity;

    fn mask(crc: u32) -> u32 {
        crc.rotate_right(15).wrapping_add(0xa282_ead8)
    }

    fn physical(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = mask(crc32c(&[&[kind], payload])).to_le_bytes().to_vec();
        out.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        out.push(kind);
        out.extend_from_slice(payload);
        out
    }

    /// A write batch putting `block` into column family 1.
    fn put(seq: u64, block: &Block) -> Vec<u8> {
        let mut out = seq.to_le_bytes().to_vec();
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&[0x5, 1, 32]);
        out.extend_from_slice(&block.id().0);
        let value = block.encode();
        let mut len = value.len();
        while len >= 0x80 {
            out.push(len as u8 | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(&value);
        out
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(&[b"123456789"]), 0xe306_9283);
        assert_eq!(unmask(mask(0x1234_5678)), 0x1234_5678);
    }

    #[test]
    fn blocks_after_a_damaged_record_are_found_and_a_torn_tail_is_not_damage() {
        let identity = Identity::from_secret([7; 32]);
        let mut feed = Feed::new();
        let blocks: Vec<Block> = (0..4u8)
            .map(|i| feed.append(&identity, vec![i], 1).clone())
            .collect();
        let mut log = Vec::new();
        let mut starts = Vec::new();
        for (seq, block) in blocks.iter().enumerate() {
            starts.push(log.len());
            log.extend(physical(FULL, &put(seq as u64 + 1, block)));
        }
        let dir = Path::new("000004.log");

        let mut clean = Scan::default();
        read_log(dir, &log, true, &mut { RESYNC_BUDGET }, &mut clean);
        assert_eq!(clean.damage, None);
        assert!(clean.after.is_empty());
        assert_eq!(clean.seen[&identity.public()], 3);

        let mut torn = Scan::default();
        read_log(
            dir,
            &log[..log.len() - 5],
            true,
            &mut { RESYNC_BUDGET },
            &mut torn,
        );
        assert_eq!(
            torn.damage, None,
            "a cut-off last record is an interrupted write"
        );
        assert_eq!(torn.seen[&identity.public()], 2);

        log[starts[1] + HEADER + 20] ^= 0xff;
        let mut damaged = Scan::default();
        read_log(dir, &log, true, &mut { RESYNC_BUDGET }, &mut damaged);
        let damage = damaged.damage.expect("damage found");
        assert_eq!(damage.offset, starts[1] as u64);
        assert_eq!(damage.reason, "checksum mismatch");
        let mut after: Vec<u64> = damaged.after.values().map(Block::seq).collect();
        after.sort();
        assert_eq!(
            after,
            vec![2, 3],
            "the records after the damaged one are read"
        );
        assert_eq!(damaged.seen[&identity.public()], 3);
    }

    #[test]
    fn a_damaged_header_is_damage_even_at_the_end_and_names_the_record_feed() {
        let identity = Identity::from_secret([7; 32]);
        let mut feed = Feed::new();
        let blocks: Vec<Block> = (0..3u8)
            .map(|i| feed.append(&identity, vec![i], 1).clone())
            .collect();
        let mut log = Vec::new();
        let mut starts = Vec::new();
        for (seq, block) in blocks.iter().enumerate() {
            starts.push(log.len());
            log.extend(physical(FULL, &put(seq as u64 + 1, block)));
        }
        let path = Path::new("000004.log");
        let read = |log: &[u8], newest: bool| {
            let mut scan = Scan::default();
            read_log(path, log, newest, &mut { RESYNC_BUDGET }, &mut scan);
            scan
        };

        // A length that runs past the end, with a valid record after it: not a torn tail.
        let mut long = log.clone();
        long[starts[1] + 5] ^= 0x80;
        let scan = read(&long, true);
        assert_eq!(scan.damage.map(|d| d.offset), Some(starts[1] as u64));
        assert_eq!(scan.after.len(), 1);
        // The damaged record's payload still parses: its feed is named.
        assert_eq!(scan.suspects.get(&identity.public()), Some(&1));

        // A type RocksDB does not know, or reads with a recycled header, is damage.
        for kind in [0, 5, 11, 0x80, 131, 0xff] {
            let mut typed = log.clone();
            typed[starts[1] + 6] = kind;
            let damage = read(&typed, true).damage.expect("damage");
            assert_eq!(damage.offset, starts[1] as u64, "type {kind}");
        }

        // A cut-off last record is a torn tail only in the newest log.
        let cut = &log[..log.len() - 5];
        assert_eq!(read(cut, true).damage, None);
        assert_eq!(
            read(cut, false).damage.map(|d| d.offset),
            Some(starts[2] as u64)
        );
    }
}
