//! A damaged RocksStore is refused on open, never opened smaller; a repair keeps every block
//! that still links to its feed, sets the other readable ones aside and records what was
//! lost; RocksDB's own files stay small.
#![cfg(feature = "rocksdb")]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use blockend_kernel::store::{BlockStore, RocksStore, StoreError};
use blockend_kernel::{
    Application, Context, Identity, Kernel, ManualClock, PublicKey, Registry, Slice, Verdict,
};

struct Count;
impl Slice for Count {
    type State = u64;
    fn name(&self) -> &str {
        "count"
    }
    fn initial(&self) -> u64 {
        0
    }
    fn filter(&self, _: &Context<'_>, _: &u64) -> Verdict {
        Verdict::Accept
    }
    fn reduce(&self, _: &Context<'_>, state: &mut u64) {
        *state += 1;
    }
}

struct App;
impl Application for App {
    fn register(&self, slices: &mut Registry) {
        slices.add(Count);
    }
}

/// A kernel on the store in `path` with a fixed identity and clock, so the blocks (and the
/// damage a test does to them) are the same every run.
fn kernel(path: &Path) -> Kernel {
    Kernel::builder(&App)
        .with_store(RocksStore::open(path).expect("open"))
        .with_identity(Identity::from_secret([7; 32]))
        .with_clock(ManualClock::new(1_000))
        .open()
        .expect("kernel")
}

/// Writes `n` own blocks, one dispatch each, and drops the kernel without closing it (no
/// final snapshot; what is in the write-ahead log stays there). Returns the author.
fn write_blocks(path: &Path, n: u32) -> PublicKey {
    let mut kernel = kernel(path);
    for i in 0..n {
        kernel
            .create_block(i.to_be_bytes().to_vec())
            .expect("block");
    }
    assert_eq!(kernel.store().len(), n as usize);
    kernel.author()
}

/// The newest write-ahead log of the store in `path`.
fn newest_log(path: &Path) -> PathBuf {
    std::fs::read_dir(path.join("db"))
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
        .expect("a write-ahead log")
}

/// Allocated bytes (what `du` counts) under `path`, of the files whose name passes `keep`.
fn allocated(path: &Path, keep: &dyn Fn(&str) -> bool) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).expect("list") {
        let entry = entry.expect("entry");
        let meta = entry.metadata().expect("metadata");
        if meta.is_dir() {
            total += allocated(&entry.path(), keep);
        } else if keep(&entry.file_name().to_string_lossy()) {
            total += meta.blocks() * 512;
        }
    }
    total
}

/// The seqs of the blocks in the store in `path`, sorted.
fn seqs(store: &RocksStore) -> Vec<u64> {
    let mut seqs: Vec<u64> = store
        .blocks()
        .expect("read")
        .iter()
        .map(|b| b.seq())
        .collect();
    seqs.sort();
    seqs
}

#[test]
fn a_flipped_byte_in_the_log_fails_the_open_and_a_repair_keeps_the_intact_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let author = write_blocks(&path, 50);
    let log = newest_log(&path);
    let mut bytes = std::fs::read(&log).expect("read the log");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&log, &bytes).expect("damage the log");

    // Refused, not opened with fewer blocks, and nothing changed.
    let error = RocksStore::open(&path).expect_err("a damaged log must not open");
    let StoreError::Damaged {
        path: store,
        file,
        offset,
        lost,
        ..
    } = &error
    else {
        panic!("expected Damaged, got {error:?}");
    };
    assert_eq!(store, &path);
    assert_eq!(file, &log);
    let offset = offset.expect("the damaged record is located") as usize;
    assert!(offset <= middle && middle - offset < 1_000, "{offset}");
    let lost = lost.expect("the blocks after the damage are counted");
    assert!((1..50).contains(&lost), "{lost}");
    let message = error.to_string();
    assert!(!message.contains('\n'), "one line: {message}");
    for part in [
        path.display().to_string(),
        log.display().to_string(),
        format!("{lost} readable blocks were written after the damage"),
        format!("run `blockend repair --store {}`", path.display()),
    ] {
        assert!(message.contains(&part), "{part:?} not in {message}");
    }
    assert_eq!(std::fs::read(&log).expect("reread"), bytes, "open wrote");

    // The repair keeps the blocks before the damage and says which were lost.
    let report = RocksStore::repair(&path).expect("repair");
    assert!(report.found_damage());
    assert_eq!(report.damaged_at, Some(offset as u64));
    assert_eq!(report.blocks_lost, lost);
    assert!((1..50).contains(&report.blocks_kept), "{report:?}");
    // Only the damaged record's block cannot be read.
    assert_eq!(report.blocks_before(), 49, "{report:?}");
    let feed = report.feed(&author).expect("the own feed lost blocks");
    assert_eq!(feed.kept, Some(report.blocks_kept as u64 - 1));
    assert_eq!(feed.before, 49, "the head before the damage is known");
    let line = report.to_string();
    assert!(!line.contains('\n'), "one line: {line}");
    for part in [
        format!("kept {} blocks", report.blocks_kept),
        format!("set aside {lost} readable blocks"),
        format!("seq {}..=49", report.blocks_kept),
    ] {
        assert!(line.contains(&part), "{part:?} not in {line}");
    }
    let name = log.file_name().expect("name");
    assert_eq!(
        std::fs::read(path.join("lost").join(name)).expect("the damaged log is kept"),
        bytes
    );
    // The blocks after the damaged record are intact and set aside, to offer again later.
    let mut set_aside: Vec<u64> = report
        .lost_blocks()
        .expect("read the set-aside blocks")
        .iter()
        .map(|b| b.seq())
        .collect();
    set_aside.sort();
    let first = report.blocks_kept as u64 + 1;
    assert_eq!(set_aside, (first..50).collect::<Vec<_>>());

    // It opens again, holds exactly that prefix, and knows it was repaired.
    let mut store = RocksStore::open(&path).expect("a repaired store opens");
    assert_eq!(store.len(), report.blocks_kept);
    assert_eq!(
        seqs(&store),
        (0..report.blocks_kept as u64).collect::<Vec<_>>()
    );
    assert!(store.was_repaired().expect("read"));
    assert_eq!(store.last_repair().expect("read"), Some(report.clone()));
    store.forget_repair().expect("forget");
    assert!(!store.was_repaired().expect("read"));
    drop(store);
    let kernel = kernel(&path);
    assert_eq!(kernel.author(), author);
    let head = kernel.head(&author).expect("own feed");
    assert_eq!(head.seq, report.blocks_kept as u64 - 1);
    assert_eq!(kernel.stats().blocks, report.blocks_kept);
}

#[test]
fn only_a_record_cut_off_at_the_end_of_the_log_is_dropped_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cut = dir.path().join("cut");
    write_blocks(&cut, 10);
    // A crash in the middle of the last write: never acknowledged, not damage.
    let log = newest_log(&cut);
    let len = std::fs::metadata(&log).expect("metadata").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .and_then(|f| f.set_len(len - 10))
        .expect("truncate");
    let store = RocksStore::open(&cut).expect("a torn tail opens");
    assert_eq!(store.len(), 9);
    assert!(!store.was_repaired().expect("read"));

    // A damaged last record is damage, though recovery up to it would lose only one block.
    let flipped = dir.path().join("flipped");
    write_blocks(&flipped, 10);
    let log = newest_log(&flipped);
    let mut bytes = std::fs::read(&log).expect("read");
    let at = bytes.len() - 10;
    bytes[at] ^= 0x01;
    std::fs::write(&log, &bytes).expect("write");
    let error = RocksStore::open(&flipped).expect_err("a damaged last record");
    assert!(
        matches!(&error, StoreError::Damaged { lost: Some(0), .. }),
        "{error:?}"
    );
}

/// Writes `n` own blocks of 40 KiB incompressible bodies (4 MB for 100: past the 2 MiB
/// memtable, so blocks reach a table file) and returns the author and the largest table file.
fn write_table_blocks(path: &Path, n: u64) -> (PublicKey, PathBuf) {
    let mut kernel = kernel(path);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..n {
        let body: Vec<u8> = (0..40 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        kernel.create_block(body).expect("block");
    }
    let table = std::fs::read_dir(path.join("db"))
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .max_by_key(|p| std::fs::metadata(p).expect("metadata").len())
        .expect("a table file");
    (kernel.author(), table)
}

#[test]
fn a_damaged_table_file_fails_the_open_and_a_repair_keeps_every_block_that_still_links() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let n = 100u64;
    let (author, table) = write_table_blocks(&path, n);
    let mut bytes = std::fs::read(&table).expect("read");
    let at = bytes.len() / 3;
    bytes[at] ^= 0x5a;
    std::fs::write(&table, &bytes).expect("damage the table");

    let error = RocksStore::open(&path).expect_err("a damaged table must not open");
    assert!(
        matches!(&error, StoreError::Damaged { file, .. } if *file == table),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("blockend repair --store"), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");

    // RocksDB's repairer alone sets the whole table aside; reading it without checksums
    // first loses only the block whose bytes were hit.
    let report = RocksStore::repair(&path).expect("repair");
    assert!(report.rebuilt, "{report:?}");
    assert_eq!(report.blocks_before(), n as usize - 1, "{report:?}");
    assert!(report.blocks_kept > 0, "{report:?}");
    let feed = report.feed(&author).expect("the own feed lost blocks");
    assert_eq!(feed.kept, Some(report.blocks_kept as u64 - 1));
    assert_eq!(feed.before, n - 1);
    let set_aside = report.lost_blocks().expect("read");
    assert_eq!(set_aside.len(), report.blocks_lost);
    assert!(set_aside
        .iter()
        .all(|b| b.seq() > report.blocks_kept as u64));

    // The store holds exactly the linked prefix, so its kernel indexes every block.
    let store = RocksStore::open(&path).expect("a repaired store opens");
    assert_eq!(store.len(), report.blocks_kept);
    assert_eq!(
        seqs(&store),
        (0..report.blocks_kept as u64).collect::<Vec<_>>()
    );
    assert!(store.was_repaired().expect("read"));
    drop(store);
    assert_eq!(kernel(&path).stats().blocks, report.blocks_kept);
}

#[test]
fn a_repair_leaves_a_healthy_store_as_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    write_blocks(&path, 5);
    let report = RocksStore::repair(&path).expect("repair");
    assert!(!report.found_damage(), "{report:?}");
    assert_eq!(report.blocks_kept, 5);
    assert_eq!(report.blocks_lost, 0);
    assert!(report.feeds.is_empty());
    assert!(report.to_string().contains("nothing to repair"), "{report}");
    let store = RocksStore::open(&path).expect("open");
    assert_eq!(store.len(), 5);
    assert!(!store.was_repaired().expect("read"));
    assert!(!path.join("lost").exists());
}

#[test]
fn a_repair_refuses_a_foreign_directory_and_a_store_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("notes.txt"), b"mine").expect("write");
    let error = RocksStore::repair(dir.path()).expect_err("foreign");
    assert!(matches!(error, StoreError::Foreign { .. }), "{error:?}");

    let path = dir.path().join("store");
    let store = RocksStore::open(&path).expect("open");
    let error = RocksStore::repair(&path).expect_err("in use");
    assert!(matches!(error, StoreError::Locked { .. }), "{error:?}");
    drop(store);
}

#[test]
fn thirty_opens_of_an_empty_store_keep_its_info_logs_small() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    for _ in 0..31 {
        drop(RocksStore::open(&path).expect("open"));
    }
    let logs = allocated(&path, &|name| name.starts_with("LOG"));
    let total = allocated(&path, &|_| true);
    // Each open writes a ~100 KiB info log; three are kept (it was 31, 3 MB).
    assert!(logs < 500 << 10, "info logs take {logs} bytes");
    assert!(total < 1 << 20, "the empty store takes {total} bytes");
}

#[test]
fn a_store_holding_one_block_is_small_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let mut kernel = kernel(&path);
    kernel.create_block(b"one".to_vec()).expect("block");
    // While open (and after a kill) the preallocated write-ahead log and manifest count: it
    // was 70 MiB of log and 4 MiB of manifest.
    let running = allocated(&path, &|_| true);
    assert!(
        running < 4 << 20,
        "a running store of one block takes {running} bytes"
    );
    drop(kernel.close());
    let closed = allocated(&path, &|_| true);
    assert!(
        closed < 1 << 20,
        "a closed store of one block takes {closed} bytes"
    );
}

/// The offsets of the records in the first 32 KiB block of a write-ahead log.
fn record_starts(log: &[u8]) -> Vec<usize> {
    let (mut pos, mut out) = (0, Vec::new());
    while pos + 7 <= log.len().min(32 * 1024) && log[pos..pos + 7].iter().any(|&b| b != 0) {
        out.push(pos);
        pos += 7 + usize::from(u16::from_le_bytes([log[pos + 4], log[pos + 5]]));
    }
    out
}

/// Flips `mask` into byte `at` of `log`, opens the store in `path`, and asserts the open is
/// refused as damage at the record starting at `record`, then undoes the flip.
fn assert_flip_refused(path: &Path, log: &Path, at: usize, mask: u8, record: usize) {
    let clean = std::fs::read(log).expect("read");
    let mut bytes = clean.clone();
    bytes[at] ^= mask;
    std::fs::write(log, &bytes).expect("damage");
    match RocksStore::open(path) {
        Err(StoreError::Damaged {
            file, offset, lost, ..
        }) => {
            assert_eq!(&file, log, "byte {at}");
            assert_eq!(offset, Some(record as u64), "byte {at}");
            assert!(lost.is_some_and(|lost| lost > 0), "byte {at}: {lost:?}");
        }
        Ok(store) => panic!("byte {at} ^ {mask:#x}: opened with {} blocks", store.len()),
        Err(e) => panic!("byte {at} ^ {mask:#x}: {e:?}"),
    }
    assert_eq!(std::fs::read(log).expect("reread"), bytes, "open wrote");
    std::fs::write(log, &clean).expect("undo");
}

#[test]
fn a_flipped_length_or_type_byte_of_a_middle_record_fails_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let author = write_blocks(&path, 30);
    let log = newest_log(&path);
    let starts = record_starts(&std::fs::read(&log).expect("read"));
    assert!(starts.len() > 20, "{starts:?}");
    let record = starts[starts.len() / 2];
    // The high length byte makes RocksDB read "bad record length at end of file" and, in
    // its tolerant mode, stop the log without an error; a type byte RocksDB does not know
    // may drop the log. Every byte of the header, and these flips in particular, is damage.
    assert_flip_refused(&path, &log, record + 5, 0x80, record);
    for kind in [
        0x01 ^ 0x05,
        0x01 ^ 0x0b,
        0x01 ^ 0x80,
        0x01 ^ 0x83,
        0x01 ^ 0xff,
        0x01,
    ] {
        assert_flip_refused(&path, &log, record + 6, kind, record);
    }
    for at in record..record + 7 {
        for mask in [0x01, 0x10, 0x80] {
            assert_flip_refused(&path, &log, at, mask, record);
        }
    }

    // A repair after the length flip keeps the prefix and names the own feed.
    let mut bytes = std::fs::read(&log).expect("read");
    bytes[record + 5] ^= 0x80;
    std::fs::write(&log, &bytes).expect("damage");
    let report = RocksStore::repair(&path).expect("repair");
    assert_eq!(report.damaged_at, Some(record as u64), "{report:?}");
    let feed = report.feed(&author).expect("the own feed is named");
    assert_eq!(feed.before, 29, "{report:?}");
    assert!(feed.kept < Some(29), "{report:?}");
    let store = RocksStore::open(&path).expect("a repaired store opens");
    assert_eq!(store.len(), report.blocks_kept);
}

#[test]
fn a_log_of_garbage_is_refused_in_well_under_a_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    write_blocks(&path, 3);
    let log = newest_log(&path);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let garbage: Vec<u8> = (0..8 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&log, &garbage).expect("write garbage");
    let started = std::time::Instant::now();
    let error = RocksStore::open(&path).expect_err("garbage");
    let took = started.elapsed();
    assert!(
        matches!(
            &error,
            StoreError::Damaged {
                offset: Some(0),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(took < std::time::Duration::from_secs(1), "took {took:?}");
}

#[test]
fn a_block_salvaged_from_a_damaged_table_with_a_flipped_signature_is_not_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let n = 100u64;
    let (_, table) = write_table_blocks(&path, n);
    let store = RocksStore::open(&path).expect("open");
    let mut bytes = std::fs::read(&table).expect("read");
    // A block in the table, found by its signature: its id hashes the header only, so with a
    // flipped signature byte it still decodes with the id that is its key.
    let at = store
        .blocks()
        .expect("read")
        .iter()
        .find_map(|b| {
            let sig = &b.signature().0[..];
            bytes.windows(sig.len()).position(|w| w == sig)
        })
        .expect("a block's signature in the table");
    drop(store);
    bytes[at + 10] ^= 0x01;
    std::fs::write(&table, &bytes).expect("damage the signature");

    let report = RocksStore::repair(&path).expect("repair");
    assert!(report.rebuilt, "{report:?}");
    assert_eq!(report.blocks_before(), n as usize - 1, "{report:?}");
    let set_aside = report.lost_blocks().expect("read");
    assert!(set_aside.iter().all(|b| b.verify().is_ok()), "{report:?}");
    let store = RocksStore::open(&path).expect("a repaired store opens");
    let blocks = store.blocks().expect("read");
    assert_eq!(blocks.len(), report.blocks_kept);
    assert!(
        blocks.iter().all(|b| b.verify().is_ok()),
        "an unsigned block was kept"
    );
}

/// Counts blocks; each one's contribution expires 1,000 ms after its time.
struct Fleeting;
impl Slice for Fleeting {
    type State = u64;
    fn name(&self) -> &str {
        "fleeting"
    }
    fn initial(&self) -> u64 {
        0
    }
    fn filter(&self, _: &Context<'_>, _: &u64) -> Verdict {
        Verdict::Accept
    }
    fn reduce(&self, _: &Context<'_>, state: &mut u64) {
        *state += 1;
    }
    fn expires_at(&self, ctx: &Context<'_>) -> Option<u64> {
        Some(ctx.block().time() + 1_000)
    }
}

struct FleetingApp;
impl Application for FleetingApp {
    fn register(&self, slices: &mut Registry) {
        slices.add(Fleeting);
    }
}

#[test]
fn expiry_timers_the_store_lost_are_derived_again_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let clock = ManualClock::new(10_000);
    let open = |clock: &ManualClock| {
        Kernel::builder(&FleetingApp)
            .with_store(RocksStore::open(&path).expect("open"))
            .with_identity(Identity::from_secret([7; 32]))
            .with_clock(clock.clone())
            .open()
            .expect("kernel")
    };
    let mut kernel = open(&clock);
    for i in 0..5u8 {
        kernel.create_block(vec![i]).expect("block");
    }
    assert!(!kernel.store().timers().expect("timers").is_empty());
    drop(kernel.close());

    // The timers vanish from the store, as a repair from damaged table files can leave it.
    {
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), path.join("db")).expect("cfs");
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), path.join("db"), &cfs)
            .expect("raw open");
        let timers = db.cf_handle("timers").expect("the timers family");
        let keys: Vec<Box<[u8]>> = db
            .iterator_cf(timers, rocksdb::IteratorMode::Start)
            .map(|item| item.expect("a timer").0)
            .collect();
        assert_eq!(keys.len(), 5);
        for key in keys {
            db.delete_cf(timers, key).expect("delete");
        }
    }

    let mut kernel = open(&clock);
    assert!(kernel.store().timers().expect("timers").is_empty());
    assert_eq!(kernel.state::<Fleeting>(), Some(&5));
    clock.advance(2_000);
    let report = kernel.gc(kernel.now()).expect("gc");
    assert_eq!(report.collected, 5, "every block expires all the same");
    assert_eq!(kernel.state::<Fleeting>(), Some(&0));
}
