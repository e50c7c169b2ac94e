//! Repairing a damaged store: keep every block that still links to its feed, set the other
//! readable blocks aside, say what was lost, and leave a record of it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rocksdb::{DBRecoveryMode, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use super::{
    backend_error, check_marker, db_options, descriptors, io, open_db, open_waiting, wal,
    RocksConfig, RocksStore, CF_BLOCKS, CF_HEADS, CF_META, FAMILIES, REPAIRED,
};
use crate::block::{Block, BlockId};
use crate::identity::PublicKey;
use crate::store::{Access, StoreError};

/// The repair record's format, its first byte.
const RECORD_VERSION: u8 = 1;
/// Where a repair puts what it does not keep, inside the store's directory.
const LOST: &str = "lost";

/// A feed that lost its newest blocks in a repair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FeedLoss {
    /// The feed's author.
    pub author: PublicKey,
    /// The highest seq the store still holds; `None` if it holds none of the feed.
    pub kept: Option<u64>,
    /// The highest seq the store held before, as far as can be read: of its readable blocks,
    /// of its record of each feed's newest block, and of an earlier repair's record. Blocks
    /// inside the damaged part cannot be read, so the feed may have reached further; after
    /// damage to a write-ahead log ([`RepairReport::damaged_log`] is `Some`), **every** feed
    /// may have, this one included, even where `before` equals `kept`.
    pub before: u64,
}

/// What [`RocksStore::repair`] found, kept and lost.
///
/// A repair that found damage stores this record in the store; [`RocksStore::last_repair`]
/// reads it back, so a node can fetch the lost blocks of its own feed from peers before it
/// writes to it again (writing first would fork the feed at the first lost seq).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RepairReport {
    /// The store's directory.
    #[serde(skip)]
    pub path: PathBuf,
    /// When, in seconds since the Unix epoch.
    pub at: u64,
    /// The damaged write-ahead log, by file name; a copy of every log as it was is in the
    /// store's `lost/` directory. `None` when no log was damaged.
    pub damaged_log: Option<String>,
    /// Where in `damaged_log` the damage starts.
    pub damaged_at: Option<u64>,
    /// Whether RocksDB's repairer rebuilt the database from its table files (damage outside
    /// the logs; it moves a table file it cannot read whole to `db/lost/`, after this repair
    /// read every block it could from it).
    pub rebuilt: bool,
    /// The blocks the store holds after the repair.
    pub blocks_kept: usize,
    /// Readable blocks the repair could not keep: written after the damage, or cut off from
    /// their feed by it (keeping them would leave a gap the kernel cannot index). They are in
    /// [`RepairReport::lost_blocks`].
    pub blocks_lost: usize,
    /// Block records that did not decode and were removed.
    pub records_dropped: usize,
    /// The file of the blocks counted in `blocks_lost`, if any.
    pub lost_file: Option<PathBuf>,
    /// The feeds that lost their newest blocks, and, best effort, the feeds that may have:
    /// those with a block or head record in the damaged log record, as far as its bytes
    /// still parse, and those with kept blocks but no record of their newest block. A
    /// damaged log record may name no feed, so after damage to a log
    /// ([`RepairReport::damaged_log`] is `Some`) any feed, listed or not, may have reached
    /// further than its [`FeedLoss::before`].
    pub feeds: Vec<FeedLoss>,
}

impl RepairReport {
    /// Whether the repair found anything wrong.
    pub fn found_damage(&self) -> bool {
        self.damaged_log.is_some() || self.rebuilt || self.records_dropped > 0
    }

    /// How many blocks the store held before, as far as can be read: kept plus lost.
    pub fn blocks_before(&self) -> usize {
        self.blocks_kept + self.blocks_lost
    }

    /// The loss of `author`'s feed, if it lost blocks.
    pub fn feed(&self, author: &PublicKey) -> Option<&FeedLoss> {
        self.feeds.iter().find(|f| f.author == *author)
    }

    /// The readable blocks the repair could not keep, to offer the kernel again once the
    /// blocks they follow are back from peers.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the file cannot be read, [`StoreError::Corrupt`] if it does not
    /// decode.
    pub fn lost_blocks(&self) -> Result<Vec<Block>, StoreError> {
        let Some(path) = &self.lost_file else {
            return Ok(Vec::new());
        };
        let bytes = fs::read(path).map_err(|e| io(path, Access::Read, e))?;
        let corrupt = |reason: String| StoreError::Corrupt {
            key: path.display().to_string(),
            reason,
        };
        let mut rest = &bytes[..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let (len, tail) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| corrupt("a truncated length".into()))?;
            let len = u32::from_be_bytes(*len) as usize;
            let block = tail
                .get(..len)
                .ok_or_else(|| corrupt("a truncated block".into()))?;
            let block = Block::decode(block).map_err(|e| corrupt(e.to_string()))?;
            // The file is not checksummed: a block is its own check.
            if intact(&block) {
                out.push(block);
            }
            rest = &tail[len..];
        }
        Ok(out)
    }
}

impl fmt::Display for RepairReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        if !self.found_damage() {
            return write!(
                f,
                "{path}: nothing to repair: {} blocks, all intact",
                self.blocks_kept
            );
        }
        write!(f, "{path}: repaired: kept {} blocks", self.blocks_kept)?;
        if let (Some(log), Some(at)) = (&self.damaged_log, self.damaged_at) {
            write!(f, "; db/{log} was damaged at byte {at}")?;
        }
        if self.rebuilt {
            f.write_str("; rebuilt the database from its table files")?;
        }
        if self.blocks_lost > 0 {
            write!(f, "; set aside {} readable blocks", self.blocks_lost)?;
            if let Some(file) = &self.lost_file {
                write!(f, " in {}", file.display())?;
            }
        }
        if self.records_dropped > 0 {
            write!(f, "; dropped {} undecodable blocks", self.records_dropped)?;
        }
        if !self.feeds.is_empty() {
            match self.feeds.len() {
                1 => f.write_str("; 1 feed lost blocks:")?,
                n => write!(f, "; {n} feeds lost blocks:")?,
            }
            for (i, feed) in self.feeds.iter().take(3).enumerate() {
                let from = feed.kept.map_or(0, |kept| kept + 1);
                let author = feed.author.to_hex();
                let sep = if i == 0 { " " } else { ", " };
                if from > feed.before {
                    // Named by the damaged record only: how far it reached is unknown.
                    write!(f, "{sep}{} seq {from}.. (maybe)", &author[..16])?;
                } else {
                    write!(f, "{sep}{} seq {from}..={}", &author[..16], feed.before)?;
                }
            }
            if self.feeds.len() > 3 {
                write!(f, " and {} more", self.feeds.len() - 3)?;
            }
            f.write_str("; fetch them from peers before writing to the own feed")?;
        }
        Ok(())
    }
}

/// Whether `block` is whole: signed by its author and well-formed. Its id hashes its header
/// alone, so a block read without checksums that decodes with the right id may still have a
/// damaged signature or body.
fn intact(block: &Block) -> bool {
    block.verify().is_ok() && block.check_structure().is_ok()
}

/// Where a block sits in its feed.
#[derive(Clone, Copy)]
struct Link {
    author: PublicKey,
    seq: u64,
    parent: Option<BlockId>,
}

impl From<&Block> for Link {
    fn from(block: &Block) -> Self {
        Link {
            author: block.author(),
            seq: block.seq(),
            parent: block.parent(),
        }
    }
}

/// What a database holds, read through every column family so a damaged table fails here.
struct Survey {
    blocks: BTreeMap<BlockId, Link>,
    /// The heads family: the newest block of each feed as last committed (ahead of the
    /// blocks when a table file was lost).
    committed_heads: BTreeMap<PublicKey, u64>,
    undecodable: Vec<Box<[u8]>>,
    record: Option<RepairReport>,
}

fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name)
        .expect("every column family is opened with the database")
}

fn survey(dir: &Path, db: &DB) -> Result<Survey, StoreError> {
    let mut survey = Survey {
        blocks: BTreeMap::new(),
        committed_heads: BTreeMap::new(),
        undecodable: Vec::new(),
        record: None,
    };
    for item in db.iterator_cf(cf(db, CF_BLOCKS), IteratorMode::Start) {
        let (key, value) = item.map_err(|e| backend_error(dir, e))?;
        match Block::decode(&value) {
            Ok(block) if block.id().0[..] == key[..] => {
                survey.blocks.insert(block.id(), Link::from(&block));
            }
            _ => survey.undecodable.push(key),
        }
    }
    for name in FAMILIES.iter().filter(|name| **name != CF_BLOCKS) {
        for item in db.iterator_cf(cf(db, name), IteratorMode::Start) {
            let (key, value) = item.map_err(|e| backend_error(dir, e))?;
            if *name == CF_HEADS {
                if let (Ok(author), Some(seq)) = (<[u8; 32]>::try_from(&key[..]), value.get(..8)) {
                    let seq = u64::from_be_bytes(seq.try_into().expect("8 bytes"));
                    survey.committed_heads.insert(PublicKey(author), seq);
                }
            }
        }
    }
    survey.record = db
        .get_cf(cf(db, CF_META), REPAIRED)
        .map_err(|e| backend_error(dir, e))?
        .and_then(|bytes| decode_record(&bytes));
    Ok(survey)
}

/// Reads, without checksums, every block of a database that fails its checksums, before
/// RocksDB's repairer sets aside each damaged table file whole. A block is its own check: it
/// is taken only if it decodes and its id is its key. Past a part that does not read, the
/// reader seeks ever further (keys are uniform ids) until it reads again.
fn salvage(options: &Options, db_dir: &Path) -> BTreeMap<BlockId, Block> {
    let mut out = BTreeMap::new();
    let mut options = options.clone();
    options.set_paranoid_checks(false);
    let Ok(db) = DB::open_cf_descriptors_read_only(&options, db_dir, descriptors(), false) else {
        return out;
    };
    let mut read = ReadOptions::default();
    read.set_verify_checksums(false);
    read.fill_cache(false);
    let mut iter = db.raw_iterator_cf_opt(cf(&db, CF_BLOCKS), read);
    iter.seek_to_first();
    let mut last = [0u8; 32];
    // Each unreadable stretch costs at most 256 seeks; a wrecked file gives up eventually.
    for _ in 0..1_000 {
        while let Some((key, value)) = iter.item() {
            if let (Ok(key), Ok(block)) = (<[u8; 32]>::try_from(key), Block::decode(value)) {
                if block.id().0 == key && intact(&block) {
                    out.insert(block.id(), block);
                }
                last = key;
            }
            iter.next();
        }
        if iter.status().is_ok() {
            break;
        }
        let resumed = (0..256).rev().any(|bit| {
            let Some(target) = add_bit(&last, bit) else {
                return false;
            };
            iter.seek(target);
            iter.valid() || iter.status().is_ok()
        });
        if !resumed {
            break;
        }
    }
    out
}

/// `key + 2^(255 - bit)` as a 256-bit big-endian number, `None` past the end.
fn add_bit(key: &[u8; 32], bit: usize) -> Option<[u8; 32]> {
    let mut out = *key;
    let (mut byte, mut carry) = (bit / 8, 0x80u16 >> (bit % 8));
    loop {
        let sum = u16::from(out[byte]) + carry;
        out[byte] = sum as u8;
        carry = sum >> 8;
        if carry == 0 {
            return Some(out);
        }
        byte = byte.checked_sub(1)?;
    }
}

/// The blocks of `candidates` that link to the start of their feed, as the kernel indexes
/// them on open: parents first.
fn linked(candidates: &BTreeMap<BlockId, Link>) -> BTreeSet<BlockId> {
    let mut order: Vec<(&BlockId, &Link)> = candidates.iter().collect();
    order.sort_by_key(|(id, link)| (link.author, link.seq, **id));
    let mut linked = BTreeSet::new();
    for (id, link) in order {
        if link.parent.is_none_or(|parent| linked.contains(&parent)) {
            linked.insert(*id);
        }
    }
    linked
}

fn encode_record(report: &RepairReport) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    out.extend(postcard::to_allocvec(report).expect("serializing to a Vec cannot fail"));
    out
}

fn decode_record(bytes: &[u8]) -> Option<RepairReport> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, rest)) => postcard::from_bytes(rest).ok(),
        _ => None,
    }
}

/// Copies every write-ahead log of `db_dir` to `lost`, so the repair deletes nothing that
/// might still be read.
fn keep_logs(lost: &Path, db_dir: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(lost).map_err(|e| io(lost, Access::Write, e))?;
    for entry in fs::read_dir(db_dir).map_err(|e| io(db_dir, Access::Read, e))? {
        let path = entry.map_err(|e| io(db_dir, Access::Read, e))?.path();
        if path.extension().is_some_and(|e| e == "log") {
            if let Some(name) = path.file_name() {
                let to = lost.join(name);
                fs::copy(&path, &to).map_err(|e| io(&to, Access::Write, e))?;
            }
        }
    }
    Ok(())
}

/// Writes `blocks` to `path`, each a 4-byte big-endian length and the encoded block.
fn write_blocks(path: &Path, blocks: &[Block]) -> Result<(), StoreError> {
    let mut out = Vec::new();
    for block in blocks {
        let bytes = block.encode();
        let len = u32::try_from(bytes.len()).expect("a stored block is under 4 GiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    fs::create_dir_all(path.parent().expect("inside lost/"))
        .map_err(|e| io(path, Access::Write, e))?;
    let mut file = fs::File::create(path).map_err(|e| io(path, Access::Write, e))?;
    file.write_all(&out)
        .and_then(|()| file.sync_all())
        .map_err(|e| io(path, Access::Write, e))
}

impl RocksStore {
    /// Repairs the store in `dir`, which [`RocksStore::open`] refused as
    /// [`StoreError::Damaged`], and reports and records what was lost (see [`RepairReport`]).
    ///
    /// The store keeps every block that still links to the start of its feed: after damage
    /// to a write-ahead log, the blocks written before it (the log is replayed up to the
    /// damage, so the store is at a dispatch boundary); after damage to a table file, every
    /// block RocksDB's repairer or a read without checksums can still get. Readable blocks
    /// that no longer link are set aside in `DIR/lost/` ([`RepairReport::lost_blocks`]), and
    /// the damaged logs are copied there first. A store with nothing wrong is left as it is.
    ///
    /// The store must not be open.
    ///
    /// # Errors
    /// [`StoreError::Foreign`] if `dir` is not a blockend store, [`StoreError::Locked`] if
    /// another process has it open, [`StoreError::Damaged`] if even the rebuilt database
    /// cannot be read, [`StoreError::Io`] or [`StoreError::Backend`].
    pub fn repair(dir: impl AsRef<Path>) -> Result<RepairReport, StoreError> {
        Self::repair_with(dir, RocksConfig::default())
    }

    /// [`RocksStore::repair`], waiting for the lock as `config` says
    /// ([`RocksConfig::lock_timeout`]).
    ///
    /// # Errors
    /// As [`RocksStore::repair`].
    pub fn repair_with(
        dir: impl AsRef<Path>,
        config: RocksConfig,
    ) -> Result<RepairReport, StoreError> {
        let dir = dir.as_ref().to_owned();
        check_marker(&dir)?;
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let lost_dir = dir.join(LOST);
        let db_dir = dir.join("db");
        let scan = wal::scan(&db_dir)?;
        if scan.damage.is_some() {
            keep_logs(&lost_dir, &db_dir)?;
        }
        // Replays each log up to its first bad record.
        let options = db_options(DBRecoveryMode::PointInTime);
        let mut rebuilt = false;
        let mut salvaged = BTreeMap::new();
        let (db, survey) = loop {
            let opened = open_waiting(config.lock_timeout, || {
                open_db(&options, &db_dir).map_err(|e| backend_error(&dir, e))
            })
            .and_then(|db| survey(&dir, &db).map(|survey| (db, survey)));
            match opened {
                Ok(opened) => break opened,
                Err(StoreError::Damaged { .. }) if !rebuilt => {
                    rebuilt = true;
                    salvaged = salvage(&options, &db_dir);
                    DB::repair(&options, &db_dir).map_err(|e| backend_error(&dir, e))?;
                }
                Err(e) => return Err(e),
            }
        };

        // Which blocks the store can hold: those that link to the start of their feed. The
        // blocks of a table file salvaged here go back in (the kernel derives their expiry
        // timers from the blocks on open); those written to the log after its damage are set
        // aside, as their batches' other writes are lost: the kernel redoes those when peers
        // send the blocks again. A tombstone lost with a damaged table lets its evicted feed
        // back in once; retention ranks it as a newcomer then, so capacity still holds.
        let mut candidates = survey.blocks.clone();
        candidates.extend(salvaged.iter().map(|(id, block)| (*id, Link::from(block))));
        let keep = linked(&candidates);
        let mut unlinked: BTreeMap<BlockId, Block> = BTreeMap::new();
        let mut put = Vec::new();
        for (id, block) in salvaged {
            if !keep.contains(&id) {
                unlinked.insert(id, block);
            } else if !survey.blocks.contains_key(&id) {
                put.push(block);
            }
        }
        for id in survey.blocks.keys().filter(|id| !keep.contains(id)) {
            let bytes = db
                .get_cf(cf(&db, CF_BLOCKS), id.0)
                .map_err(|e| backend_error(&dir, e))?;
            if let Some(block) = bytes.and_then(|bytes| Block::decode(&bytes).ok()) {
                unlinked.insert(*id, block);
            }
        }
        for (id, block) in scan.after {
            if !keep.contains(&id) {
                candidates.insert(id, Link::from(&block));
                unlinked.insert(id, block);
            }
        }
        let mut unlinked: Vec<Block> = unlinked.into_values().collect();
        unlinked.sort_by_key(|b| (b.author(), b.seq(), b.id()));

        // Each feed's head kept, against the highest seq known from anywhere.
        let mut kept_heads: BTreeMap<PublicKey, u64> = BTreeMap::new();
        for id in &keep {
            let link = &candidates[id];
            let head = kept_heads.entry(link.author).or_insert(link.seq);
            *head = (*head).max(link.seq);
        }
        let mut before = scan.seen;
        // Feeds that may have lost blocks without a readable trace: named by the damaged
        // record's bytes, or holding blocks but no record of their newest one.
        let mut suspects: BTreeSet<PublicKey> = scan.suspects.keys().copied().collect();
        if scan.damage.is_some() || rebuilt {
            suspects.extend(
                kept_heads
                    .keys()
                    .filter(|author| !survey.committed_heads.contains_key(author)),
            );
        }
        let earlier = survey.record.iter().flat_map(|r| &r.feeds);
        for (author, seq) in candidates
            .values()
            .map(|link| (link.author, link.seq))
            .chain(survey.committed_heads.iter().map(|(a, s)| (*a, *s)))
            .chain(scan.suspects.iter().map(|(a, s)| (*a, *s)))
            .chain(earlier.map(|f| (f.author, f.before)))
        {
            let head = before.entry(author).or_insert(seq);
            *head = (*head).max(seq);
        }
        let feeds = before
            .into_iter()
            .filter_map(|(author, before)| {
                let kept = kept_heads.get(&author).copied();
                (kept < Some(before) || suspects.contains(&author)).then_some(FeedLoss {
                    author,
                    kept,
                    before,
                })
            })
            .collect();
        let lost_file = (!unlinked.is_empty()).then(|| lost_dir.join(format!("blocks-{at}")));
        let report = RepairReport {
            path: dir.clone(),
            at,
            damaged_log: scan.damage.as_ref().and_then(|d| {
                d.file
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
            }),
            damaged_at: scan.damage.as_ref().map(|d| d.offset),
            rebuilt,
            blocks_kept: keep.len(),
            blocks_lost: unlinked.len(),
            records_dropped: survey.undecodable.len(),
            lost_file,
            feeds,
        };
        if !report.found_damage() {
            return Ok(report);
        }
        if let Some(file) = &report.lost_file {
            write_blocks(file, &unlinked)?;
        }
        let mut batch = WriteBatch::default();
        let blocks = cf(&db, CF_BLOCKS);
        for key in &survey.undecodable {
            batch.delete_cf(blocks, key);
        }
        for id in survey.blocks.keys().filter(|id| !keep.contains(id)) {
            batch.delete_cf(blocks, id.0);
        }
        for block in put {
            batch.put_cf(blocks, block.id().0, block.encode());
        }
        batch.put_cf(cf(&db, CF_META), REPAIRED, encode_record(&report));
        let mut write = WriteOptions::default();
        write.set_sync(true);
        db.write_opt(batch, &write)
            .map_err(|e| backend_error(&dir, e))?;
        Ok(report)
    }

    /// What the last repair of this store found, kept and lost, until
    /// [`RocksStore::forget_repair`].
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the record does not decode, or a backend failure.
    pub fn last_repair(&self) -> Result<Option<RepairReport>, StoreError> {
        let Some(bytes) = self
            .db
            .get_cf(self.cf(CF_META), REPAIRED)
            .map_err(|e| self.backend(e))?
        else {
            return Ok(None);
        };
        let mut report = decode_record(&bytes).ok_or_else(|| StoreError::Corrupt {
            key: format!("{}: meta repaired", self.dir.display()),
            reason: "not a repair record".into(),
        })?;
        report.path.clone_from(&self.dir);
        // The record outlives a move of the store's directory.
        if let Some(name) = report.lost_file.as_ref().and_then(|f| f.file_name()) {
            report.lost_file = Some(self.dir.join(LOST).join(name));
        }
        Ok(Some(report))
    }

    /// Whether a repair that found damage was recorded and not yet forgotten.
    ///
    /// # Errors
    /// A backend failure.
    pub fn was_repaired(&self) -> Result<bool, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_META), REPAIRED)
            .map_err(|e| self.backend(e))?
            .is_some())
    }

    /// Deletes the repair record, once the lost blocks that matter are back (the own feed
    /// above all).
    ///
    /// # Errors
    /// A backend failure.
    pub fn forget_repair(&mut self) -> Result<(), StoreError> {
        self.writable()?;
        self.db
            .delete_cf_opt(self.cf(CF_META), REPAIRED, &self.write)
            .map_err(|e| self.backend(e))
    }
}
