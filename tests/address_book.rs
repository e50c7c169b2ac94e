//! A node remembers the peers it was connected to (the store's `peers` file) and dials them
//! again after a restart, with no `--peer`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{eventually, json_lines, run, NodeProcess};

/// Waits until `store`'s node lists `peer` among its connected peers.
fn connects(store: &Path, peer: &str) -> bool {
    eventually(Duration::from_secs(30), || {
        peer_ids(store).iter().any(|p| p == peer).then_some(())
    })
    .is_some()
}

fn peer_ids(store: &Path) -> Vec<String> {
    let output = run(&["peers", "--store", store.to_str().unwrap()]);
    if !output.status.success() {
        return Vec::new();
    }
    json_lines(&output)
        .iter()
        .filter_map(|p| p["peer"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_restarted_node_dials_the_peers_it_remembers() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let first = NodeProcess::start(&a, &["--app", "counter"]);
    let a_id = first.addr.rsplit('/').next().unwrap().to_owned();
    let second = NodeProcess::start(&b, &["--app", "counter", "--peer", &first.addr]);
    assert!(connects(&b, &a_id), "b never connected to a");
    // Identify tells b where a listens, a moment after the connection; b writes it down
    // within 10 s (and when it stops).
    let book = eventually(Duration::from_secs(30), || {
        let book = std::fs::read_to_string(b.join("peers")).ok()?;
        book.contains(&a_id).then_some(book)
    })
    .expect("b remembers a");
    second.stop();
    assert!(book.contains("/tcp/"), "{book}");

    // Restarted without --peer, b finds a again from its book.
    let again = NodeProcess::start(&b, &["--app", "counter"]);
    assert!(connects(&b, &a_id), "b did not dial a from its book");
    again.stop();
    first.stop();
}

#[test]
fn a_torn_address_book_costs_its_bad_lines_only() {
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("a");
    let first = NodeProcess::start(&a, &["--app", "counter"]);
    first.stop();
    // Garbage where the book lives: the node starts all the same.
    std::fs::write(a.join("peers"), "{not json\n\u{0}\u{1}\n").unwrap();
    let node = NodeProcess::start(&a, &["--app", "counter"]);
    node.stop();
}

#[test]
fn a_bootstrap_peer_is_remembered_without_the_address_book() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let first = NodeProcess::start(&a, &["--app", "counter"]);
    let a_id = first.addr.rsplit('/').next().unwrap().to_owned();
    let second = NodeProcess::start(&b, &["--app", "counter", "--bootstrap", &first.addr]);
    assert!(connects(&b, &a_id), "b never reached its bootstrap peer");
    second.stop();
    let remembered = std::fs::read_to_string(b.join("bootstrap")).expect("remembered");
    assert_eq!(remembered.trim(), first.addr);
    // Without the book, only the remembered bootstrap peer can lead b back to a.
    // (b may have stopped before identify told it where a listens: then it has no book.)
    let _ = std::fs::remove_file(b.join("peers"));
    let again = NodeProcess::start(&b, &["--app", "counter"]);
    assert!(connects(&b, &a_id), "the bootstrap peer was not remembered");
    again.stop();
    first.stop();
}

#[test]
fn a_bootstrap_address_the_node_cannot_dial_is_refused_and_not_remembered() {
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("a");
    let output = run(&[
        "node",
        "--store",
        a.to_str().unwrap(),
        "--no-mdns",
        "--bootstrap",
        "/ip4/192.0.2.1/udp/4001",
    ]);
    let line = common::one_line_error(&output);
    assert!(
        line.contains("cannot dial --bootstrap /ip4/192.0.2.1/udp/4001"),
        "{line}"
    );
    assert!(!a.join("bootstrap").exists(), "nothing remembered");
    // A later start is not stuck on it.
    let node = NodeProcess::start(&a, &["--app", "counter"]);
    node.stop();
}
