//! The internet transports of `blockend node`: QUIC beside TCP (both by default), and peers
//! dialed by DNS name. Two node processes on loopback each time; `blockend peers` says how
//! each peer is connected.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{blockend, eventually, json_lines, run, NodeProcess};

fn append(store: &Path, value: u64) {
    let body = format!(r#"{{"value":{value}}}"#);
    let output = run(&["append", "--store", store.to_str().unwrap(), &body]);
    assert!(output.status.success(), "append failed: {output:?}");
}

fn total(store: &Path) -> Option<u64> {
    let output = run(&["state", "--store", store.to_str()?]);
    if !output.status.success() {
        return None;
    }
    json_lines(&output).first()?["state"]["total"].as_u64()
}

fn peers(store: &Path) -> Vec<serde_json::Value> {
    let output = run(&["peers", "--store", store.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    json_lines(&output)
}

/// Waits until `store` lists one peer and returns it.
fn one_peer(store: &Path) -> serde_json::Value {
    eventually(Duration::from_secs(30), || {
        let mut listed = peers(store);
        (listed.len() == 1).then(|| listed.remove(0))
    })
    .unwrap_or_else(|| panic!("no peer listed: {:?}", peers(store)))
}

#[test]
fn two_nodes_connect_and_sync_over_quic() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let first =
        NodeProcess::start_listening(&a, &["/ip4/127.0.0.1/udp/0/quic-v1"], &["--app", "counter"]);
    assert!(first.addr.contains("/udp/") && first.addr.contains("/quic-v1/p2p/"));
    let second = NodeProcess::start_listening(
        &b,
        &["/ip4/127.0.0.1/udp/0/quic-v1"],
        &["--app", "counter", "--peer", &first.addr],
    );
    let peer = one_peer(&b);
    assert_eq!(peer["transport"], "quic", "{peer}");
    assert_eq!(peer["connection"], "direct", "{peer}");
    append(&a, 5);
    append(&b, 7);
    for store in [&a, &b] {
        let synced = eventually(Duration::from_secs(30), || {
            (total(store)? == 12).then_some(())
        });
        assert!(synced.is_some(), "{} never reached 12", store.display());
    }
    second.stop();
    first.stop();
}

#[test]
fn a_peer_is_dialed_by_its_dns_name() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let first = NodeProcess::start(&a, &["--app", "counter"]);
    // /ip4/127.0.0.1/tcp/PORT/p2p/ID -> /dns4/localhost/tcp/PORT/p2p/ID
    let by_name = first
        .addr
        .replacen("/ip4/127.0.0.1/", "/dns4/localhost/", 1);
    assert_ne!(by_name, first.addr);
    let second = NodeProcess::start(&b, &["--app", "counter", "--peer", &by_name]);
    let peer = one_peer(&b);
    assert_eq!(peer["transport"], "tcp", "{peer}");
    // The connection names the address dialed, the name; it connected, so the name resolved.
    assert!(
        peer["address"]
            .as_str()
            .unwrap()
            .starts_with("/dns4/localhost/tcp/"),
        "{peer}"
    );
    append(&a, 3);
    let synced = eventually(Duration::from_secs(30), || (total(&b)? == 3).then_some(()));
    assert!(synced.is_some());
    second.stop();
    first.stop();
}

#[test]
fn a_node_listens_on_tcp_and_quic_by_default() {
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("a");
    let mut child = blockend()
        .args(["node", "--store"])
        .arg(&store)
        .args(["--app", "counter", "--no-mdns"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the node starts");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen: Vec<String> = Vec::new();
    let both = eventually(Duration::from_secs(30), || {
        while let Ok(line) = rx.try_recv() {
            seen.push(line);
        }
        let tcp = seen.iter().any(|l| l.contains("/tcp/"));
        let quic = seen
            .iter()
            .any(|l| l.contains("/udp/") && l.contains("/quic-v1"));
        (tcp && quic).then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(both.is_some(), "listening lines: {seen:?}");
}

#[test]
fn an_address_no_transport_dials_is_refused_in_one_line() {
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("a");
    for (addr, why) in [
        ("/ip4/127.0.0.1/udp/4001", "udp without quic-v1"),
        ("/dns4/localhost/udp/4001/quic", "draft QUIC"),
        ("/ip4/127.0.0.1/tcp/4001/ws", "WebSocket"),
    ] {
        let output = run(&[
            "node",
            "--store",
            store.to_str().unwrap(),
            "--no-mdns",
            "--peer",
            addr,
        ]);
        let line = common::one_line_error(&output);
        assert!(line.contains("cannot dial --peer"), "{why}: {line}");
        assert!(
            line.contains("quic-v1"),
            "the message names what is dialed: {line}"
        );
    }
}
