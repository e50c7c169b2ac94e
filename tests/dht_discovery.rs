//! Discovery beyond the LAN, in one process over the memory transport: two nodes that know
//! only a relay find each other through blockend's DHT (provider records under the app's key),
//! connect through the relay, and sync. The NAT lab (`scripts/nat-lab`) shows the same with
//! real NATs, and the hole punch that follows.

mod common;

use std::time::Duration;

use blockend::node::{self, Node};
use common::swarm::{self, address, eventually, spawn};
use libp2p::{Multiaddr, PeerId};

fn config(peers: Vec<Multiaddr>) -> node::Config {
    // Memory addresses have no holes to punch: the relayed connection stays.
    swarm::config(peers, Duration::from_millis(300)).with_holepunch(false)
}

async fn link(node: &Node, peer: PeerId) -> Option<&'static str> {
    let peers = node.handle().peers().await.ok()?;
    let peer = peer.to_base58();
    peers
        .into_iter()
        .find(|p| p.peer == peer)
        .map(|p| p.connection)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_that_know_only_a_relay_find_each_other_through_the_dht_and_sync() {
    let relay = spawn(config(vec![]).with_relay(true)).await;
    let relay_addr = address(&relay).await;
    let a = spawn(config(vec![relay_addr.clone()])).await;
    let b = spawn(config(vec![relay_addr])).await;
    let (a_id, b_id) = (a.handle().peer_id(), b.handle().peer_id());

    let found = eventually(Duration::from_secs(60), || async {
        link(&a, b_id).await.is_some() && link(&b, a_id).await.is_some()
    })
    .await;
    let stats = (a.handle().stats().await, b.handle().stats().await);
    assert!(found, "a and b never met: {stats:?}");
    assert_eq!(
        link(&a, b_id).await,
        Some("relayed"),
        "only the relay joins them"
    );
    let (a_stats, b_stats) = (stats.0.expect("stats"), stats.1.expect("stats"));
    assert!(
        a_stats.dht_providers_found + b_stats.dht_providers_found >= 1,
        "found through the DHT: {a_stats:?} {b_stats:?}"
    );
    assert!(a_stats.relay_reservations >= 1 || b_stats.relay_reservations >= 1);
    let served = relay.handle().stats().await.expect("stats");
    assert!(served.relay_reservations_served >= 2, "{served:?}");
    assert!(served.relay_circuits_served >= 1, "{served:?}");

    a.handle()
        .append(br#"{"value":3}"#.to_vec())
        .await
        .expect("append");
    b.handle()
        .append(br#"{"value":4}"#.to_vec())
        .await
        .expect("append");
    let synced = eventually(Duration::from_secs(30), || async {
        let (sa, sb) = (a.handle().state(None).await, b.handle().state(None).await);
        matches!((sa, sb), (Ok(sa), Ok(sb)) if sa["state"]["total"] == 7 && sb["state"]["total"] == 7)
    })
    .await;
    assert!(synced, "blocks did not cross the relayed connection");
    for node in [a, b, relay] {
        node.shutdown().await;
    }
}
