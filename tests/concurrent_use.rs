//! Concurrent use of one store: offline writers queue for the lock, reads take none, so a
//! node starts while reads run, and read verbs never write (no identity above all).

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use blockend::kernel::store::RocksStore;
use common::{blockend, json_lines, one_line_error, run, NodeProcess};

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs `blockend ARGS` with `BLOCKEND_LOCK_TIMEOUT_MS` set to `lock_ms`.
fn run_waiting(args: &[&str], lock_ms: u64) -> Output {
    blockend()
        .args(args)
        .env("BLOCKEND_LOCK_TIMEOUT_MS", lock_ms.to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the binary runs")
}

fn init(store: &Path) {
    let output = run(&["init", "--store", s(store)]);
    assert!(output.status.success(), "{output:?}");
}

fn total(store: &Path) -> serde_json::Value {
    let output = run(&["state", "--store", s(store)]);
    assert!(output.status.success(), "{output:?}");
    json_lines(&output).remove(0)["state"]["total"].clone()
}

#[test]
fn fifty_concurrent_offline_appends_all_succeed_with_distinct_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let output = run(&["init", "--store", s(&store), "--app", "kv"]);
    assert!(output.status.success(), "{output:?}");
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                let body = format!(r#"{{"set":{{"key":"k{i}","value":{i}}}}}"#);
                run_waiting(&["append", "--store", s(&store), &body], 60_000)
            })
        })
        .collect();
    let mut seqs = HashSet::new();
    for thread in threads {
        let output = thread.join().expect("thread");
        assert!(output.status.success(), "{output:?}");
        let lines = json_lines(&output);
        assert_eq!(lines.len(), 1, "{output:?}");
        assert!(
            seqs.insert(lines[0]["seq"].as_u64().expect("seq")),
            "a seq was used twice: {}",
            lines[0]
        );
    }
    assert_eq!(seqs, (0..50).collect::<HashSet<u64>>());
    let output = run(&["cat", "--store", s(&store)]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(json_lines(&output).len(), 50);
}

#[test]
fn a_node_starts_every_time_while_state_runs_in_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store);
    let output = run(&["append", "--store", s(&store), r#"{"value":3}"#]);
    assert!(output.status.success(), "{output:?}");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let output = run(&["state", "--store", s(&store)]);
                assert!(output.status.success(), "a read failed: {output:?}");
                assert_eq!(json_lines(&output)[0]["state"]["total"], 3, "{output:?}");
                reads += 1;
            }
            reads
        })
    };
    for _ in 0..5 {
        // `start` panics unless the node prints its address.
        let node = NodeProcess::start(&store, &[]);
        node.stop();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("every read succeeded");
    assert!(reads > 0);
}

#[test]
fn reads_succeed_while_a_writer_holds_the_lock_and_writers_wait_then_fail_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store);
    let output = run(&["append", "--store", s(&store), r#"{"value":2}"#]);
    assert!(output.status.success(), "{output:?}");
    let held = RocksStore::open(&store).expect("the test holds the store");
    assert_eq!(total(&store), 2);
    let output = run(&["cat", "--store", s(&store)]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(json_lines(&output).len(), 1);
    let output = run(&["stats", "--store", s(&store)]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(json_lines(&output)[0]["blocks_stored"], 1);

    let started = Instant::now();
    let line = one_line_error(&run_waiting(
        &["append", "--store", s(&store), r#"{"value":1}"#],
        300,
    ));
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        line.contains(&format!(
            "the store at {} is locked by another process",
            s(&store)
        )) && line.contains("waited"),
        "{line}"
    );

    // A writer that is still waiting when the lock comes free goes ahead: the lock is let go
    // once the writer has started.
    let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = started.clone();
    let path = store.clone();
    let writer = std::thread::spawn(move || {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        run_waiting(&["append", "--store", s(&path), r#"{"value":3}"#], 30_000)
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
    let output = writer.join().expect("writer");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(total(&store), 3);
}

#[test]
fn read_verbs_never_write_an_identity_and_writers_refuse_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store);
    let output = run(&["append", "--store", s(&store), r#"{"value":5}"#]);
    assert!(output.status.success(), "{output:?}");
    let author = json_lines(&output)[0]["author"].clone();
    let identity = store.join("identity");
    let secret = std::fs::read(&identity).expect("identity");

    std::fs::remove_file(&identity).expect("remove");
    for verb in ["state", "cat", "stats"] {
        let output = run(&[verb, "--store", s(&store)]);
        assert!(output.status.success(), "{verb}: {output:?}");
    }
    assert!(!identity.exists(), "a read verb wrote an identity");
    assert_eq!(total(&store), 5);
    let line = one_line_error(&run(&["append", "--store", s(&store), r#"{"value":1}"#]));
    assert!(
        line.contains("identity file is missing or damaged"),
        "{line}"
    );
    assert!(!identity.exists(), "append wrote a new identity");
    one_line_error(&run(&["init", "--store", s(&store)]));
    assert!(!identity.exists(), "init wrote a new identity");

    // A truncated identity blocks no read either.
    std::fs::write(&identity, &secret[..7]).expect("truncate");
    for verb in ["cat", "stats", "state"] {
        let output = run(&[verb, "--store", s(&store)]);
        assert!(output.status.success(), "{verb}: {output:?}");
    }
    let line = one_line_error(&run(&["append", "--store", s(&store), r#"{"value":1}"#]));
    assert!(line.contains("restore"), "{line}");
    assert_eq!(std::fs::read(&identity).expect("identity"), &secret[..7]);

    std::fs::write(&identity, &secret).expect("restore");
    let output = run(&["append", "--store", s(&store), r#"{"value":6}"#]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(json_lines(&output)[0]["author"], author, "a new author");
}
