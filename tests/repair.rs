//! `blockend repair`: a store whose write-ahead log was damaged is refused by every verb with
//! one line that says what to run; the repair keeps the intact part and says what was lost;
//! then the store opens again.

mod common;

use std::path::{Path, PathBuf};

use blockend::kernel::store::RocksStore;
use blockend::kernel::Kernel;
use blockend::ReadyApp;
use common::{json_lines, one_line_error, run};

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The newest write-ahead log of the store in `dir`.
fn newest_log(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir.join("db"))
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
        .expect("a write-ahead log")
}

#[test]
fn a_damaged_store_is_refused_with_what_to_run_and_repair_keeps_the_intact_part() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let init = run(&["init", "--store", s(&store)]);
    assert!(init.status.success(), "{init:?}");
    // Fifty blocks, then a kill: the blocks are in the write-ahead log only.
    {
        let app = ReadyApp::Counter;
        let mut kernel = Kernel::builder(&app)
            .with_store(RocksStore::open(&store).expect("open"))
            .open()
            .expect("kernel");
        for value in 1..=50u64 {
            kernel
                .create_block(format!(r#"{{"value":{value}}}"#).into_bytes())
                .expect("append");
        }
    }
    let log = newest_log(&store);
    let mut bytes = std::fs::read(&log).expect("read the log");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&log, bytes).expect("write the log");

    let line = one_line_error(&run(&["cat", "--store", s(&store)]));
    assert!(line.contains("damaged"), "{line}");
    assert!(
        line.contains("blockend repair --store"),
        "says what to run: {line}"
    );

    let output = run(&["repair", "--store", s(&store)]);
    assert!(output.status.success(), "{output:?}");
    let report = json_lines(&output).remove(0);
    assert_eq!(report["found_damage"], true, "{report}");
    let kept = report["blocks_kept"].as_u64().unwrap();
    assert!(kept < 50, "{report}");
    // Readable blocks: kept ones plus those set aside (a block inside the damaged record
    // cannot be read at all).
    let before = report["blocks_before"].as_u64().unwrap();
    assert!(before > kept && before <= 50, "{report}");
    let feed = &report["feeds"][0];
    assert_eq!(feed["author"].as_str().map(str::len), Some(64), "{report}");
    assert_eq!(feed["kept"].as_u64(), Some(kept - 1), "{report}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("kept {kept} blocks")), "{stderr}");

    // The store opens again, holding the intact prefix of the feed.
    let output = run(&["cat", "--store", s(&store)]);
    assert!(output.status.success(), "{output:?}");
    let blocks = json_lines(&output);
    assert_eq!(blocks.len() as u64, kept);
    for (seq, block) in blocks.iter().enumerate() {
        assert_eq!(block["seq"].as_u64(), Some(seq as u64));
    }
    // A second repair finds nothing to do.
    let again = run(&["repair", "--store", s(&store)]);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(json_lines(&again).remove(0)["found_damage"], false);
}

#[test]
fn repair_without_a_store_fails_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let line = one_line_error(&run(&["repair", "--store", s(&dir.path().join("none"))]));
    assert!(line.contains("no store"), "{line}");
}
