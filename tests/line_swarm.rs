//! Four `blockend node` processes on loopback TCP, in a line (each dials only its
//! neighbour, mDNS off). Each appends ten counter bumps; all four reach total 40 with identical
//! digests. Then the last node stops, the others append more, and the restarted node catches
//! up receiving only what it lacked.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{eventually, json_lines, run, NodeProcess};

fn state(store: &Path) -> Option<serde_json::Value> {
    let output = run(&["state", "--store", store.to_str()?]);
    output
        .status
        .success()
        .then(|| json_lines(&output).into_iter().next())?
}

fn stats(store: &Path) -> serde_json::Value {
    let output = run(&["stats", "--store", store.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    json_lines(&output).remove(0)
}

fn append(store: &Path, value: u64) {
    let body = format!(r#"{{"value":{value}}}"#);
    let output = run(&["append", "--store", store.to_str().unwrap(), &body]);
    assert!(output.status.success(), "append failed: {output:?}");
}

/// Waits until every store reports `total` with one digest and one set_hash.
fn converge(stores: &[PathBuf], total: u64) -> Vec<serde_json::Value> {
    let result = eventually(Duration::from_secs(60), || {
        let states: Vec<serde_json::Value> =
            stores.iter().map(|s| state(s)).collect::<Option<_>>()?;
        let same = states.iter().all(|s| {
            s["state"]["total"] == total
                && s["digest"] == states[0]["digest"]
                && s["set_hash"] == states[0]["set_hash"]
        });
        same.then_some(states)
    });
    result.unwrap_or_else(|| {
        let states: Vec<_> = stores.iter().map(|s| state(s)).collect();
        panic!("no convergence on total {total}: {states:#?}")
    })
}

#[test]
fn four_nodes_in_a_line_converge_and_a_restarted_node_fetches_only_what_it_lacked() {
    let root = tempfile::tempdir().unwrap();
    let stores: Vec<PathBuf> = (0..4).map(|i| root.path().join(format!("n{i}"))).collect();
    let mut nodes: Vec<NodeProcess> = Vec::new();
    for store in &stores {
        let mut extra = vec!["--app", "counter"];
        let previous = nodes.last().map(|n: &NodeProcess| n.addr.clone());
        if let Some(addr) = &previous {
            extra.extend(["--peer", addr.as_str()]);
        }
        nodes.push(NodeProcess::start(store, &extra));
    }

    for store in &stores {
        for value in 1..=10 {
            append(store, value);
        }
    }
    let states = converge(&stores, 40);
    assert_eq!(
        states[0]["state"]["by_author"].as_object().unwrap().len(),
        4
    );

    // Stop the last node; the others move on without it.
    let last = nodes.pop().unwrap();
    last.stop();
    for store in &stores[..3] {
        for value in 11..=15 {
            append(store, value);
        }
    }
    // Three authors now at 15, the stopped one still at 10.
    converge(&stores[..3], 55);
    let before = stats(&stores[3]);
    assert_eq!(
        before["blocks_stored"], 40,
        "the stopped store holds its 40 blocks"
    );

    // Restart it: it dials its neighbour again and catches up.
    let addr = nodes[2].addr.clone();
    let restarted = NodeProcess::start(&stores[3], &["--peer", &addr]);
    converge(&stores, 55);
    let after = stats(&stores[3]);
    assert_eq!(after["blocks_stored"], 55);
    // Exactly the 15 blocks it lacked were new to it, and it was not sent everything again.
    assert_eq!(after["new_blocks_received"], 15, "{after:#}");
    let received = after["blocks_received"].as_u64().unwrap();
    assert!(
        (15..55).contains(&received),
        "received {received} blocks: {after:#}"
    );
    assert_eq!(
        received,
        after["sync_blocks_received"].as_u64().unwrap()
            + after["gossip_blocks_received"].as_u64().unwrap()
    );
    assert!(
        after["rejected"].as_object().unwrap().is_empty(),
        "{after:#}"
    );

    restarted.stop();
    for node in nodes {
        node.stop();
    }
}
