//! Every verb of the `blockend` binary: its happy path, and its bad-input paths, which print
//! one line on stderr, exit non-zero, and leave the store as it was.

mod common;

use std::path::Path;
use std::time::Duration;

use blockend::kernel::store::RocksStore;
use common::{eventually, json_lines, one_line_error, run, run_with_stdin, NodeProcess};

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn init(store: &Path, app: &str) -> String {
    let output = run(&["init", "--store", s(store), "--app", app]);
    assert!(output.status.success(), "{output:?}");
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 1);
    lines[0]["author"].as_str().unwrap().to_owned()
}

fn cat(store: &Path) -> Vec<serde_json::Value> {
    let output = run(&["cat", "--store", s(store)]);
    assert!(output.status.success(), "{output:?}");
    json_lines(&output)
}

fn state(store: &Path) -> serde_json::Value {
    let output = run(&["state", "--store", s(store)]);
    assert!(output.status.success(), "{output:?}");
    json_lines(&output).remove(0)
}

#[test]
fn init_prints_the_author_and_remembers_the_app() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let author = init(&store, "kv");
    assert_eq!(author.len(), 64);
    assert!(author.chars().all(|c| c.is_ascii_hexdigit()));
    // Later verbs need no --app: the kv state has no `total`, the counter's would.
    let output = run(&[
        "append",
        "--store",
        s(&store),
        r#"{"set":{"key":"a","value":1}}"#,
    ]);
    assert!(output.status.success(), "{output:?}");
    let state = state(&store);
    assert!(state.get("digest").is_some() && state.get("set_hash").is_some());
    assert!(state.get("total").is_none(), "{state}");
    // Init again with the same app is harmless and keeps the identity.
    assert_eq!(init(&store, "kv"), author);
}

#[test]
fn init_with_an_unknown_app_or_another_app_fails_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let line = one_line_error(&run(&["init", "--store", s(&store), "--app", "ledger"]));
    assert!(line.contains("ledger"), "{line}");
    assert!(!store.exists(), "a failed init left a directory behind");
    init(&store, "counter");
    let line = one_line_error(&run(&["init", "--store", s(&store), "--app", "chat"]));
    assert!(line.contains("counter") && line.contains("chat"), "{line}");
}

#[test]
fn append_prints_the_block_and_cat_and_state_show_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let author = init(&store, "counter");
    let output = run(&["append", "--store", s(&store), r#"{"value": 3}"#]);
    assert!(output.status.success(), "{output:?}");
    let block = json_lines(&output).remove(0);
    for field in ["id", "author", "parent", "seq", "time", "body"] {
        assert!(block.get(field).is_some(), "missing {field}: {block}");
    }
    assert_eq!(block["author"], author.as_str());
    assert_eq!(block["seq"], 0);
    assert_eq!(block["body"]["value"], 3);
    let output = run_with_stdin(
        &["append", "--store", s(&store), "-"],
        Some(r#"{"value": 7}"#),
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!(json_lines(&output)[0]["parent"], block["id"]);

    let blocks = cat(&store);
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0], block);
    let only = run(&["cat", "--store", s(&store), "--author", &author]);
    assert_eq!(json_lines(&only).len(), 2);
    assert_eq!(state(&store)["state"]["total"], 7);
}

#[test]
fn bad_bodies_fail_in_one_line_and_leave_the_store_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store, "counter");
    assert!(run(&["append", "--store", s(&store), r#"{"value": 5}"#])
        .status
        .success());
    let (blocks, before) = (cat(&store), state(&store));

    let line = one_line_error(&run(&["append", "--store", s(&store), "{not json"]));
    assert!(line.contains("not JSON"), "{line}");
    // Valid JSON the slice rejects (the counter must grow) or ignores.
    let line = one_line_error(&run(&["append", "--store", s(&store), r#"{"value": 2}"#]));
    assert!(line.contains("rejected"), "{line}");
    one_line_error(&run(&["append", "--store", s(&store), r#"{"hello": 1}"#]));

    assert_eq!(cat(&store), blocks);
    assert_eq!(state(&store), before);
}

#[test]
fn a_missing_store_fails_in_one_line_for_every_reading_verb() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    for verb in ["cat", "state", "stats", "peers"] {
        let line = one_line_error(&run(&[verb, "--store", s(&missing)]));
        assert!(line.contains("no store"), "{verb}: {line}");
    }
    let line = one_line_error(&run(&["append", "--store", s(&missing), r#"{"value":1}"#]));
    assert!(line.contains("no store"), "{line}");
    assert!(!missing.exists(), "a reading verb created the store");
}

#[test]
fn a_store_locked_by_another_process_fails_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store, "counter");
    let held = RocksStore::open(&store).expect("the test holds the store");
    let line = one_line_error(&run(&["append", "--store", s(&store), r#"{"value":1}"#]));
    assert!(line.contains("locked"), "{line}");
    // Reads take no lock (see tests/concurrent_use.rs).
    assert_eq!(state(&store)["state"]["total"], 0);
    drop(held);
    assert_eq!(state(&store)["state"]["total"], 0);
}

#[test]
fn bad_arguments_fail_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store, "counter");
    one_line_error(&run(&["node", "--store", s(&store), "--app", "ledger"]));
    one_line_error(&run(&[
        "node",
        "--store",
        s(&store),
        "--peer",
        "not-a-multiaddr",
    ]));
    one_line_error(&run(&[
        "node",
        "--store",
        s(&store),
        "--app",
        "kv",
        "--no-mdns",
    ]));
    one_line_error(&run(&["cat", "--store", s(&store), "--author", "xyz"]));
    one_line_error(&run(&["state", "--store", s(&store), "no-such-slice"]));
    one_line_error(&run(&["frobnicate"]));
    assert_eq!(state(&store)["state"]["total"], 0);
}

#[test]
fn stats_without_a_node_reads_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store, "counter");
    assert!(run(&["append", "--store", s(&store), r#"{"value":1}"#])
        .status
        .success());
    let output = run(&["stats", "--store", s(&store)]);
    assert!(output.status.success(), "{output:?}");
    let stats = json_lines(&output).remove(0);
    assert_eq!(stats["blocks_stored"], 1);
    assert_eq!(stats["blocks_received"], 0);
}

#[test]
fn a_running_node_serves_every_verb_through_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut node = NodeProcess::start(&store, &["--app", "counter"]);
    assert!(store.join("node.sock").exists());
    // A store owned by a running node: the verbs go through the node.
    let output = run(&["append", "--store", s(&store), r#"{"value":4}"#]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(cat(&store).len(), 1);
    assert_eq!(state(&store)["state"]["total"], 4);
    let output = run(&["stats", "--store", s(&store)]);
    assert_eq!(json_lines(&output)[0]["blocks_stored"], 1);
    let output = run(&["peers", "--store", s(&store)]);
    assert!(
        output.status.success() && output.stdout.is_empty(),
        "{output:?}"
    );
    // Rejections come back as one line too.
    let line = one_line_error(&run(&["append", "--store", s(&store), r#"{"value":1}"#]));
    assert!(line.contains("rejected"), "{line}");
    // init on a store a node owns: locked.
    one_line_error(&run(&["init", "--store", s(&store)]));
    assert!(node.running());
    node.stop();
    assert!(
        !store.join("node.sock").exists(),
        "the socket outlived the node"
    );
    assert_eq!(state(&store)["state"]["total"], 4);
}

#[test]
fn the_local_socket_works_from_a_deep_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut deep = dir.path().to_owned();
    for i in 0..8 {
        deep.push(format!("a-rather-long-directory-name-{i}"));
    }
    let store = deep.join("store");
    assert!(store.join("node.sock").as_os_str().len() > 108);
    let mut node = NodeProcess::start(&store, &["--app", "counter"]);
    // The node says where the socket went.
    let said = eventually(Duration::from_secs(10), || {
        node.stderr_lines()
            .into_iter()
            .find(|l| l.contains("listening on") && l.contains(".sock"))
    });
    assert!(
        said.is_some(),
        "no word of the socket: {:?}",
        node.stderr_lines()
    );
    // append works while the node owns the store: it went through the socket.
    let output = run(&["append", "--store", s(&store), r#"{"value":2}"#]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(state(&store)["state"]["total"], 2);
    node.stop();
}

#[test]
fn an_unreachable_peer_is_reported_in_one_line_and_the_node_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // Port 9 on loopback: nothing listens there.
    let mut node = NodeProcess::start(&store, &["--peer", "/ip4/127.0.0.1/tcp/9"]);
    let warned = eventually(Duration::from_secs(20), || {
        node.stderr_lines()
            .into_iter()
            .find(|l| l.contains("cannot reach /ip4/127.0.0.1/tcp/9"))
    });
    assert!(warned.is_some(), "no warning: {:?}", node.stderr_lines());
    assert!(node.running());
    let output = run(&["append", "--store", s(&store), r#"{"value":1}"#]);
    assert!(output.status.success(), "{output:?}");
    node.stop();
    assert_eq!(state(&store)["state"]["total"], 1);
}

#[test]
fn state_follow_streams_each_new_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let node = NodeProcess::start(&store, &["--app", "counter"]);
    let mut follower = common::blockend()
        .args(["state", "--follow", "--store", s(&store)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let first: serde_json::Value =
        serde_json::from_str(&rx.recv_timeout(Duration::from_secs(30)).unwrap()).unwrap();
    assert_eq!(first["state"]["total"], 0);
    for value in [1, 2, 3] {
        let body = format!(r#"{{"value":{value}}}"#);
        assert!(run(&["append", "--store", s(&store), &body])
            .status
            .success());
    }
    let reached = eventually(Duration::from_secs(30), || {
        let line = rx.recv_timeout(Duration::from_millis(100)).ok()?;
        let state: serde_json::Value = serde_json::from_str(&line).ok()?;
        (state["state"]["total"] == 3).then_some(())
    });
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(reached.is_some(), "the follower never saw total 3");
    node.stop();
}
