//! Errors a person can act on, at start: a `--peer` the node cannot dial (WebSocket, relayed,
//! a bare IP, or of the other transport) is refused with a line naming it and what the node
//! dials, while DNS and QUIC peers are taken; and a busy listen port names the OS cause. (The rate limit on redial
//! warnings is unit-tested beside the network actor, with time passed in.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use blockend::kernel::Kernel;
use blockend::node::{self, Transport};
use blockend::{Node, ReadyApp};
use common::swarm::{address, eventually, spawn};
use libp2p::Multiaddr;

fn addr(text: &str) -> Multiaddr {
    text.parse().expect("a multiaddr")
}

fn tcp_config(peers: Vec<Multiaddr>) -> node::Config {
    node::Config::default()
        .with_transport(Transport::Ip)
        .with_mdns(false)
        .with_listen(vec![addr("/ip4/127.0.0.1/tcp/0")])
        .with_peers(peers)
        .with_tick(Duration::from_millis(300))
}

async fn start(config: node::Config) -> Result<Node, node::Error> {
    let app = ReadyApp::Counter;
    let kernel = Kernel::builder(&app)
        .open()
        .expect("a kernel on a MemoryStore");
    Node::spawn(kernel, Arc::new(app), config).await
}

/// The message of the `Config` error the node fails to start with.
async fn refusal(config: node::Config) -> String {
    match start(config).await {
        Err(node::Error::Config(message)) => message,
        Err(other) => panic!("another error: {other}"),
        Ok(node) => {
            node.shutdown().await;
            panic!("the node started");
        }
    }
}

const DIALS: &str =
    "this node dials TCP and QUIC addresses of an /ip4, /ip6, /dns, /dns4 or /dns6 host";

#[tokio::test]
async fn dns_and_quic_peers_are_taken_at_start() {
    for peer in [
        "/dns4/example.invalid/tcp/4001",
        "/dns/example.invalid/udp/4001/quic-v1",
        "/ip4/192.0.2.1/udp/4001/quic-v1",
        "/ip6/2001:db8::1/udp/4001/quic-v1/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo",
    ] {
        // Unreachable, so redialed with backoff: not an error.
        let node = start(tcp_config(vec![addr(peer)]))
            .await
            .unwrap_or_else(|e| panic!("{peer} refused: {e}"));
        node.shutdown().await;
    }
}

#[tokio::test]
async fn a_udp_peer_without_quic_is_refused_at_start_naming_what_the_node_dials() {
    let message = refusal(tcp_config(vec![addr("/ip4/192.0.2.1/udp/4001")])).await;
    assert!(
        message.starts_with("cannot dial --peer /ip4/192.0.2.1/udp/4001: "),
        "{message}"
    );
    assert!(message.contains(DIALS), "{message}");
}

#[tokio::test]
async fn websocket_bare_ip_and_malformed_relayed_peers_are_refused_too() {
    const RELAY: &str = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo";
    let without_relay_id = "/ip4/192.0.2.1/tcp/4001/p2p-circuit/p2p/".to_owned() + RELAY;
    let two_hops =
        format!("/ip4/192.0.2.1/tcp/4001/p2p/{RELAY}/p2p-circuit/p2p/{RELAY}/p2p-circuit");
    let relay_not_dialable = format!("/ip4/192.0.2.1/udp/4001/p2p/{RELAY}/p2p-circuit");
    let trailing = format!("/ip4/192.0.2.1/tcp/4001/p2p/{RELAY}/p2p-circuit/tcp/5");
    let no_destination = format!("/ip4/192.0.2.1/tcp/4001/p2p/{RELAY}/p2p-circuit");
    for peer in [
        "/ip4/192.0.2.1/tcp/4001/ws",
        "/ip6/::1",
        "/memory/7",
        "/p2p-circuit",
        &without_relay_id,
        &two_hops,
        &relay_not_dialable,
        &trailing,
        &no_destination,
    ] {
        let message = refusal(tcp_config(vec![addr(peer)])).await;
        assert!(message.contains(&format!("--peer {peer}:")), "{message}");
        assert!(message.contains(DIALS), "{message}");
    }
}

#[tokio::test]
async fn relayed_peers_through_a_dialable_relay_are_accepted() {
    const RELAY: &str = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo";
    const PEER: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
    for peer in [
        format!("/ip4/192.0.2.1/tcp/4001/p2p/{RELAY}/p2p-circuit/p2p/{PEER}"),
        format!("/ip4/192.0.2.1/udp/4001/quic-v1/p2p/{RELAY}/p2p-circuit/p2p/{PEER}"),
        format!("/dns4/relay.invalid/tcp/4001/p2p/{RELAY}/p2p-circuit/p2p/{PEER}"),
    ] {
        let node = start(tcp_config(vec![addr(&peer)]))
            .await
            .unwrap_or_else(|e| panic!("{peer} refused: {e}"));
        node.shutdown().await;
    }
}

#[tokio::test]
async fn a_memory_node_refuses_a_tcp_peer() {
    let config = common::swarm::config(
        vec![addr("/ip4/127.0.0.1/tcp/4001")],
        Duration::from_secs(1),
    );
    let message = refusal(config).await;
    assert!(
        message.contains("cannot dial --peer /ip4/127.0.0.1/tcp/4001: "),
        "{message}"
    );
    assert!(message.contains("/memory addresses only"), "{message}");
}

#[tokio::test]
async fn a_tcp_peer_with_a_peer_id_is_dialed() {
    let a = start(tcp_config(vec![])).await.expect("a starts");
    let a_addr = address(&a).await;
    assert!(a_addr.to_string().contains("/tcp/") && a_addr.to_string().contains("/p2p/"));
    let b = start(tcp_config(vec![a_addr])).await.expect("b starts");
    let connected = eventually(Duration::from_secs(10), || async {
        b.handle().peers().await.is_ok_and(|p| !p.is_empty())
    })
    .await;
    assert!(connected, "b never connected to a");
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test]
async fn a_memory_peer_with_a_peer_id_is_dialed() {
    let a = spawn(common::swarm::config(vec![], Duration::from_secs(1))).await;
    let b = spawn(common::swarm::config(
        vec![address(&a).await],
        Duration::from_secs(1),
    ))
    .await;
    let connected = eventually(Duration::from_secs(10), || async {
        b.handle().peers().await.is_ok_and(|p| !p.is_empty())
    })
    .await;
    assert!(connected, "b never connected to a");
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test]
async fn a_busy_listen_port_fails_with_the_os_cause() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = taken.local_addr().expect("an address").port();
    // What the OS says to a second bind, e.g. "Address already in use (os error 98)".
    let cause = std::net::TcpListener::bind(("127.0.0.1", port))
        .expect_err("the port is taken")
        .to_string();
    let busy = addr(&format!("/ip4/127.0.0.1/tcp/{port}"));
    let config = tcp_config(vec![]).with_listen(vec![busy.clone()]);
    match start(config).await {
        Err(error @ node::Error::Listen { .. }) => {
            let line = error.to_string();
            assert!(
                line.starts_with(&format!("cannot listen on {busy}: ")),
                "{line}"
            );
            assert!(line.contains(&cause), "{line} lacks {cause:?}");
            assert!(!line.contains('\n'), "{line}");
        }
        Err(other) => panic!("another error: {other}"),
        Ok(node) => {
            node.shutdown().await;
            panic!("the node listened on a taken port");
        }
    }
    drop(taken);
}
