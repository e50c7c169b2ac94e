//! A peer that does not speak `/blockend/sync/2` (a plain libp2p node) is remembered as such
//! and sent no more sync requests, while the node keeps syncing with blockend peers; a
//! remembered peer that comes back speaking sync is synced with again.

mod common;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use blockend::node::{self, PeerCounters, Stats, SYNC_PROTOCOL};
use blockend::Node;
use common::swarm::{self as nodes, address, eventually, spawn};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::swarm::{dummy, NetworkBehaviour, SwarmEvent};
use libp2p::{
    identify, noise, request_response, yamux, Multiaddr, PeerId, StreamProtocol, Swarm,
    SwarmBuilder, Transport as _,
};
use tokio::task::JoinHandle;

/// A node that ticks every 100 ms, so retries would show within seconds.
fn config(peers: Vec<Multiaddr>) -> node::Config {
    nodes::config(peers, Duration::from_millis(100))
}

async fn append(node: &Node, values: impl IntoIterator<Item = u64>) {
    for value in values {
        let body = format!(r#"{{"value":{value}}}"#);
        node.handle()
            .append(body.into_bytes())
            .await
            .expect("append");
    }
}

async fn stats(node: &Node) -> Stats {
    node.handle().stats().await.expect("stats")
}

/// The node's counters for `peer` (zero before the node has counted anything for it).
async fn counters(node: &Node, peer: &PeerId) -> PeerCounters {
    stats(node)
        .await
        .peers
        .get(&peer.to_base58())
        .cloned()
        .unwrap_or_default()
}

async fn is_connected(node: &Node, peer: &PeerId) -> bool {
    let peers = node.handle().peers().await.expect("peers");
    peers.iter().any(|p| p.peer == peer.to_base58())
}

/// Waits for `ticks` anti-entropy ticks of `node` (`stats.ticks`).
async fn wait_ticks(node: &Node, ticks: u64) -> bool {
    let from = stats(node).await.ticks;
    eventually(Duration::from_secs(30), || async {
        stats(node).await.ticks >= from + ticks
    })
    .await
}

/// A plain libp2p peer: identify and nothing of blockend's.
#[derive(NetworkBehaviour)]
struct Plain {
    identify: identify::Behaviour,
}

/// A peer that speaks the sync protocol (acknowledging every request) besides identify.
#[derive(NetworkBehaviour)]
struct Speaking {
    identify: identify::Behaviour,
    sync: request_response::Behaviour<AckCodec>,
}

/// Reads a request to the end of the stream; the response is empty, as the node's codec has it.
#[derive(Clone, Default)]
struct AckCodec;

#[async_trait]
impl request_response::Codec for AckCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut bytes = Vec::new();
        io.take(1 << 20).read_to_end(&mut bytes).await?;
        Ok(bytes)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut bytes = Vec::new();
        io.take(1).read_to_end(&mut bytes).await?;
        Ok(())
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&request).await?;
        io.close().await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, _: ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.close().await
    }
}

fn identify(key: &Keypair) -> identify::Behaviour {
    identify::Behaviour::new(identify::Config::new("/plain/1.0.0".into(), key.public()))
}

/// A swarm over the memory transport with noise and yamux, as the node's own.
fn swarm<B: NetworkBehaviour>(key: Keypair, behaviour: impl FnOnce(&Keypair) -> B) -> Swarm<B> {
    let noise = noise::Config::new(&key).expect("noise keys");
    let transport = MemoryTransport::default()
        .upgrade(Version::V1)
        .authenticate(noise)
        .multiplex(yamux::Config::default())
        .boxed();
    SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|_| transport)
        .expect("the memory transport")
        .with_behaviour(behaviour)
        .expect("the behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build()
}

/// Dials `addr` and drives the swarm until the task is aborted (which drops the connection).
fn run_plain(key: Keypair, addr: Multiaddr) -> JoinHandle<()> {
    let mut swarm = swarm(key, |key| Plain {
        identify: identify(key),
    });
    swarm.dial(addr).expect("dial");
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    })
}

/// A swarm with no protocol at all: not even identify, so only a refused request can tell.
fn run_mute(key: Keypair, addr: Multiaddr) -> JoinHandle<()> {
    let mut swarm = swarm(key, |_| dummy::Behaviour);
    swarm.dial(addr).expect("dial");
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    })
}

/// Dials `addr`, acknowledges every sync request and counts them in `received`.
fn run_speaking(key: Keypair, addr: Multiaddr, received: Arc<AtomicU64>) -> JoinHandle<()> {
    let mut swarm = swarm(key, |key| Speaking {
        identify: identify(key),
        sync: request_response::Behaviour::with_codec(
            AckCodec,
            [(SYNC_PROTOCOL, request_response::ProtocolSupport::Full)],
            request_response::Config::default(),
        ),
    });
    swarm.dial(addr).expect("dial");
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(SpeakingEvent::Sync(request_response::Event::Message {
                message: request_response::Message::Request { channel, .. },
                ..
            })) = swarm.select_next_some().await
            {
                received.fetch_add(1, Ordering::SeqCst);
                let _ = swarm.behaviour_mut().sync.send_response(channel, ());
            }
        }
    })
}

/// Waits until `a` and `b` agree and the counter's total (each author's latest value) is
/// `total`.
async fn converge(a: &Node, b: &Node, total: u64) -> bool {
    eventually(Duration::from_secs(30), || async {
        let x = a.handle().state(None).await.expect("state");
        let y = b.handle().state(None).await.expect("state");
        x["state"]["total"] == total && x["digest"] == y["digest"]
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_libp2p_peer_is_sent_no_more_sync_requests_while_a_blockend_peer_syncs() {
    let node = spawn(config(vec![])).await;
    append(&node, 1..=3).await;
    let blockend = spawn(config(vec![address(&node).await])).await;
    let blockend_id = blockend.handle().peer_id();
    append(&blockend, 1..=7).await;
    assert!(converge(&node, &blockend, 3 + 7).await, "no first sync");

    let key = Keypair::generate_ed25519();
    let plain_id = key.public().to_peer_id();
    let plain = run_plain(key, address(&node).await);
    let marked = eventually(Duration::from_secs(20), || async {
        counters(&node, &plain_id).await.sync_unsupported
    })
    .await;
    let stats_now = stats(&node).await;
    assert!(marked, "the plain peer was not marked: {stats_now:?}");
    assert_eq!(stats_now.sync_unsupported_peers, 1, "{stats_now:?}");
    let before = counters(&node, &plain_id).await;

    // The blockend peer keeps syncing beside it: its new blocks reach the node, and the node
    // pushes them to no one else.
    append(&blockend, 8..=9).await;
    assert!(
        converge(&node, &blockend, 3 + 9).await,
        "no sync after the mark"
    );

    // Over 20 ticks the plain peer gets nothing more (a retrying node sends one a tick), and
    // the sync machine makes nothing for it (its bytes are counted before the network).
    assert!(wait_ticks(&node, 20).await, "the node stopped ticking");
    let stats = stats(&node).await;
    let after = &stats.peers[&plain_id.to_base58()];
    assert_eq!(after.sync_requests, before.sync_requests, "{stats:?}");
    assert!(after.sync_requests <= 1, "{after:?}");
    assert_eq!(after.bytes_sent, before.bytes_sent, "{stats:?}");
    assert_eq!(stats.sync_unsupported_peers, 1, "counted once: {stats:?}");
    assert!(!stats.peers[&blockend_id.to_base58()].sync_unsupported);
    // The connection itself stays, for identify and whatever else the peer speaks.
    assert!(is_connected(&node, &plain_id).await);

    plain.abort();
    blockend.shutdown().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_identify_is_marked_by_its_refused_sync_request() {
    let node = spawn(config(vec![])).await;
    let clock = spawn(config(vec![address(&node).await])).await;
    let key = Keypair::generate_ed25519();
    let mute_id = key.public().to_peer_id();
    let mute = run_mute(key, address(&node).await);

    let marked = eventually(Duration::from_secs(20), || async {
        counters(&node, &mute_id).await.sync_unsupported
    })
    .await;
    assert!(
        marked,
        "the mute peer was not marked: {:?}",
        stats(&node).await
    );
    let before = counters(&node, &mute_id).await.sync_requests;
    assert!(before >= 1, "marked without a refused request");
    // A node that retried would send one request a tick.
    assert!(wait_ticks(&node, 20).await, "the node stopped ticking");
    let later = counters(&node, &mute_id).await.sync_requests;
    assert_eq!(later, before, "requests went on after the mark");
    assert_eq!(stats(&node).await.sync_unsupported_peers, 1);

    mute.abort();
    clock.shutdown().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_peer_that_comes_back_speaking_sync_is_synced_with() {
    let node = spawn(config(vec![])).await;
    append(&node, [1]).await;
    let key = Keypair::generate_ed25519();
    let peer_id = key.public().to_peer_id();
    let plain = run_plain(key.clone(), address(&node).await);
    let marked = eventually(Duration::from_secs(20), || async {
        counters(&node, &peer_id).await.sync_unsupported
    })
    .await;
    assert!(marked, "the plain peer was not marked");
    plain.abort();
    let gone = eventually(Duration::from_secs(20), || async {
        !is_connected(&node, &peer_id).await
    })
    .await;
    assert!(gone, "the plain peer's connection did not close");

    // The same peer id, upgraded: the node forgets the mark and syncs with it.
    let received = Arc::new(AtomicU64::new(0));
    let speaking = run_speaking(key, address(&node).await, received.clone());
    let synced = eventually(Duration::from_secs(20), || async {
        received.load(Ordering::SeqCst) >= 2 && !counters(&node, &peer_id).await.sync_unsupported
    })
    .await;
    assert!(
        synced,
        "the upgraded peer got {} sync requests: {:?}",
        received.load(Ordering::SeqCst),
        stats(&node).await
    );
    assert_eq!(stats(&node).await.sync_unsupported_peers, 1);

    speaking.abort();
    node.shutdown().await;
}
