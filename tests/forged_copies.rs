//! Forged copies of a stored block are not relayed for free: each is refused (`Reject` to
//! gossipsub, so it goes no further), counted as a bad signature and blamed on the peer that
//! sent it; a valid copy that only lacks the body is a duplicate and blames nobody.
//!
//! Four nodes over libp2p's memory transport: a writer, a relay, an observer behind the relay,
//! and a forger next to the relay.

mod common;

use std::time::Duration;

use blockend::kernel::{Block, Signature};
use blockend::node;
use common::swarm::{self, address, eventually, spawn};
use libp2p::Multiaddr;

fn config(peers: Vec<Multiaddr>) -> node::Config {
    swarm::config(peers, Duration::from_millis(300))
}

/// The `n`-th forged copy of `block`: same header and body, a signature corrupted in a place
/// and a way of its own, so every copy has a gossip message id of its own.
fn forged_copy(block: &Block, n: usize) -> Vec<u8> {
    let mut signature = block.signature().0;
    signature[n % 64] ^= (n / 64 + 1) as u8;
    Block::from_parts(
        block.header().clone(),
        Signature(signature),
        block.body().map(<[u8]>::to_vec),
    )
    .expect("the body matches")
    .encode()
}

const FORGERIES: u64 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_copies_of_a_stored_block_are_refused_blamed_and_never_relayed() {
    // A budget above the number of forgeries, so every one is judged rather than banned.
    let relay = spawn(config(vec![]).with_ban(64, Duration::from_secs(60))).await;
    let at_relay = address(&relay).await;
    let writer = spawn(config(vec![at_relay.clone()])).await;
    let observer = spawn(config(vec![at_relay.clone()])).await;
    let forger = spawn(config(vec![at_relay])).await;
    let forger_id = forger.handle().peer_id().to_base58();

    let block = writer
        .handle()
        .append(br#"{"value":7}"#.to_vec())
        .await
        .expect("append");
    let everyone_holds_it = eventually(Duration::from_secs(30), || async {
        let mut all = true;
        for node in [&relay, &observer, &forger] {
            all &= node.handle().stats().await.expect("stats").blocks_stored == 1;
        }
        all
    })
    .await;
    assert!(everyone_holds_it, "the honest block did not spread");

    // Fresh forgeries until the relay has judged FORGERIES of them (the first publishes may
    // find no gossip peer yet).
    let mut n = 0;
    let judged = eventually(Duration::from_secs(30), || {
        n += 1;
        let bytes = forged_copy(&block, n);
        let forger = forger.handle().clone();
        let relay = relay.handle().clone();
        async move {
            let _ = forger.publish_raw(bytes).await;
            let stats = relay.stats().await.expect("stats");
            stats.rejected.get("bad_signature").copied().unwrap_or(0) >= FORGERIES
        }
    })
    .await;
    let stats = relay.handle().stats().await.expect("stats");
    assert!(judged, "the relay did not judge the forgeries: {stats:?}");
    let refused = stats.rejected["bad_signature"];
    assert_eq!(
        u64::from(stats.peers[&forger_id].invalid),
        refused,
        "every forgery is blamed on the forger, once"
    );
    assert_eq!(stats.blocks_stored, 1, "the honest block stays");

    // A valid copy without its body brings nothing: a duplicate, blamed on nobody.
    let _ = forger.handle().publish_raw(block.pruned().encode()).await;
    // The observer is a hop away: wait until anything the relay let through would have
    // arrived (a full tick of the observer's own sync), then check nothing forged did.
    let marker = writer
        .handle()
        .append(br#"{"value":8}"#.to_vec())
        .await
        .expect("append");
    let observer_has_marker = eventually(Duration::from_secs(30), || async {
        observer
            .handle()
            .blocks(None)
            .await
            .expect("blocks")
            .iter()
            .any(|b| b.id() == marker.id())
    })
    .await;
    assert!(observer_has_marker);
    let seen = observer.handle().stats().await.expect("stats");
    assert_eq!(
        seen.rejected.get("bad_signature").copied().unwrap_or(0),
        0,
        "a forged copy reached the observer through the relay: {seen:?}"
    );
    let stats = relay.handle().stats().await.expect("stats");
    assert_eq!(
        u64::from(stats.peers[&forger_id].invalid),
        stats.rejected["bad_signature"],
        "the header-only copy was blamed"
    );
    assert_eq!(stats.banned, 0);
    for node in [writer, relay, observer, forger] {
        node.shutdown().await;
    }
}
