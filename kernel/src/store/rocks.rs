//! The durable store: RocksDB, embedded, one directory per store.
//!
//! ```text
//! DIR/blockend.store   marker: this directory is a blockend store (format version)
//! DIR/identity         the identity's secret, hex, mode 0600
//! DIR/db/              RocksDB, column families:
//!   blocks       id -> encoded block (a pruned block once garbage-collected)
//!   heads        author -> seq (8 bytes, big-endian) | id: the newest block of each feed
//!   timers       time (8 bytes, big-endian) | id -> (): pending expiry timers
//!   meta         "gc_time" -> u64 big-endian
//!                "arrival/" | author -> u64 big-endian: the order this store first held the feed
//!                "follow/" | author -> (): an author the user follows
//!   checkpoints  "snapshot" -> the latest state snapshot (see the kernel's snapshot module)
//!   tombstones   author -> refused-until (8 bytes, big-endian): evicted feeds
//! ```
//!
//! Every [`Batch`] is one RocksDB `WriteBatch`: a crash leaves the store at a dispatch
//! boundary. **Acknowledged means written to the write-ahead log**: with the default
//! [`RocksConfig::sync`] `false`, a commit that returned survives a crash of the process (the
//! WAL is in the operating system's page cache) but not a power loss; set `sync` to `true` to
//! fsync the WAL on every commit, which survives power loss at the cost of a disk flush per
//! dispatch.
//!
//! Opening refuses, without writing anything, a directory that is not a blockend store
//! ([`StoreError::Foreign`]), a store another process holds open ([`StoreError::Locked`]) and a
//! store whose files are damaged ([`StoreError::Damaged`]). A file or directory the operating
//! system does not let this user read or write fails with [`StoreError::PermissionDenied`]
//! naming it, whether the refusal came from this code or from RocksDB (which reports it as
//! text): never as damage, a lock or a lost identity. RocksDB calls block; async drivers call
//! the kernel from a blocking thread.
//!
//! # Concurrent use
//! One writer at a time holds RocksDB's lock; another writer waits for it up to
//! [`RocksConfig::lock_timeout`] before [`StoreError::Locked`]. Readers take no lock:
//! [`RocksStore::open_read_only`] opens beside a writer, sees what it committed before the open,
//! writes nothing (no identity, no info log) and refuses writes ([`StoreError::ReadOnly`]).
//! A store that holds blocks but lost its identity file does not open for writing
//! ([`StoreError::IdentityLost`]): a new key would sign as a new author.
//!
//! # Damage
//! RocksDB's default recovery replays the write-ahead log up to its first bad record and
//! drops the rest without a word, so one flipped byte used to open as a store with half its
//! blocks and an own feed that would fork on the next write. This store recovers with
//! [`DBRecoveryMode::TolerateCorruptedTailRecords`] and paranoid checks: a record cut off at
//! the very end of the newest log (a write a crash interrupted, never acknowledged) is
//! dropped, and any other bad record, in a log or a table file, fails the open with
//! [`StoreError::Damaged`], naming the file and how many blocks were written after the damage.
//! As that mode still ends a log silently at a damaged length or type byte, open first reads
//! every log itself (`wal`), read-only, and refuses any damage but a torn tail.
//! [`RocksStore::repair`] then keeps every block that still links to the start of its feed
//! (after log damage: the prefix before it), sets the other readable blocks and a copy of the
//! damaged logs aside in `DIR/lost/`, and records what was lost ([`RocksStore::last_repair`]),
//! so the node can fetch its own feed back from peers before it writes to it again.
//!
//! # Size
//! RocksDB's defaults suit a server: a 64 MiB memtable per column family (and a 70 MiB
//! preallocated write-ahead log, the "75 MB store for one block"), a 4 MiB preallocated
//! manifest, and a new ~100 KiB info `LOG` file kept for every open (1,000 of them). Here a
//! memtable is 2 MiB (the log preallocates 1.1 times that), the logs together are held to
//! 8 MiB (past it, the families that pin the oldest log are flushed), the manifest
//! preallocates 256 KiB, and the info log is rolled at 512 KiB with two old ones kept.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocksdb::{
    ColumnFamilyDescriptor, DBRecoveryMode, ErrorKind, IteratorMode, Options, WriteBatch,
    WriteOptions, DB, DEFAULT_COLUMN_FAMILY_NAME,
};

use super::{Access, Batch, BlockStore, StoreError};
use crate::block::{Block, BlockId};
use crate::identity::{Identity, PublicKey};

mod repair;
mod wal;

pub use repair::{FeedLoss, RepairReport};

const MARKER: &str = "blockend.store";
const MARKER_CONTENT: &str = "blockend store, format 1\n";
const IDENTITY: &str = "identity";
const CF_BLOCKS: &str = "blocks";
const CF_HEADS: &str = "heads";
const CF_TIMERS: &str = "timers";
const CF_META: &str = "meta";
const CF_CHECKPOINTS: &str = "checkpoints";
const CF_TOMBSTONES: &str = "tombstones";
const FAMILIES: [&str; 6] = [
    CF_BLOCKS,
    CF_HEADS,
    CF_TIMERS,
    CF_META,
    CF_CHECKPOINTS,
    CF_TOMBSTONES,
];
const GC_TIME: &[u8] = b"gc_time";
const SNAPSHOT: &[u8] = b"snapshot";
/// `meta` keys: this prefix and an author -> the feed's arrival number (8 bytes, big-endian).
const ARRIVAL: &[u8] = b"arrival/";
/// `meta` keys: this prefix and an author -> (): a followed author.
const FOLLOW: &[u8] = b"follow/";
const REPAIRED: &[u8] = b"repaired";

/// A column family's memtable, in bytes; the write-ahead log preallocates 1.1 times this.
const WRITE_BUFFER: usize = 2 << 20;
/// The write-ahead logs' total size, in bytes, past which the column families holding the
/// oldest log are flushed so it can be deleted.
const MAX_TOTAL_WAL: u64 = 8 << 20;
/// How many RocksDB info logs are kept: `LOG` and the two newest `LOG.old.*`.
const INFO_LOGS: usize = 3;
/// An info log's size, in bytes, past which it is rolled.
const INFO_LOG_BYTES: usize = 512 << 10;
const MANIFEST_PREALLOCATION: usize = 256 << 10;
/// How often an open retries a lock another process holds, or a read-only open whose files a
/// writer replaced under it.
const LOCK_POLL: Duration = Duration::from_millis(20);
/// How long a read-only open retries files a concurrent writer deleted while it opened them.
const READ_RETRY: Duration = Duration::from_secs(2);

fn family_options() -> Options {
    let mut options = Options::default();
    options.set_write_buffer_size(WRITE_BUFFER);
    options
}

/// The database options; `recovery` is how far the write-ahead log is trusted.
fn db_options(recovery: DBRecoveryMode) -> Options {
    let mut options = family_options();
    options.create_missing_column_families(true);
    options.set_max_open_files(256);
    options.set_paranoid_checks(true);
    options.set_wal_recovery_mode(recovery);
    options.set_max_total_wal_size(MAX_TOTAL_WAL);
    options.set_keep_log_file_num(INFO_LOGS);
    options.set_max_log_file_size(INFO_LOG_BYTES);
    options.set_manifest_preallocation_size(MANIFEST_PREALLOCATION);
    options
}

fn descriptors() -> impl Iterator<Item = ColumnFamilyDescriptor> {
    // The default family is named too: the crate would open it with RocksDB's defaults, and
    // the log preallocates after the largest memtable of any family.
    std::iter::once(&DEFAULT_COLUMN_FAMILY_NAME)
        .chain(&FAMILIES)
        .map(|name| ColumnFamilyDescriptor::new(*name, family_options()))
}

fn open_db(options: &Options, db_dir: &Path) -> Result<DB, rocksdb::Error> {
    DB::open_cf_descriptors(options, db_dir, descriptors())
}

/// What a read-only open depends on in `db_dir`: the current manifest, its length (a flush
/// or compaction appends to it before it deletes a log) and the write-ahead logs.
fn files_view(db_dir: &Path) -> std::io::Result<(String, u64, Vec<std::ffi::OsString>)> {
    let current = fs::read_to_string(db_dir.join("CURRENT"))?;
    let manifest = fs::metadata(db_dir.join(current.trim()))?.len();
    let mut logs = Vec::new();
    for entry in fs::read_dir(db_dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log") {
            logs.push(path.file_name().unwrap_or_default().to_owned());
        }
    }
    logs.sort();
    Ok((current, manifest, logs))
}

/// Maps a RocksDB failure on the store in `dir` to a [`StoreError`].
fn backend_error(dir: &Path, error: rocksdb::Error) -> StoreError {
    let message = error.to_string();
    if error.kind() == ErrorKind::IOError {
        // Checked first: a lock file this user may not open is no other process's lock.
        if let Some(error) = permission_denied(dir, &message) {
            return error;
        }
    }
    match error.kind() {
        ErrorKind::IOError
            if message.contains("While lock file")
                || message.contains("lock hold by current process") =>
        {
            StoreError::Locked {
                path: dir.to_owned(),
                waited: Duration::ZERO,
            }
        }
        ErrorKind::Corruption => damaged(dir, message),
        _ => StoreError::Backend(format!("{}: {message}", dir.display())),
    }
}

/// The [`StoreError::PermissionDenied`] in RocksDB's `message` on the store in `dir`, if it
/// says the operating system refused an access. RocksDB keeps only the text of the error
/// (`IO error: While open a file for appending: DIR/db/LOG: Permission denied`): the
/// operation, the path, then `strerror` of `EACCES` or `EPERM`.
fn permission_denied(dir: &Path, message: &str) -> Option<StoreError> {
    let refused = [": Permission denied", ": Operation not permitted"]
        .iter()
        .find_map(|reason| message.rfind(reason))?;
    let before = &message[..refused];
    // The path follows the operation's ": " and starts with the store's directory as
    // RocksDB was given it (which may itself hold ": ").
    let lead = format!(": {}", dir.to_string_lossy());
    let (operation, path) = match before.match_indices(&lead).map(|(at, _)| at).find(|&at| {
        let rest = &before[at + lead.len()..];
        rest.is_empty() || rest.starts_with('/')
    }) {
        Some(at) => (&before[..at], &before[at + 2..]),
        None => match before.rfind(": ") {
            Some(at) => (&before[..at], &before[at + 2..]),
            None => (before, ""),
        },
    };
    let operation = operation.to_ascii_lowercase();
    let reads = operation.contains("read")
        && !["append", "writ", "lock", "creat", "renam", "delet", "sync"]
            .iter()
            .any(|word| operation.contains(word));
    Some(StoreError::PermissionDenied {
        path: if path.is_empty() {
            dir.to_owned()
        } else {
            PathBuf::from(path)
        },
        access: if reads { Access::Read } else { Access::Write },
    })
}

/// A [`StoreError::Damaged`] for the store in `dir`, located and sized by reading its
/// write-ahead logs when the damage is in one.
fn damaged(dir: &Path, detail: String) -> StoreError {
    let db_dir = dir.join("db");
    match wal::scan(&db_dir)
        .ok()
        .and_then(|scan| log_damaged(dir, &scan, detail.clone()))
    {
        Some(error) => error,
        None => StoreError::Damaged {
            path: dir.to_owned(),
            // RocksDB names a damaged table file in its message ("... in DIR/db/000008.sst").
            file: detail
                .split_whitespace()
                .find(|word| word.ends_with(".sst") && Path::new(word).is_file())
                .map_or(db_dir, PathBuf::from),
            offset: None,
            detail,
            lost: None,
        },
    }
}

/// The [`StoreError::Damaged`] of the store in `dir` whose logs read as `scan`, if a log is
/// damaged; `detail` is RocksDB's word on it, if any.
fn log_damaged(dir: &Path, scan: &wal::Scan, detail: String) -> Option<StoreError> {
    let damage = scan.damage.as_ref()?;
    Some(StoreError::Damaged {
        path: dir.to_owned(),
        file: damage.file.clone(),
        offset: Some(damage.offset),
        detail: if detail.is_empty() {
            damage.reason.to_owned()
        } else if detail.contains(damage.reason) {
            detail
        } else {
            format!("{}; {detail}", damage.reason)
        },
        lost: Some(scan.after.len()),
    })
}

/// How a [`RocksStore`] writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RocksConfig {
    /// fsync the write-ahead log on every commit, so acknowledged dispatches survive power
    /// loss, not only a process crash. Default `false`.
    pub sync: bool,
    /// How long an open waits for the lock another process holds (polling every 20 ms)
    /// before failing with [`StoreError::Locked`], like sqlite's busy timeout. Default zero:
    /// fail at once.
    pub lock_timeout: Duration,
}

impl RocksConfig {
    /// Sets [`RocksConfig::sync`].
    pub fn with_sync(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }

    /// Sets [`RocksConfig::lock_timeout`].
    pub fn with_lock_timeout(mut self, lock_timeout: Duration) -> Self {
        self.lock_timeout = lock_timeout;
        self
    }
}

/// Opens the database with `open`, retrying while another process holds its lock, for up to
/// `timeout`. `open` redoes whatever must be read under the same view (the log scan).
fn open_waiting<T>(
    timeout: Duration,
    mut open: impl FnMut() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let started = Instant::now();
    loop {
        match open() {
            Err(StoreError::Locked { path, .. }) => {
                let waited = started.elapsed();
                if waited >= timeout {
                    return Err(StoreError::Locked { path, waited });
                }
                std::thread::sleep(LOCK_POLL.min(timeout - waited));
            }
            other => return other,
        }
    }
}

/// A [`BlockStore`] in a RocksDB database inside a directory.
///
/// Damaged files are never opened as a smaller store: [`RocksStore::open`] fails with
/// [`StoreError::Damaged`] (only a log record cut off at its very end by a crash, a write
/// never acknowledged, is dropped), and [`RocksStore::repair`] keeps the intact prefix and
/// records what was lost ([`RocksStore::last_repair`]). RocksDB's files stay small: 2 MiB
/// memtables (a write-ahead log preallocates 1.1 times that), at most 8 MiB of logs, three
/// info logs of at most 512 KiB.
pub struct RocksStore {
    dir: PathBuf,
    db: DB,
    write: WriteOptions,
    len: usize,
    read_only: bool,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("dir", &self.dir)
            .field("blocks", &self.len)
            .finish_non_exhaustive()
    }
}

/// A failure to `access` `path` ([`StoreError::PermissionDenied`] when it was refused).
fn io(path: &Path, access: Access, source: std::io::Error) -> StoreError {
    StoreError::io(path, access, source)
}

impl RocksStore {
    /// Opens the store in `dir`, creating it if `dir` is missing or empty.
    ///
    /// # Errors
    /// [`StoreError::Foreign`] if `dir` holds something else, [`StoreError::Locked`] if another
    /// process has the store open, [`StoreError::Damaged`] if a write-ahead log or table file
    /// is damaged (see [`RocksStore::repair`]), [`StoreError::PermissionDenied`] if this user
    /// may not read or write a file of the store, [`StoreError::Io`] or
    /// [`StoreError::Backend`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(dir, RocksConfig::default())
    }

    /// Opens the store in `dir` with `config` (see [`RocksStore::open`]).
    ///
    /// # Errors
    /// As [`RocksStore::open`].
    pub fn open_with(dir: impl AsRef<Path>, config: RocksConfig) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_owned();
        let marker = dir.join(MARKER);
        let fresh = match fs::read_to_string(&marker) {
            Ok(content) if content == MARKER_CONTENT => false,
            Ok(_) => return Err(StoreError::Foreign { path: dir }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match fs::read_dir(&dir) {
                    Ok(mut entries) => {
                        if entries.next().is_some() {
                            return Err(StoreError::Foreign { path: dir });
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        fs::create_dir_all(&dir).map_err(|e| io(&dir, Access::Write, e))?;
                    }
                    Err(e) => return Err(io(&dir, Access::Read, e)),
                }
                true
            }
            Err(e) => return Err(io(&marker, Access::Read, e)),
        };
        let db_dir = dir.join("db");
        let mut options = db_options(DBRecoveryMode::TolerateCorruptedTailRecords);
        options.create_if_missing(fresh);
        let db = open_waiting(config.lock_timeout, || {
            // RocksDB, tolerating a torn tail, also stops a log without a word at a damaged
            // length or type byte anywhere in it: every log is read here first (they are
            // held to 8 MiB together), and only a record cut off at the end of the newest one
            // passes. A wait for the lock reads them again: the holder wrote on.
            let scan = match wal::scan(&db_dir) {
                Ok(scan) => scan,
                // The holder of the lock deleted a log while it was read.
                Err(StoreError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && !fresh =>
                {
                    return Err(StoreError::Locked {
                        path: dir.clone(),
                        waited: Duration::ZERO,
                    })
                }
                Err(error) => return Err(error),
            };
            if let Some(error) = log_damaged(&dir, &scan, String::new()) {
                return Err(error);
            }
            match open_db(&options, &db_dir).map_err(|e| backend_error(&dir, e)) {
                // RocksDB rolls the info log before it takes the lock, so writers queueing
                // for the lock race on the old info logs: that is contention too.
                Err(StoreError::Backend(message))
                    if message.contains("No such file") && message.contains("/LOG") =>
                {
                    Err(StoreError::Locked {
                        path: dir.clone(),
                        waited: Duration::ZERO,
                    })
                }
                other => other,
            }
        })?;
        if fresh {
            // The marker goes last: a crash before it leaves a directory that opens as fresh.
            fs::write(&marker, MARKER_CONTENT).map_err(|e| io(&marker, Access::Write, e))?;
        }
        let mut write = WriteOptions::default();
        write.set_sync(config.sync);
        let mut store = Self {
            dir,
            db,
            write,
            len: 0,
            read_only: false,
        };
        store.count_blocks()?;
        // A store that holds blocks is never given a new key without an explicit command:
        // the next block would come from a new author.
        if store.len > 0 {
            match store.stored_identity() {
                Ok(Some(_)) => {}
                // An identity file this user may not read is not lost.
                Err(error @ StoreError::PermissionDenied { .. }) => return Err(error),
                Ok(None) | Err(_) => return Err(store.identity_lost()),
            }
        }
        Ok(store)
    }

    /// Opens the existing store in `dir` for reading only: it takes no lock (a running node
    /// or a writing command may hold it), writes nothing (no identity, no info log) and sees
    /// every write committed before it opened. Its [`BlockStore::commit`] and
    /// [`BlockStore::set_identity`] fail with [`StoreError::ReadOnly`]. Reading needs no
    /// secret key: when the identity file is missing or damaged, [`BlockStore::identity`]
    /// lends a throwaway key that is never saved, and the store cannot sign anyway.
    ///
    /// # Errors
    /// [`StoreError::Foreign`] if `dir` is not a blockend store (a missing or empty one
    /// included: nothing is created), [`StoreError::Damaged`] if a write-ahead log or table
    /// file is damaged, [`StoreError::PermissionDenied`] if this user may not read a file of
    /// the store (the identity file excepted: it is not needed), [`StoreError::Io`] or
    /// [`StoreError::Backend`].
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_owned();
        check_marker(&dir)?;
        let db_dir = dir.join("db");
        let options = db_options(DBRecoveryMode::TolerateCorruptedTailRecords);
        let started = Instant::now();
        // A writer may flush, compact or reopen while this opens, deleting a log or table
        // file between the listing and the read, or flushing a log into a table file that
        // the manifest read here does not list yet (an open that would miss those writes):
        // the open is retried, briefly, until the files did not change under it.
        let db = loop {
            let before = files_view(&db_dir);
            let opened =
                wal::scan(&db_dir).and_then(|scan| match log_damaged(&dir, &scan, String::new()) {
                    Some(error) => Err(error),
                    None => {
                        DB::open_cf_descriptors_read_only(&options, &db_dir, descriptors(), false)
                            .map_err(|e| backend_error(&dir, e))
                    }
                });
            match opened {
                Ok(db) if before.is_ok() && files_view(&db_dir).ok() == before.ok() => break db,
                // Still changing after the retries: a best effort, as a writer that flushes
                // this often keeps every view a moment old anyway.
                Ok(db) if started.elapsed() >= READ_RETRY => break db,
                Ok(_) => {}
                Err(StoreError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound
                        && started.elapsed() < READ_RETRY => {}
                Err(StoreError::Backend(message))
                    if message.contains("No such file") && started.elapsed() < READ_RETRY => {}
                Err(error) => return Err(error),
            }
            std::thread::sleep(LOCK_POLL);
        };
        let mut store = Self {
            dir,
            db,
            write: WriteOptions::default(),
            len: 0,
            read_only: true,
        };
        store.count_blocks()?;
        Ok(store)
    }

    /// Whether the store was opened with [`RocksStore::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Counts the blocks. Reading every block also checks every table block of the family
    /// against its checksum, so a damaged table file fails the open rather than a later read.
    fn count_blocks(&mut self) -> Result<(), StoreError> {
        let mut len = 0;
        for item in self.db.iterator_cf(self.cf(CF_BLOCKS), IteratorMode::Start) {
            item.map_err(|e| self.backend(e))?;
            len += 1;
        }
        self.len = len;
        Ok(())
    }

    /// Fails with [`StoreError::ReadOnly`] on a read-only store.
    fn writable(&self) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly {
                path: self.dir.clone(),
            });
        }
        Ok(())
    }

    fn identity_lost(&self) -> StoreError {
        StoreError::IdentityLost {
            path: self.dir.clone(),
            file: self.dir.join(IDENTITY),
        }
    }

    /// The identity file's secret, if there is one.
    fn stored_identity(&self) -> Result<Option<[u8; 32]>, StoreError> {
        let path = self.dir.join(IDENTITY);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path, Access::Read, e)),
        };
        let mut secret = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut secret).map_err(|e| StoreError::Corrupt {
            key: path.display().to_string(),
            reason: format!("not a 32-byte hex secret: {e}"),
        })?;
        Ok(Some(secret))
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is opened with the database")
    }

    fn backend(&self, error: rocksdb::Error) -> StoreError {
        backend_error(&self.dir, error)
    }

    /// The `meta` entries under `prefix`, each keyed by an author.
    fn meta_entries(&self, prefix: &[u8]) -> Result<Vec<MetaEntry>, StoreError> {
        let mode = IteratorMode::From(prefix, rocksdb::Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_META), mode) {
            let (key, value) = item.map_err(|e| self.backend(e))?;
            let Some(author) = key.strip_prefix(prefix) else {
                break;
            };
            let author: [u8; 32] = author.try_into().map_err(|_| StoreError::Corrupt {
                key: format!("{}: meta {}", self.dir.display(), hex::encode(&key)),
                reason: "the key does not end in a 32-byte author".into(),
            })?;
            out.push((PublicKey(author), value));
        }
        Ok(out)
    }
}

/// A `meta` entry keyed by an author, and its value.
type MetaEntry = (PublicKey, Box<[u8]>);

fn timer_key(time: u64, id: &BlockId) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..8].copy_from_slice(&time.to_be_bytes());
    key[8..].copy_from_slice(&id.0);
    key
}

impl BlockStore for RocksStore {
    fn commit(&mut self, batch: Batch) -> Result<(), StoreError> {
        self.writable()?;
        let mut write = WriteBatch::default();
        let (blocks, heads, timers, meta) = (
            self.cf(CF_BLOCKS),
            self.cf(CF_HEADS),
            self.cf(CF_TIMERS),
            self.cf(CF_META),
        );
        let mut added = 0usize;
        let mut removed = 0usize;
        for id in &batch.delete {
            if self
                .db
                .get_pinned_cf(blocks, id.0)
                .map_err(|e| self.backend(e))?
                .is_some()
            {
                removed += 1;
            }
            write.delete_cf(blocks, id.0);
        }
        for block in &batch.put {
            if self
                .db
                .get_pinned_cf(blocks, block.id().0)
                .map_err(|e| self.backend(e))?
                .is_none()
            {
                added += 1;
            }
            write.put_cf(blocks, block.id().0, block.encode());
        }
        for (author, head) in &batch.heads {
            match head {
                Some((seq, id)) => {
                    let mut value = [0u8; 40];
                    value[..8].copy_from_slice(&seq.to_be_bytes());
                    value[8..].copy_from_slice(&id.0);
                    write.put_cf(heads, author.0, value);
                }
                None => write.delete_cf(heads, author.0),
            }
        }
        for (time, id) in &batch.timers_done {
            write.delete_cf(timers, timer_key(*time, id));
        }
        for (time, id) in &batch.timers {
            write.put_cf(timers, timer_key(*time, id), []);
        }
        if let Some(time) = batch.gc_time {
            write.put_cf(meta, GC_TIME, time.to_be_bytes());
        }
        if let Some(snapshot) = &batch.snapshot {
            write.put_cf(self.cf(CF_CHECKPOINTS), SNAPSHOT, snapshot);
        }
        let tombstones = self.cf(CF_TOMBSTONES);
        for (author, until) in &batch.tombstones {
            match until {
                Some(until) => write.put_cf(tombstones, author.0, until.to_be_bytes()),
                None => write.delete_cf(tombstones, author.0),
            }
        }
        for (author, arrival) in &batch.arrivals {
            let key = [ARRIVAL, &author.0].concat();
            match arrival {
                Some(arrival) => write.put_cf(meta, key, arrival.to_be_bytes()),
                None => write.delete_cf(meta, key),
            }
        }
        for (author, follow) in &batch.follows {
            let key = [FOLLOW, &author.0].concat();
            if *follow {
                write.put_cf(meta, key, []);
            } else {
                write.delete_cf(meta, key);
            }
        }
        self.db
            .write_opt(write, &self.write)
            .map_err(|e| self.backend(e))?;
        self.len = self.len + added - removed.min(self.len + added);
        Ok(())
    }

    fn blocks(&self) -> Result<Vec<Arc<Block>>, StoreError> {
        let mut out = Vec::with_capacity(self.len);
        for item in self.db.iterator_cf(self.cf(CF_BLOCKS), IteratorMode::Start) {
            let (key, value) = item.map_err(|e| self.backend(e))?;
            let block = Block::decode(&value).map_err(|e| StoreError::Corrupt {
                key: format!("{}: block {}", self.dir.display(), hex::encode(&key)),
                reason: e.to_string(),
            })?;
            if block.id().0[..] != key[..] {
                return Err(StoreError::Corrupt {
                    key: format!("{}: block {}", self.dir.display(), hex::encode(&key)),
                    reason: "the block's id differs from its key".into(),
                });
            }
            out.push(Arc::new(block));
        }
        Ok(out)
    }

    fn get(&self, id: &BlockId) -> Result<Option<Arc<Block>>, StoreError> {
        let Some(value) = self
            .db
            .get_pinned_cf(self.cf(CF_BLOCKS), id.0)
            .map_err(|e| self.backend(e))?
        else {
            return Ok(None);
        };
        let block = Block::decode(&value).map_err(|e| StoreError::Corrupt {
            key: format!("{}: block {id}", self.dir.display()),
            reason: e.to_string(),
        })?;
        Ok(Some(Arc::new(block)))
    }

    fn len(&self) -> usize {
        self.len
    }

    fn arrivals(&self) -> Result<Vec<(PublicKey, u64)>, StoreError> {
        self.meta_entries(ARRIVAL)?
            .into_iter()
            .map(|(author, value)| {
                let value: [u8; 8] = value[..].try_into().map_err(|_| StoreError::Corrupt {
                    key: format!("{}: arrival of {author}", self.dir.display()),
                    reason: "an arrival number is 8 bytes".into(),
                })?;
                Ok((author, u64::from_be_bytes(value)))
            })
            .collect()
    }

    fn follows(&self) -> Result<Vec<PublicKey>, StoreError> {
        Ok(self
            .meta_entries(FOLLOW)?
            .into_iter()
            .map(|(author, _)| author)
            .collect())
    }

    fn timers(&self) -> Result<Vec<(u64, BlockId)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_TIMERS), IteratorMode::Start) {
            let (key, _) = item.map_err(|e| self.backend(e))?;
            let key: [u8; 40] = key[..].try_into().map_err(|_| StoreError::Corrupt {
                key: format!("{}: timer {}", self.dir.display(), hex::encode(&key)),
                reason: "a timer key is 40 bytes".into(),
            })?;
            let mut time = [0u8; 8];
            time.copy_from_slice(&key[..8]);
            let mut id = [0u8; 32];
            id.copy_from_slice(&key[8..]);
            out.push((u64::from_be_bytes(time), BlockId(id)));
        }
        Ok(out)
    }

    fn gc_time(&self) -> Result<u64, StoreError> {
        let value = self
            .db
            .get_pinned_cf(self.cf(CF_META), GC_TIME)
            .map_err(|e| self.backend(e))?;
        match value {
            None => Ok(0),
            Some(bytes) => {
                let bytes: [u8; 8] = bytes[..].try_into().map_err(|_| StoreError::Corrupt {
                    key: format!("{}: meta gc_time", self.dir.display()),
                    reason: "gc_time is 8 bytes".into(),
                })?;
                Ok(u64::from_be_bytes(bytes))
            }
        }
    }

    fn snapshot(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .get_cf(self.cf(CF_CHECKPOINTS), SNAPSHOT)
            .map_err(|e| self.backend(e))
    }

    fn tombstones(&self) -> Result<Vec<(PublicKey, u64)>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_TOMBSTONES), IteratorMode::Start)
        {
            let (key, value) = item.map_err(|e| self.backend(e))?;
            let corrupt = || StoreError::Corrupt {
                key: format!("{}: tombstone {}", self.dir.display(), hex::encode(&key)),
                reason: "a tombstone is a 32-byte key and an 8-byte time".into(),
            };
            let author: [u8; 32] = key[..].try_into().map_err(|_| corrupt())?;
            let until: [u8; 8] = value[..].try_into().map_err(|_| corrupt())?;
            out.push((PublicKey(author), u64::from_be_bytes(until)));
        }
        Ok(out)
    }

    fn identity(&self) -> Result<Option<[u8; 32]>, StoreError> {
        if self.read_only {
            // Reading needs no secret: a throwaway key, never saved, stands in for a missing
            // or damaged one (a read-only store cannot sign).
            return Ok(Some(match self.stored_identity() {
                Ok(Some(secret)) => secret,
                _ => Identity::generate().secret(),
            }));
        }
        // A store that held blocks without its identity did not open (see `open_with`).
        self.stored_identity()
    }

    fn set_identity(&mut self, secret: [u8; 32]) -> Result<(), StoreError> {
        self.writable()?;
        let path = self.dir.join(IDENTITY);
        let tmp = self.dir.join("identity.tmp");
        // Created 0600 from the start (never world-readable, even briefly), then renamed.
        let _ = fs::remove_file(&tmp);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io(&tmp, Access::Write, e))?;
        file.write_all(format!("{}\n", hex::encode(secret)).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io(&tmp, Access::Write, e))?;
        fs::rename(&tmp, &path).map_err(|e| io(&path, Access::Write, e))?;
        Ok(())
    }
}

/// Checks that `dir` is a blockend store (its marker file says so); a missing or empty
/// directory is not one.
pub(super) fn check_marker(dir: &Path) -> Result<(), StoreError> {
    let marker = dir.join(MARKER);
    match fs::read_to_string(&marker) {
        Ok(content) if content == MARKER_CONTENT => Ok(()),
        Ok(_) => Err(StoreError::Foreign {
            path: dir.to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::Foreign {
            path: dir.to_owned(),
        }),
        Err(e) => Err(io(&marker, Access::Read, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocksdb_s_permission_messages_name_the_path_and_the_access() {
        let dir = Path::new("/srv/a: b/store");
        for (message, path, access) in [
            (
                "IO error: While open a file for appending: /srv/a: b/store/db/LOG: Permission denied",
                "/srv/a: b/store/db/LOG",
                Access::Write,
            ),
            (
                "IO error: While open a file for random read: /srv/a: b/store/db/000013.sst: Permission denied",
                "/srv/a: b/store/db/000013.sst",
                Access::Read,
            ),
            (
                "IO error: While opening a file for sequentially reading: /srv/a: b/store/db/CURRENT: Permission denied",
                "/srv/a: b/store/db/CURRENT",
                Access::Read,
            ),
            (
                "IO error: While lock file: /srv/a: b/store/db/LOCK: Operation not permitted",
                "/srv/a: b/store/db/LOCK",
                Access::Write,
            ),
        ] {
            match permission_denied(dir, message) {
                Some(StoreError::PermissionDenied { path: p, access: a }) => {
                    assert_eq!((p.as_path(), a), (Path::new(path), access), "{message}");
                }
                other => panic!("{message}: {other:?}"),
            }
        }
        // A relative store directory, whose name is also in the operation's words.
        match permission_denied(
            Path::new("s"),
            "IO error: While opening a file for sequentially reading: s/db/CURRENT: Permission denied",
        ) {
            Some(StoreError::PermissionDenied { path, access }) => {
                assert_eq!((path.as_path(), access), (Path::new("s/db/CURRENT"), Access::Read));
            }
            other => panic!("{other:?}"),
        }
        assert!(permission_denied(dir, "IO error: No space left on device").is_none());
    }
}
