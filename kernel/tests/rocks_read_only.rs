//! RocksStore opened read-only beside a writer, writers waiting for the lock, and a store that
//! lost its identity file.
#![cfg(feature = "rocksdb")]

use std::path::Path;
use std::time::{Duration, Instant};

use blockend_kernel::store::{Batch, BlockStore, RocksConfig, RocksStore, StoreError};
use blockend_kernel::{Application, Context, Kernel, Registry, Slice, Verdict};

/// Accepts every block and counts them.
struct Count;
impl Slice for Count {
    type State = u64;
    fn name(&self) -> &str {
        "count"
    }
    fn initial(&self) -> Self::State {
        0
    }
    fn filter(&self, _: &Context<'_>, _: &Self::State) -> Verdict {
        Verdict::Accept
    }
    fn reduce(&self, _: &Context<'_>, state: &mut Self::State) {
        *state += 1;
    }
}

struct Counting;
impl Application for Counting {
    fn register(&self, slices: &mut Registry) {
        slices.add(Count);
    }
}

/// Every file under `dir` with its bytes, sorted by path.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(tree(&path));
        } else {
            let bytes = std::fs::read(&path).unwrap_or_default();
            out.push((path.display().to_string(), bytes));
        }
    }
    out.sort();
    out
}

/// A store in `dir` holding `n` blocks of its own feed, closed.
fn store_with_blocks(dir: &Path, n: usize) {
    let store = RocksStore::open(dir).expect("open");
    let mut kernel = Kernel::builder(&Counting)
        .with_store(store)
        .open()
        .expect("kernel");
    for i in 0..n {
        kernel.create_block(vec![i as u8]).expect("append");
    }
}

#[test]
fn a_read_only_open_beside_the_writer_sees_every_commit_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = RocksStore::open(dir.path()).expect("open");
    let mut kernel = Kernel::builder(&Counting)
        .with_store(writer)
        .open()
        .expect("kernel");
    for i in 0..3u8 {
        kernel.create_block(vec![i]).expect("append");
    }
    // The writer still holds the lock; its commits are in the write-ahead log only.
    let before = tree(dir.path());
    let reader = RocksStore::open_read_only(dir.path()).expect("a read takes no lock");
    assert!(reader.is_read_only());
    assert_eq!(reader.len(), 3);
    assert_eq!(reader.blocks().expect("blocks").len(), 3);
    let reading = Kernel::builder(&Counting)
        .with_store(reader)
        .open()
        .expect("a kernel on a read-only store");
    assert_eq!(reading.head(&kernel.author()).map(|h| h.seq), Some(2));
    drop(reading);
    assert_eq!(tree(dir.path()), before, "a read-only open wrote");

    kernel.create_block(vec![9]).expect("the writer goes on");
    let reader = RocksStore::open_read_only(dir.path()).expect("open again");
    assert_eq!(
        reader.len(),
        4,
        "a later read-only open sees the newer commit"
    );
}

#[test]
fn a_read_only_store_refuses_writes_with_a_typed_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    store_with_blocks(dir.path(), 1);
    let mut reader = RocksStore::open_read_only(dir.path()).expect("open");
    let before = tree(dir.path());
    let error = reader.commit(Batch::default()).expect_err("commit");
    assert!(matches!(error, StoreError::ReadOnly { .. }), "{error:?}");
    let error = reader.set_identity([7; 32]).expect_err("set_identity");
    assert!(matches!(error, StoreError::ReadOnly { .. }), "{error:?}");
    assert_eq!(tree(dir.path()), before);
}

#[test]
fn a_read_only_open_creates_no_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("store");
    let error = RocksStore::open_read_only(&missing).expect_err("missing");
    assert!(matches!(error, StoreError::Foreign { .. }), "{error:?}");
    assert!(!missing.exists());
    let error = RocksStore::open_read_only(dir.path()).expect_err("empty");
    assert!(matches!(error, StoreError::Foreign { .. }), "{error:?}");
    assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
}

#[test]
fn a_writer_waits_for_the_lock_and_then_fails_in_one_clear_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let held = RocksStore::open(dir.path()).expect("open");
    let started = Instant::now();
    let error = RocksStore::open_with(
        dir.path(),
        RocksConfig::default().with_lock_timeout(Duration::from_millis(150)),
    )
    .expect_err("locked");
    assert!(started.elapsed() >= Duration::from_millis(150));
    let StoreError::Locked { waited, .. } = &error else {
        panic!("{error:?}");
    };
    assert!(*waited >= Duration::from_millis(150), "{waited:?}");
    let line = error.to_string();
    assert!(
        line.contains("is locked by another process") && line.contains("waited"),
        "{line}"
    );
    assert!(!line.contains('\n'), "{line}");

    // Let go once the next writer has started waiting: it gets the store.
    let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let path = dir.path().to_owned();
    let flag = started.clone();
    let writer = std::thread::spawn(move || {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        RocksStore::open_with(
            &path,
            RocksConfig::default().with_lock_timeout(Duration::from_secs(10)),
        )
        .map(drop)
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !started.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never started"
        );
        std::thread::yield_now();
    }
    drop(held);
    writer
        .join()
        .expect("writer")
        .expect("the lock came free within the wait");
}

#[test]
fn a_store_holding_blocks_is_never_given_a_new_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    store_with_blocks(dir.path(), 2);
    let identity = dir.path().join("identity");
    let secret = std::fs::read(&identity).expect("identity");

    std::fs::remove_file(&identity).expect("remove");
    let error = RocksStore::open(dir.path()).expect_err("no identity");
    assert!(
        matches!(error, StoreError::IdentityLost { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("identity file is missing or damaged"),
        "{error}"
    );
    assert!(!identity.exists(), "a new identity was written");

    std::fs::write(&identity, &secret[..10]).expect("truncate");
    let error = RocksStore::open(dir.path()).expect_err("damaged identity");
    assert!(
        matches!(error, StoreError::IdentityLost { .. }),
        "{error:?}"
    );
    assert_eq!(std::fs::read(&identity).expect("identity"), &secret[..10]);

    // Reading needs no secret and writes none.
    let reader = RocksStore::open_read_only(dir.path()).expect("read without the key");
    let kernel = Kernel::builder(&Counting)
        .with_store(reader)
        .open()
        .expect("kernel");
    assert_eq!(kernel.stats().blocks, 2);
    drop(kernel);
    assert_eq!(std::fs::read(&identity).expect("identity"), &secret[..10]);

    // Restored, the store opens as the same author.
    std::fs::write(&identity, &secret).expect("restore");
    let store = RocksStore::open(dir.path()).expect("restored");
    assert!(store.identity().expect("identity").is_some());
}

#[test]
fn an_empty_store_gets_an_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RocksStore::open(dir.path()).expect("open");
    let kernel = Kernel::builder(&Counting)
        .with_store(store)
        .open()
        .expect("kernel");
    drop(kernel);
    assert!(dir.path().join("identity").is_file());
}
