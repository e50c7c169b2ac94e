//! Nodes in one process over libp2p's memory transport: they converge, and a peer that sends
//! forged blocks is refused, counted, and banned.

mod common;

use std::time::Duration;

use blockend::kernel::{Block, Identity, Signature};
use blockend::node;
use common::swarm::{self, address, eventually, spawn};
use libp2p::Multiaddr;

fn config(peers: Vec<Multiaddr>) -> node::Config {
    swarm::config(peers, Duration::from_millis(300))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_in_a_line_over_the_memory_transport_converge() {
    let a = spawn(config(vec![])).await;
    let b = spawn(config(vec![address(&a).await])).await;
    let c = spawn(config(vec![address(&b).await])).await;
    let nodes = [&a, &b, &c];
    for (i, node) in nodes.iter().enumerate() {
        for value in 1..=5u64 {
            let body = format!(r#"{{"value":{}}}"#, value * (i as u64 + 1));
            node.handle()
                .append(body.into_bytes())
                .await
                .expect("append");
        }
    }
    // Each author's latest value: 5, 10, 15.
    let converged = eventually(Duration::from_secs(30), || async {
        let mut states = Vec::new();
        for node in nodes {
            states.push(node.handle().state(None).await.expect("state"));
        }
        states
            .iter()
            .all(|s| s["state"]["total"] == 30 && s["digest"] == states[0]["digest"])
    })
    .await;
    let states: Vec<_> =
        futures::future::join_all(nodes.iter().map(|n| n.handle().state(None))).await;
    assert!(converged, "states did not converge: {states:?}");
    let set_hashes: Vec<_> = states
        .iter()
        .map(|s| s.as_ref().unwrap()["set_hash"].clone())
        .collect();
    assert!(set_hashes.iter().all(|h| *h == set_hashes[0]));
    for node in [a, b, c] {
        node.shutdown().await;
    }
}

/// A block with a valid header and body and a signature that does not verify.
fn forged(n: u64) -> Vec<u8> {
    let identity = Identity::from_secret([9; 32]);
    let body = format!(r#"{{"value":{n}}}"#).into_bytes();
    let honest = Block::sign(&identity, None, 1_700_000_000_000 + n, body.clone());
    Block::from_parts(honest.header().clone(), Signature([7; 64]), Some(body))
        .expect("the body matches")
        .encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_block_is_rejected_and_the_sender_penalised_then_banned() {
    let victim = spawn(config(vec![]).with_ban(3, Duration::from_secs(60))).await;
    let forger = spawn(config(vec![address(&victim).await])).await;
    let forger_id = forger.handle().peer_id().to_base58();

    // Gossip needs the subscription exchange first; keep offering fresh forgeries until the
    // victim has judged one.
    let mut n = 0;
    let judged = eventually(Duration::from_secs(20), || {
        n += 1;
        let bytes = forged(n);
        let forger = forger.handle().clone();
        let victim = victim.handle().clone();
        async move {
            forger.publish_raw(bytes).await.expect("publish");
            let stats = victim.stats().await.expect("stats");
            stats.rejected.get("bad_signature").copied().unwrap_or(0) >= 1
        }
    })
    .await;
    assert!(judged, "the victim never judged a forged block");
    let stats = victim.handle().stats().await.unwrap();
    assert_eq!(stats.blocks_stored, 0, "a forged block was stored");
    assert!(
        stats.peers[&forger_id].invalid >= 1,
        "the forger was not blamed: {stats:?}"
    );

    // Past the budget of 3, the forger is banned and disconnected.
    let banned = eventually(Duration::from_secs(20), || {
        n += 1;
        let bytes = forged(n);
        let forger = forger.handle().clone();
        let victim = victim.handle().clone();
        async move {
            let _ = forger.publish_raw(bytes).await;
            let stats = victim.stats().await.expect("stats");
            let peers = victim.peers().await.expect("peers");
            stats.banned == 1 && peers.is_empty()
        }
    })
    .await;
    let stats = victim.handle().stats().await.unwrap();
    assert!(banned, "the forger was not banned: {stats:?}");
    // One budget, the sync machine's: the ban comes with the fourth invalid block, and what
    // arrives after it is charged to nobody (the machine has forgotten the peer).
    assert_eq!(stats.peers[&forger_id].invalid, 4, "{stats:?}");
    assert_eq!(stats.blocks_stored, 0);

    // The honest node still works.
    victim
        .handle()
        .append(br#"{"value":1}"#.to_vec())
        .await
        .expect("append after the ban");
    forger.shutdown().await;
    victim.shutdown().await;
}
