//! Limits per address group over loopback TCP, which fresh keys do not reset: connections past
//! the per-IP cap are refused, and a stream of fresh forger identities from one IP gets the
//! whole IP banned, so even an honest newcomer from it cannot connect. Both refusals come
//! before the handshake: a raw TCP client from a refused IP hears not one protocol byte. So
//! does one from an IP with its most handshakes left hanging, while other IPs are answered.

mod common;

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use blockend::kernel::{Block, Identity, Kernel, Signature};
use blockend::node::{self, Stats, Transport};
use blockend::{Node, ReadyApp};
use common::swarm::eventually;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn config(peers: Vec<Multiaddr>) -> node::Config {
    node::Config::default()
        .with_transport(Transport::Ip)
        .with_mdns(false)
        .with_listen(vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a multiaddr")])
        .with_peers(peers)
        .with_tick(Duration::from_millis(300))
}

async fn spawn(config: node::Config) -> Node {
    let app = ReadyApp::Counter;
    let kernel = Kernel::builder(&app)
        .open()
        .expect("a kernel on a MemoryStore");
    Node::spawn(kernel, Arc::new(app), config)
        .await
        .expect("the node starts")
}

async fn address(node: &Node) -> Multiaddr {
    node.handle().listening().await.expect("listening")[0].clone()
}

async fn stats(node: &Node) -> Stats {
    node.handle().stats().await.expect("stats")
}

async fn peer_count(node: &Node) -> usize {
    node.handle().peers().await.expect("peers").len()
}

/// The multistream-select header and a proposal of noise: what a libp2p dialer sends first.
/// A listener that starts negotiating echoes the header.
const MULTISTREAM: &[u8] = b"\x13/multistream/1.0.0\n";
const NOISE: &[u8] = b"\x07/noise\n";

/// What a raw TCP client heard from the node.
#[derive(Debug)]
struct Heard {
    /// Bytes received, up to the length of the multistream header.
    bytes: Vec<u8>,
    /// The node closed the connection (end of stream or a reset) before the deadline.
    closed: bool,
}

/// The node's TCP listen address.
async fn socket_addr(node: &Node) -> SocketAddr {
    let multiaddr = address(node).await;
    let mut parts = multiaddr.iter();
    match (parts.next(), parts.next()) {
        (Some(Protocol::Ip4(ip)), Some(Protocol::Tcp(port))) => SocketAddr::from((ip, port)),
        other => panic!("not a TCP address: {other:?}"),
    }
}

/// [`hear`]s what the node says on a plain TCP connection from 127.0.0.1.
async fn probe(node: &Node) -> Heard {
    let stream = TcpStream::connect(socket_addr(node).await)
        .await
        .expect("the kernel accepts");
    hear(stream).await
}

/// [`probe`] from another loopback address, `source`; `None` if the host cannot bind it (only
/// Linux routes all of 127.0.0.0/8 to loopback by default).
async fn probe_from(node: &Node, source: Ipv4Addr) -> Option<Heard> {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.bind(SocketAddr::from((source, 0))).ok()?;
    let stream = socket
        .connect(socket_addr(node).await)
        .await
        .expect("the kernel accepts");
    Some(hear(stream).await)
}

/// Opens a plain TCP connection from 127.0.0.1 to `node` that starts a libp2p handshake and
/// never finishes it: it sends the multistream header and waits for the node's echo, by which
/// time the node counts it as pending, and then says no more.
async fn half_open(node: &Node) -> TcpStream {
    let mut stream = TcpStream::connect(socket_addr(node).await)
        .await
        .expect("the kernel accepts");
    stream.write_all(MULTISTREAM).await.expect("the node reads");
    let mut echo = vec![0; MULTISTREAM.len()];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut echo))
        .await
        .expect("the node answers within 10 s")
        .expect("the node echoes the header");
    assert_eq!(echo, MULTISTREAM, "not a multistream header");
    stream
}

/// Writes what a libp2p dialer writes first on `stream`, and listens until the node closes it,
/// it has sent a multistream header's worth of bytes, or 10 s pass.
async fn hear(mut stream: TcpStream) -> Heard {
    // The node may have closed the connection already: a failed write is an answer too.
    let _ = stream.write_all(MULTISTREAM).await;
    let _ = stream.write_all(NOISE).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut bytes = Vec::new();
    let mut buf = [0; 256];
    let closed = loop {
        if bytes.len() >= MULTISTREAM.len() {
            break false;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) => break true,
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            // Closed with our bytes unread, the node's kernel answers with a reset.
            Ok(Err(e)) if matches!(e.kind(), ErrorKind::ConnectionReset) => break true,
            Ok(Err(e)) => panic!("reading from the node: {e}"),
        }
    };
    Heard { bytes, closed }
}

/// Asserts that the node negotiates with a raw client: it echoes the multistream header.
async fn assert_negotiates(node: &Node) {
    let heard = probe(node).await;
    assert!(
        heard.bytes.starts_with(MULTISTREAM),
        "the node did not start negotiating: {heard:?}"
    );
}

/// Asserts that the node closes a raw client's connection without a byte, and counts it as
/// refused before the handshake (and in `counter`, read from the stats).
async fn assert_refused_before_handshake(node: &Node, counter: impl Fn(&Stats) -> u64) {
    let before = stats(node).await;
    let heard = probe(node).await;
    assert!(
        heard.bytes.is_empty() && heard.closed,
        "the node spoke to a refused IP: {heard:?}"
    );
    let counted = eventually(Duration::from_secs(10), || async {
        let now = stats(node).await;
        now.connections_refused_before_handshake > before.connections_refused_before_handshake
            && counter(&now) > counter(&before)
    })
    .await;
    assert!(
        counted,
        "the refusal was not counted: {:?}",
        stats(node).await
    );
}

/// Distinct forgeries across the whole test binary, so no copy is a gossip duplicate.
static NEXT_FORGERY: AtomicU64 = AtomicU64::new(1);

/// A block with a valid header and body and a signature that does not verify.
fn forged() -> Vec<u8> {
    let n = NEXT_FORGERY.fetch_add(1, Ordering::SeqCst);
    let identity = Identity::from_secret([9; 32]);
    let body = format!(r#"{{"value":{n}}}"#).into_bytes();
    let honest = Block::sign(&identity, None, 1_700_000_000_000 + n, body.clone());
    Block::from_parts(honest.header().clone(), Signature([7; 64]), Some(body))
        .expect("the body matches")
        .encode()
}

/// Spawns a fresh identity dialing `victim` and has it publish forgeries until `done` holds
/// for the victim's stats.
async fn forge_until(victim: &Node, done: impl Fn(&Stats) -> bool) -> Node {
    let forger = spawn(config(vec![address(victim).await])).await;
    let reached = eventually(Duration::from_secs(30), || {
        let forger = forger.handle().clone();
        let victim = victim.handle().clone();
        let done = &done;
        async move {
            // Fails until the forger's gossip has a peer for the topic; then keeps forging.
            let _ = forger.publish_raw(forged()).await;
            done(&victim.stats().await.expect("stats"))
        }
    })
    .await;
    assert!(
        reached,
        "the forger never got there: {:?}",
        stats(victim).await
    );
    forger
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_the_per_ip_limit_is_refused() {
    let listener = spawn(config(vec![]).with_max_connections_per_ip(2)).await;
    let addr = address(&listener).await;
    let a = spawn(config(vec![addr.clone()])).await;
    let b = spawn(config(vec![addr.clone()])).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            peer_count(&listener).await == 2
        })
        .await,
        "the first two nodes did not connect"
    );
    assert_eq!(stats(&listener).await.connections_refused_per_ip, 0);

    let c = spawn(config(vec![addr])).await;
    let refused = eventually(Duration::from_secs(20), || async {
        stats(&listener).await.connections_refused_per_ip >= 1
    })
    .await;
    assert!(
        refused,
        "the third connection was not refused: {:?}",
        stats(&listener).await
    );
    let peers = listener.handle().peers().await.expect("peers");
    assert_eq!(peers.len(), 2, "{peers:?}");
    let c_id = c.handle().peer_id().to_base58();
    assert!(
        peers.iter().all(|p| p.peer != c_id),
        "the third node is connected"
    );
    for node in [a, b, c, listener] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_forger_keys_from_one_ip_get_the_ip_banned() {
    let listener = spawn(
        config(vec![])
            .with_ban(2, Duration::from_secs(60))
            .with_max_bans_per_ip(1),
    )
    .await;

    // Each fresh key gets its own budget, and its own ban; the first ban leaves the IP alone.
    let first = forge_until(&listener, |s| s.banned == 1).await;
    assert_eq!(stats(&listener).await.banned_ips, 0);
    let second = forge_until(&listener, |s| s.banned == 2).await;
    let banned_ip = eventually(Duration::from_secs(10), || async {
        stats(&listener).await.banned_ips == 1
    })
    .await;
    assert!(
        banned_ip,
        "the IP was not banned: {:?}",
        stats(&listener).await
    );

    // A fresh, honest key from the banned IP is refused.
    let honest = spawn(config(vec![address(&listener).await])).await;
    let refused = eventually(Duration::from_secs(20), || async {
        stats(&listener).await.connections_refused_banned_ip >= 1
    })
    .await;
    let s = stats(&listener).await;
    assert!(refused, "the honest node was not refused: {s:?}");
    assert_eq!(s.banned_ips, 1, "{s:?}");
    let honest_id = honest.handle().peer_id().to_base58();
    let peers = listener.handle().peers().await.expect("peers");
    assert!(peers.iter().all(|p| p.peer != honest_id), "{peers:?}");
    for node in [first, second, honest, listener] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_items_from_fresh_keys_under_their_budget_add_up_to_an_ip_ban() {
    // Per peer the default budget of 16; per IP, 10 in all.
    let listener = spawn(config(vec![]).with_max_invalid_per_ip(10)).await;
    let rejected = |s: &Stats| s.rejected.get("bad_signature").copied().unwrap_or(0);

    let first = forge_until(&listener, |s| rejected(s) >= 5).await;
    assert_eq!(stats(&listener).await.banned_ips, 0);
    // Just past the IP's budget, then no more: the network charges invalid items to the IP on
    // its next tick, and a key forging on meanwhile could pass its own budget on a busy host.
    let second = forge_until(&listener, |s| rejected(s) > 10).await;
    let banned_ip = eventually(Duration::from_secs(10), || async {
        stats(&listener).await.banned_ips == 1
    })
    .await;
    let s = stats(&listener).await;
    assert!(banned_ip, "the IP was not banned: {s:?}");
    assert_eq!(s.banned, 0, "no key went over its own budget: {s:?}");
    let invalid = |node: &Node| s.peers[&node.handle().peer_id().to_base58()].invalid;
    assert!(invalid(&first) >= 5, "{s:?}");
    assert!(
        invalid(&second) <= 10,
        "the second key alone went over the IP's budget: {s:?}"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            peer_count(&listener).await == 0
        })
        .await,
        "the banned IP's peers are still connected"
    );
    for node in [first, second, listener] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_ip_gets_no_protocol_byte() {
    let listener = spawn(config(vec![]).with_max_connections_per_ip(1)).await;
    // A client that never finishes its handshake is not counted against the cap.
    assert_negotiates(&listener).await;
    let a = spawn(config(vec![address(&listener).await])).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            peer_count(&listener).await == 1
        })
        .await,
        "the first node did not connect"
    );

    assert_refused_before_handshake(&listener, |s| s.connections_refused_per_ip).await;
    assert_eq!(peer_count(&listener).await, 1);

    // A free slot lets the next one negotiate again.
    a.shutdown().await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            peer_count(&listener).await == 0
        })
        .await,
        "the first node did not disconnect"
    );
    assert_negotiates(&listener).await;
    listener.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_ip_gets_no_protocol_byte() {
    let listener = spawn(config(vec![]).with_max_invalid_per_ip(1)).await;
    assert_negotiates(&listener).await;
    let forger = forge_until(&listener, |s| s.banned_ips == 1).await;
    // No redials of its own mixed into the counts.
    forger.shutdown().await;

    assert_refused_before_handshake(&listener, |s| s.connections_refused_banned_ip).await;
    let s = stats(&listener).await;
    assert_eq!(s.banned_ips, 1, "{s:?}");
    listener.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_left_hanging_from_one_ip_are_capped() {
    const PENDING: u32 = 3;
    let listener = spawn(config(vec![]).with_max_pending_per_ip(PENDING)).await;
    let mut hanging = Vec::new();
    for _ in 0..PENDING {
        hanging.push(half_open(&listener).await);
    }

    // One more from the same IP costs the node no handshake; another IP still gets one.
    assert_refused_before_handshake(&listener, |s| s.connections_refused_per_ip).await;
    match probe_from(&listener, Ipv4Addr::new(127, 0, 0, 2)).await {
        Some(heard) => assert!(
            heard.bytes.starts_with(MULTISTREAM),
            "another IP was refused too: {heard:?}"
        ),
        None => eprintln!("cannot bind 127.0.0.2 here: other IPs not checked"),
    }
    let s = stats(&listener).await;
    assert_eq!(s.connections_refused_per_ip, 1, "{s:?}");

    // Closing them frees their slots at once: well before the node's 10 s handshake timeout
    // (which started with them) would have.
    drop(hanging);
    let answered = eventually(Duration::from_secs(5), || async {
        probe(&listener).await.bytes.starts_with(MULTISTREAM)
    })
    .await;
    assert!(
        answered,
        "the closed handshakes still hold their slots: {:?}",
        stats(&listener).await
    );
    listener.shutdown().await;
}
