//! Three peers chatting over the in-memory wire: Alice and Bob talk, Carol joins late and
//! catches up, and a short-lived message expires on every peer.
//!
//! ```text
//! cargo run --example chat
//! ```
//!
//! The peers share a manual clock so the expiry is quick and the run deterministic; their
//! stores are embedded RocksDB directories under the system's temp dir, removed at the end.

use std::time::Duration;

use anyhow::Context as _;
use blockend::kernel::store::RocksStore;
use blockend::kernel::wire::Peer;
use blockend::kernel::{Application, Clock as _, Kernel, ManualClock, Registry, SystemClock};
use blockend_reducers::chat::{Chat, Rooms};
use futures::StreamExt;

struct ChatApp;
impl Application for ChatApp {
    fn register(&self, slices: &mut Registry) {
        slices.add(Chat);
    }
}

fn post(peer: &Peer, text: &str, ttl_ms: u64) -> anyhow::Result<()> {
    let body = serde_json::json!({ "room": "lobby", "text": text, "ttl_ms": ttl_ms });
    peer.create_block(serde_json::to_vec(&body)?)?;
    Ok(())
}

fn lobby(rooms: &Rooms) -> Vec<String> {
    rooms
        .rooms
        .get("lobby")
        .map(|m| m.iter().map(|m| m.text.clone()).collect())
        .unwrap_or_default()
}

/// Waits until `name`'s lobby reads `want`, printing each state it sees.
async fn until(name: &str, peer: &Peer, want: &[&str]) -> anyhow::Result<()> {
    let mut states = peer.subscribe::<Chat>()?;
    let wait = async {
        while let Some(rooms) = states.next().await {
            let texts = lobby(&rooms);
            if texts == want {
                println!("{name}: {texts:?}");
                return Ok(());
            }
        }
        anyhow::bail!("{name}'s state stream ended")
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .with_context(|| format!("{name} never saw {want:?}"))?
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("blockend-chat-{}", std::process::id()));
    let clock = ManualClock::new(SystemClock.now());
    let open = |name: &str| -> anyhow::Result<Peer> {
        let store =
            RocksStore::open(dir.join(name)).with_context(|| format!("opening {name}'s store"))?;
        Ok(Peer::new(
            Kernel::builder(&ChatApp)
                .with_store(store)
                .with_clock(clock.clone())
                .open()?,
        ))
    };
    let (alice, bob, carol) = (open("alice")?, open("bob")?, open("carol")?);

    let _ab = alice.connect(&bob);
    post(&alice, "hi bob", 3_600_000)?;
    clock.advance(1_000);
    post(&bob, "hi alice", 3_600_000)?;
    clock.advance(1_000);
    post(&alice, "this message self-destructs", 5_000)?;
    until(
        "Bob",
        &bob,
        &["hi bob", "hi alice", "this message self-destructs"],
    )
    .await?;

    // Carol joins late, through Bob, and catches up on everything.
    let _bc = bob.connect(&carol);
    until(
        "Carol",
        &carol,
        &["hi bob", "hi alice", "this message self-destructs"],
    )
    .await?;

    // Six seconds later the short message is garbage-collected on every peer.
    clock.advance(6_000);
    for (name, peer) in [("Alice", &alice), ("Bob", &bob), ("Carol", &carol)] {
        until(name, peer, &["hi bob", "hi alice"]).await?;
    }
    drop((_ab, _bc, alice, bob, carol));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
