//! Retention from the command line: `--capacity` in human units, remembered by the store and
//! replaced by a later flag; `follow` and `unfollow`, offline and through a running node,
//! persisted; `feeds` in retention order; the capacity figures in `stats`.

mod common;

use std::path::Path;
use std::time::Duration;

use blockend::kernel::Kernel;
use blockend::ReadyApp;
use common::{eventually, json_lines, one_line_error, run, NodeProcess};

const GIB: u64 = 1 << 30;

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs a verb that must succeed and print JSON lines.
fn lines(args: &[&str]) -> Vec<serde_json::Value> {
    let output = run(args);
    assert!(output.status.success(), "blockend {args:?}: {output:?}");
    json_lines(&output)
}

fn stats(store: &Path) -> serde_json::Value {
    lines(&["stats", "--store", s(store)]).remove(0)
}

fn feeds(store: &Path) -> Vec<serde_json::Value> {
    lines(&["feeds", "--store", s(store)])
}

fn author_of(store: &Path) -> String {
    lines(&["init", "--store", s(store)])[0]["author"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn append(store: &Path, value: u64) -> serde_json::Value {
    lines(&[
        "append",
        "--store",
        s(store),
        &format!(r#"{{"value": {value}}}"#),
    ])
    .remove(0)
}

/// The line of `author`'s feed in `store`'s `feeds`, if it is listed.
fn feed_of(store: &Path, author: &str) -> Option<serde_json::Value> {
    feeds(store).into_iter().find(|f| f["author"] == author)
}

/// Starts node A, and node B dialing it; appends on both; waits until B holds A's feed.
/// Returns the two nodes and their authors.
fn synced_pair(a: &Path, b: &Path) -> (NodeProcess, NodeProcess, String, String) {
    let node_a = NodeProcess::start(a, &[]);
    let node_b = NodeProcess::start(b, &["--peer", &node_a.addr]);
    let author_b = append(b, 1)["author"].as_str().unwrap().to_owned();
    let author_a = append(a, 1)["author"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(60), || feed_of(b, &author_a))
        .expect("B stores A's feed within a minute");
    (node_a, node_b, author_a, author_b)
}

#[test]
fn capacity_takes_human_units_and_a_bad_unit_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    for (given, bytes) in [
        ("1.5GiB", 1_610_612_736u64),
        ("500 mb", 500_000_000),
        ("2KiB", 2048),
        ("4096", 4096),
        ("3tb", 3_000_000_000_000),
    ] {
        let store = dir.path().join(given.replace(['.', ' '], "_"));
        let output = run(&["init", "--store", s(&store), "--capacity", given]);
        assert!(output.status.success(), "{given}: {output:?}");
        assert_eq!(stats(&store)["capacity_bytes"], bytes, "{given}");
    }
    let store = dir.path().join("bad");
    for bad in ["12XB", "GiB", "1.2.3MB", "1e3", "1,5GiB", "99999999999TiB"] {
        let line = one_line_error(&run(&["init", "--store", s(&store), "--capacity", bad]));
        assert!(
            line.contains(&format!("invalid value '{bad}' for '--capacity <SIZE>'")),
            "{line}"
        );
        let line = one_line_error(&run(&["node", "--store", s(&store), "--capacity", bad]));
        assert!(line.contains("--capacity <SIZE>"), "{line}");
    }
    let line = one_line_error(&run(&["init", "--store", s(&store), "--capacity", "12XB"]));
    assert!(line.contains("unknown unit \"XB\""), "{line}");
    assert!(!store.exists(), "a refused capacity left a store behind");
}

#[test]
fn capacity_is_remembered_across_runs_and_replaced_by_a_later_flag() {
    let dir = tempfile::tempdir().unwrap();
    // No flag, no remembered value: the default, and nothing is written.
    let fresh = dir.path().join("fresh");
    author_of(&fresh);
    assert_eq!(stats(&fresh)["capacity_bytes"], GIB);
    assert!(!fresh.join("capacity").exists());

    let store = dir.path().join("store");
    let output = run(&["init", "--store", s(&store), "--capacity", "2MiB"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        std::fs::read_to_string(store.join("capacity"))
            .unwrap()
            .trim(),
        "2097152"
    );
    // A node started without the flag uses the remembered value.
    let node = NodeProcess::start(&store, &[]);
    assert_eq!(stats(&store)["capacity_bytes"], 2_097_152);
    node.stop();
    // A later flag replaces it, says so on stderr, and is remembered in turn.
    let mut node = NodeProcess::start(&store, &["--capacity", "3MB"]);
    assert_eq!(stats(&store)["capacity_bytes"], 3_000_000);
    let said = node
        .stderr_lines()
        .into_iter()
        .any(|l| l.contains("capacity") && l.contains("3000000") && l.contains("2097152"));
    assert!(
        said,
        "no word of the replacement: {:?}",
        node.stderr_lines()
    );
    node.stop();
    assert_eq!(stats(&store)["capacity_bytes"], 3_000_000);
    let node = NodeProcess::start(&store, &[]);
    assert_eq!(stats(&store)["capacity_bytes"], 3_000_000);
    node.stop();
}

#[test]
fn stats_shows_the_capacity_fields_offline_and_through_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let output = run(&["init", "--store", s(&store), "--capacity", "1MB"]);
    assert!(output.status.success(), "{output:?}");
    append(&store, 1);
    let offline = stats(&store);
    let node = NodeProcess::start(&store, &[]);
    let online = stats(&store);
    node.stop();
    for stats in [offline, online] {
        assert_eq!(stats["capacity_bytes"], 1_000_000, "{stats}");
        // The own feed is never counted against the budget.
        assert_eq!(stats["capacity_used"], 0, "{stats}");
        assert_eq!(stats["capacity_free"], 1_000_000, "{stats}");
        assert!(stats["own_bytes"].as_u64().unwrap() > 0, "{stats}");
        assert_eq!(stats["over_capacity"], 0, "{stats}");
        assert_eq!(stats["evicted_feeds"], 0, "{stats}");
        // The fields that were there before stay.
        assert_eq!(stats["blocks_stored"], 1, "{stats}");
        assert!(stats.get("evicted").is_some() && stats.get("rejected").is_some());
    }
}

#[test]
fn follow_and_unfollow_offline_are_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // Another author's feed, brought into the store by the library (no second node needed).
    let peer = store_with_a_peer_feed(&store);
    assert_eq!(feed_of(&store, &peer).unwrap()["followed"], false);

    let followed = lines(&["follow", &peer, "--store", s(&store)]);
    assert_eq!(
        followed,
        [serde_json::json!({"author": peer, "followed": true, "changed": true})]
    );
    let again = lines(&["follow", &peer, "--store", s(&store)]);
    assert_eq!(again[0]["changed"], false, "{again:?}");
    let feed = feed_of(&store, &peer).unwrap();
    assert_eq!(feed["followed"], true, "{feed}");
    assert_eq!(feed["status"], "kept", "{feed}");

    let unfollowed = lines(&["unfollow", &peer, "--store", s(&store)]);
    assert_eq!(
        unfollowed,
        [serde_json::json!({"author": peer, "followed": false, "changed": true})]
    );
    let again = lines(&["unfollow", &peer, "--store", s(&store)]);
    assert_eq!(again[0]["changed"], false, "{again:?}");
    assert_eq!(feed_of(&store, &peer).unwrap()["followed"], false);

    // Bad authors are one-line errors and change nothing.
    for bad in ["zz", "abcd", &"g".repeat(64)] {
        let line = one_line_error(&run(&["follow", bad, "--store", s(&store)]));
        assert!(line.contains("AUTHOR") && line.contains(bad), "{line}");
    }
    assert_eq!(feed_of(&store, &peer).unwrap()["followed"], false);
}

/// A store holding its own feed and another author's (brought in by the library); returns the
/// other author.
fn store_with_a_peer_feed(store: &Path) -> String {
    author_of(store);
    append(store, 1);
    let mut other = Kernel::builder(&ReadyApp::Counter).open().unwrap();
    let block = other.create_block(br#"{"value": 1}"#.to_vec()).unwrap();
    let (mut kernel, _, _) = blockend::store::open_checked(store, None, false).unwrap();
    kernel.dispatch([(*block).clone()]).unwrap();
    drop(kernel.close());
    other.author().to_hex()
}

#[test]
fn feeds_and_stats_tell_the_own_feed_without_the_secret_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let peer = store_with_a_peer_feed(&store);
    let (listed, counted) = (feeds(&store), stats(&store));
    assert_eq!(listed[0]["status"], "own", "{listed:?}");
    assert_eq!(listed[1]["author"], peer.as_str(), "{listed:?}");
    // Without the identity a reader signs with a throwaway key; DIR/author still names the
    // own feed, so the view is the same.
    let identity = store.join("identity");
    let aside = dir.path().join("identity");
    std::fs::rename(&identity, &aside).unwrap();
    let (blind_feeds, blind_stats) = (feeds(&store), stats(&store));
    std::fs::rename(&aside, &identity).unwrap();
    assert_eq!(blind_feeds, listed);
    assert_eq!(blind_stats, counted);
}

#[test]
fn follow_through_a_running_node_is_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (node_a, node_b, author_a, _) = synced_pair(&a, &b);
    let followed = lines(&["follow", &author_a, "--store", s(&b)]);
    assert_eq!(
        followed,
        [serde_json::json!({"author": author_a, "followed": true, "changed": true})]
    );
    // The node's kernel took it: its own `feeds` says so.
    assert_eq!(feed_of(&b, &author_a).unwrap()["followed"], true);
    node_b.stop();
    // Persisted in the store: the offline view sees it.
    assert_eq!(feed_of(&b, &author_a).unwrap()["followed"], true);

    let node_b = NodeProcess::start(&b, &["--peer", &node_a.addr]);
    assert_eq!(feed_of(&b, &author_a).unwrap()["followed"], true);
    let unfollowed = lines(&["unfollow", &author_a, "--store", s(&b)]);
    assert_eq!(unfollowed[0]["changed"], true, "{unfollowed:?}");
    assert_eq!(unfollowed[0]["followed"], false, "{unfollowed:?}");
    assert_eq!(feed_of(&b, &author_a).unwrap()["followed"], false);
    node_b.stop();
    assert_eq!(feed_of(&b, &author_a).unwrap()["followed"], false);
    node_a.stop();
}

#[test]
fn feeds_lists_the_own_feed_first_and_a_synced_peer_s_feed_as_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (node_a, node_b, author_a, author_b) = synced_pair(&a, &b);
    let listed = feeds(&b);
    assert_eq!(listed.len(), 2, "{listed:?}");
    let (own, peer) = (&listed[0], &listed[1]);
    assert_eq!(own["author"], author_b.as_str(), "{own}");
    assert_eq!(own["status"], "own", "{own}");
    assert_eq!(own["rank"], 0, "{own}");
    assert_eq!(own["length"], 1, "{own}");
    assert!(own["first_stored"].is_u64(), "{own}");
    assert_eq!(peer["author"], author_a.as_str(), "{peer}");
    assert_eq!(peer["status"], "kept", "{peer}");
    assert_eq!(peer["rank"], 1, "{peer}");
    assert_eq!(peer["length"], 1, "{peer}");
    assert_eq!(peer["followed"], false, "{peer}");
    assert!(peer["first_stored"].is_u64(), "{peer}");
    let peer_bytes = peer["bytes"].as_u64().unwrap();
    assert!(peer_bytes > 0, "{peer}");
    for line in &listed {
        assert!(line.get("frozen_at").is_none() && line.get("evicted_until").is_none());
    }
    // The peer's feed is what the budget counts, and the own feed is not.
    let stats = stats(&b);
    assert_eq!(stats["capacity_used"], peer_bytes, "{stats}");
    assert_eq!(stats["capacity_free"], GIB - peer_bytes, "{stats}");
    assert_eq!(stats["own_bytes"], own["bytes"], "{stats}");
    node_b.stop();
    // The offline view ranks the same.
    assert_eq!(feeds(&b), listed);
    node_a.stop();
}
