//! RocksStore's handling of bad directories, locking and the identity file.
#![cfg(feature = "rocksdb")]

use std::os::unix::fs::PermissionsExt;

use blockend_kernel::store::{BlockStore, RocksStore, StoreError};
use blockend_kernel::{Application, Kernel, Registry};

struct Nothing;
impl Application for Nothing {
    fn register(&self, _: &mut Registry) {}
}

fn listing(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| {
            let e = e.expect("entry");
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_foreign_directory_is_refused_without_writing() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("notes.txt"), b"my notes").expect("write");
    let before = listing(dir.path());
    let error = RocksStore::open(dir.path()).expect_err("not a store");
    assert!(matches!(&error, StoreError::Foreign { path } if path == dir.path()));
    let message = error.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(!message.contains('\n'), "one line: {message}");
    assert_eq!(listing(dir.path()), before, "nothing was written");
}

#[test]
fn a_corrupted_store_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    drop(RocksStore::open(&path).expect("create"));
    // Wreck every RocksDB file.
    for entry in std::fs::read_dir(path.join("db")).expect("list") {
        let entry = entry.expect("entry");
        if entry.path().is_file() {
            std::fs::write(entry.path(), b"garbage").expect("overwrite");
        }
    }
    let error = RocksStore::open(&path).expect_err("corrupt");
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
}

#[test]
fn a_store_in_use_is_locked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = RocksStore::open(dir.path()).expect("open");
    let error = RocksStore::open(dir.path()).expect_err("locked");
    assert!(matches!(error, StoreError::Locked { .. }), "{error}");
    assert!(error.to_string().contains("locked"), "{error}");
    drop(first);
    RocksStore::open(dir.path()).expect("free again");
}

#[test]
fn the_identity_file_is_private_and_restored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let author = {
        let store = RocksStore::open(dir.path()).expect("open");
        Kernel::builder(&Nothing)
            .with_store(store)
            .open()
            .expect("kernel")
            .author()
    };
    let mode = std::fs::metadata(dir.path().join("identity"))
        .expect("identity file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let store = RocksStore::open(dir.path()).expect("reopen");
    assert!(store.identity().expect("read").is_some());
    let kernel = Kernel::builder(&Nothing)
        .with_store(store)
        .open()
        .expect("kernel");
    assert_eq!(kernel.author(), author, "never regenerated silently");
}
