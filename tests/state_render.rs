//! A counter one author pushed to `u64::MAX` and another author bumped past 64 bits in total:
//! `blockend state` still renders it (the total as a decimal string), offline and through a
//! running node, both authors can append again, and every ready-made app renders its state
//! after hostile bodies through the function the node and the CLI use.

mod common;

use std::path::Path;

use blockend::kernel::store::RocksStore;
use blockend::kernel::{Block, Feed, Identity, Kernel, ManualClock, Outcome};
use blockend::{api, NodeApp, ReadyApp};
use common::{json_lines, one_line_error, run, NodeProcess};

const MAX: &str = "18446744073709551615";

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn init(store: &Path, app: &str) -> String {
    let output = run(&["init", "--store", s(store), "--app", app]);
    assert!(output.status.success(), "{output:?}");
    json_lines(&output)[0]["author"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn append(store: &Path, body: &str) -> serde_json::Value {
    let output = run(&["append", "--store", s(store), body]);
    assert!(output.status.success(), "{output:?}");
    json_lines(&output).remove(0)
}

fn state(store: &Path) -> serde_json::Value {
    let output = run(&["state", "--store", s(store)]);
    assert!(output.status.success(), "{output:?}");
    json_lines(&output).remove(0)
}

/// Every block of the store in `dir`, read with the kernel API (no verb exports blocks).
fn blocks_of(dir: &Path) -> Vec<Block> {
    let kernel = Kernel::builder(&ReadyApp::Counter)
        .with_store(RocksStore::open(dir).unwrap())
        .open()
        .unwrap();
    let blocks = api::blocks(&kernel, None)
        .into_iter()
        .map(|b| (*b).clone())
        .collect();
    drop(kernel.close());
    blocks
}

/// Hands `blocks` to the store in `dir` as a peer's sync would; returns their outcomes.
fn receive(dir: &Path, blocks: Vec<Block>) -> Vec<Outcome> {
    let mut kernel = Kernel::builder(&ReadyApp::Counter)
        .with_store(RocksStore::open(dir).unwrap())
        .open()
        .unwrap();
    let ids: Vec<_> = blocks.iter().map(Block::id).collect();
    let report = kernel.dispatch(blocks).unwrap();
    drop(kernel.close());
    ids.iter()
        .map(|id| report.outcome(id).cloned().unwrap())
        .collect()
}

/// Alice's and Bob's stores, each holding Alice's `u64::MAX` and Bob's 5 (the total is past
/// 64 bits), as if synced; returns the stores and the two authors.
fn past_u64(dir: &Path) -> [(std::path::PathBuf, String); 2] {
    let (alice_store, bob_store) = (dir.join("alice"), dir.join("bob"));
    let alice = init(&alice_store, "counter");
    let bob = init(&bob_store, "counter");
    append(&alice_store, &format!(r#"{{"value": {MAX}}}"#));
    append(&bob_store, r#"{"value": 5}"#);
    // One author's huge value never gets another author's block refused, in either store.
    let (alices, bobs) = (blocks_of(&alice_store), blocks_of(&bob_store));
    assert_eq!(receive(&alice_store, bobs), [Outcome::Accepted]);
    assert_eq!(receive(&bob_store, alices), [Outcome::Accepted]);
    [(alice_store, alice), (bob_store, bob)]
}

#[test]
fn a_counter_total_past_u64_renders_as_a_decimal_string_and_both_authors_append_again() {
    let dir = tempfile::tempdir().unwrap();
    let [(alice_store, alice), (bob_store, bob)] = past_u64(dir.path());

    for store in [&alice_store, &bob_store] {
        let shown = state(store);
        assert_eq!(shown["state"]["total"], "18446744073709551620", "{shown}");
        assert_eq!(shown["state"]["by_author"][&alice], u64::MAX, "{shown}");
        assert_eq!(shown["state"]["by_author"][&bob], 5, "{shown}");
        assert!(shown["digest"].is_string() && shown["set_hash"].is_string());
    }
    assert_eq!(state(&alice_store)["digest"], state(&bob_store)["digest"]);

    // Alice's counter is full: she may repeat its value, and nothing below it.
    let block = append(&alice_store, &format!(r#"{{"value": {MAX}}}"#));
    assert_eq!(block["author"], alice.as_str());
    assert_eq!(block["seq"], 1);
    let line = one_line_error(&run(&[
        "append",
        "--store",
        s(&alice_store),
        r#"{"value": 7}"#,
    ]));
    assert!(line.contains("does not exceed"), "{line}");
    assert_eq!(
        state(&alice_store)["state"]["total"],
        "18446744073709551620"
    );
    // Bob is judged against his own 5 only.
    let block = append(&bob_store, r#"{"value": 6}"#);
    assert_eq!(
        (&block["author"], &block["seq"]),
        (&bob.as_str().into(), &1.into())
    );
    assert_eq!(state(&bob_store)["state"]["total"], "18446744073709551621");
}

#[test]
fn a_running_node_serves_the_same_state_and_keeps_the_author_writable() {
    let dir = tempfile::tempdir().unwrap();
    let [(store, alice), _] = past_u64(dir.path());
    let offline = state(&store);
    let node = NodeProcess::start(&store, &[]);
    assert_eq!(
        state(&store),
        offline,
        "the node renders what the CLI renders"
    );
    let block = append(&store, &format!(r#"{{"value": {MAX}}}"#));
    assert_eq!(block["author"], alice.as_str());
    assert_eq!(state(&store)["state"]["total"], "18446744073709551620");
    node.stop();
}

/// Extreme bodies for every ready-made slice, valid and hostile.
fn extreme_bodies() -> Vec<String> {
    let now = 1_700_000_000_000u64;
    let numbers = [
        "0".to_owned(),
        MAX.to_owned(),
        "18446744073709551616".to_owned(),
        u128::MAX.to_string(),
        "-1".to_owned(),
        "1.5".to_owned(),
        "1e400".to_owned(),
        now.to_string(),
    ];
    let texts = [
        r#""""#.to_owned(),
        r#""\u0000 \ud83d\ude00""#.to_owned(),
        r#""\ud800""#.to_owned(),
        format!("\"{}\"", "x".repeat(64)),
        format!("\"{}\"", "x".repeat(30_000)),
    ];
    let deep = [
        format!("{}{}", "[".repeat(127), "]".repeat(127)),
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
    ];
    let mut bodies = Vec::new();
    for n in &numbers {
        bodies.push(format!(r#"{{"value": {n}}}"#));
        bodies.push(format!(r#"{{"tick": {n}}}"#));
        bodies.push(format!(r#"{{"room": "r", "text": "t", "ttl_ms": {n}}}"#));
        bodies.push(format!(r#"{{"set": {{"key": "k", "value": {n}}}}}"#));
    }
    for t in &texts {
        bodies.push(format!(r#"{{"room": {t}, "text": {t}, "ttl_ms": 1000}}"#));
        bodies.push(format!(r#"{{"set": {{"key": {t}, "value": {t}}}}}"#));
        bodies.push(format!(r#"{{"delete": {t}}}"#));
    }
    for d in &deep {
        bodies.push(format!(r#"{{"set": {{"key": "deep", "value": {d}}}}}"#));
        bodies.push(d.clone());
    }
    bodies
}

#[test]
fn every_ready_app_renders_its_state_after_extreme_bodies_from_several_authors() {
    let now = 1_700_000_000_000u64 + 10_000_000;
    let bodies = extreme_bodies();
    for app in ReadyApp::ALL {
        let mut kernel = Kernel::builder(&app)
            .with_clock(ManualClock::new(now))
            .open()
            .unwrap();
        for n in 1..=3u8 {
            let identity = Identity::from_secret([n; 32]);
            let mut feed = Feed::new();
            for (i, body) in bodies.iter().enumerate() {
                let time = now - 1_000_000 + i as u64 * 1000;
                feed.append(&identity, body.clone().into_bytes(), time);
            }
            kernel.dispatch(feed.into_blocks()).unwrap();
        }
        for body in &bodies {
            let _ = kernel.create_block(body.clone().into_bytes());
        }
        let state = app
            .state_json(&kernel, app.as_str())
            .unwrap_or_else(|e| panic!("{}: {e}", app.as_str()));
        assert!(state.is_object() || app == ReadyApp::Clock, "{state}");
    }
}
