//! Helpers for tests that run nodes in this process over libp2p's memory transport.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blockend::kernel::Kernel;
use blockend::node::{self, Transport};
use blockend::{Node, ReadyApp};
use libp2p::Multiaddr;

static NEXT_PORT: AtomicU64 = AtomicU64::new(1);

/// A memory address no other test process uses (the port starts from the process id).
pub fn memory_addr() -> Multiaddr {
    let port = u64::from(std::process::id()) * 1000 + NEXT_PORT.fetch_add(1, Ordering::SeqCst);
    format!("/memory/{port}")
        .parse()
        .expect("a memory multiaddr")
}

/// A node on the memory transport, without mDNS, dialing `peers`, ticking every `tick`.
pub fn config(peers: Vec<Multiaddr>, tick: Duration) -> node::Config {
    node::Config::default()
        .with_transport(Transport::Memory)
        .with_mdns(false)
        .with_listen(vec![memory_addr()])
        .with_peers(peers)
        .with_tick(tick)
}

/// A counter node on a `MemoryStore`.
pub async fn spawn(config: node::Config) -> Node {
    let app = ReadyApp::Counter;
    let kernel = Kernel::builder(&app)
        .open()
        .expect("a kernel on a MemoryStore");
    Node::spawn(kernel, Arc::new(app), config)
        .await
        .expect("the node starts")
}

/// The node's first listening address.
pub async fn address(node: &Node) -> Multiaddr {
    node.handle().listening().await.expect("listening")[0].clone()
}

/// Polls `check` every 20 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
