//! `blockend repair`: a store whose write-ahead log was damaged is refused by every verb with
//! one line that says what to run; the repair keeps the intact part and says what was lost;
//! then the store opens again.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blockend::kernel::store::RocksStore;
use blockend::kernel::{Block, Kernel};
use blockend::node;
use blockend::{Node, ReadyApp};
use common::swarm::{self, address};
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
    // The own feed lost its newest blocks: an offline append would sign at a height already
    // used, so it is refused, saying what to do.
    let line = one_line_error(&run(&["append", "--store", s(&store), r#"{"value":99}"#]));
    assert!(line.contains("was repaired"), "{line}");
    assert!(line.contains("blockend node --store"), "{line}");
}

/// Writes fifty counter blocks on a fresh store in `dir`, kills it, damages the log and
/// repairs it. Returns the store's path and the fifty blocks as they were.
fn damaged_and_repaired(dir: &Path) -> (PathBuf, Vec<Arc<Block>>) {
    let store = dir.join("store");
    let init = run(&["init", "--store", s(&store)]);
    assert!(init.status.success(), "{init:?}");
    let blocks = {
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
        kernel.blocks_from(&kernel.author(), 0, usize::MAX, usize::MAX)
    };
    let log = newest_log(&store);
    let mut bytes = std::fs::read(&log).expect("read the log");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&log, bytes).expect("write the log");
    let report = RocksStore::repair(&store).expect("repair");
    assert!(report.found_damage() && report.blocks_kept < 50);
    (store, blocks)
}

/// Appends until the node accepts, as a user retrying would; every refusal must be the wait
/// for the own feed.
async fn append_when_allowed(node: &Node, body: &str) -> Arc<Block> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match node.handle().append(body.as_bytes().to_vec()).await {
            Ok(block) => return block,
            Err(node::Error::Recovering { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("append failed: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_a_repaired_store_waits_for_peers_to_return_its_own_feed_before_appending() {
    let dir = tempfile::tempdir().unwrap();
    let (store, blocks) = damaged_and_repaired(dir.path());
    // A peer that holds the whole feed.
    let app = ReadyApp::Counter;
    let mut held = Kernel::builder(&app).open().expect("kernel");
    held.dispatch_shared(blocks.iter().cloned())
        .expect("dispatch");
    let peer = Node::spawn(
        held,
        Arc::new(app),
        swarm::config(vec![], Duration::from_millis(100)),
    )
    .await
    .expect("the peer starts");

    let (kernel, app, repair) = blockend::store::open_checked(&store, None, false).expect("open");
    let loss = blockend::store::own_feed_loss(&store, &kernel, repair.as_ref()).expect("a loss");
    assert_eq!(loss.before, 49);
    let config = swarm::config(vec![address(&peer).await], Duration::from_millis(100));
    let node = Node::spawn(kernel, Arc::new(app), config)
        .await
        .expect("the node starts");
    node.handle()
        .recover_own_feed(loss.before, Duration::from_secs(30))
        .await
        .expect("running");
    let block = append_when_allowed(&node, r#"{"value":51}"#).await;
    assert_eq!(
        block.seq(),
        50,
        "the new block follows the whole feed: no height reused"
    );
    assert_eq!(block.parent(), Some(blocks[49].id()));
    node.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_peers_a_repaired_node_appends_after_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = damaged_and_repaired(dir.path());
    let (kernel, app, repair) = blockend::store::open_checked(&store, None, false).expect("open");
    let loss = blockend::store::own_feed_loss(&store, &kernel, repair.as_ref()).expect("a loss");
    let kept = loss.kept.expect("a prefix is kept");
    let node = Node::spawn(
        kernel,
        Arc::new(app),
        swarm::config(vec![], Duration::from_millis(100)),
    )
    .await
    .expect("the node starts");
    node.handle()
        .recover_own_feed(loss.before, Duration::from_millis(500))
        .await
        .expect("running");
    let refused = node.handle().append(br#"{"value":60}"#.to_vec()).await;
    assert!(
        matches!(refused, Err(node::Error::Recovering { want: 49, .. })),
        "{refused:?}"
    );
    let block = append_when_allowed(&node, r#"{"value":60}"#).await;
    assert_eq!(
        block.seq(),
        kept + 1,
        "after the wait the feed goes on from what is kept"
    );
    node.shutdown().await;
}

#[test]
fn repair_without_a_store_fails_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let line = one_line_error(&run(&["repair", "--store", s(&dir.path().join("none"))]));
    assert!(line.contains("no store"), "{line}");
}
