//! The libp2p side of a node: the composed behaviour, the per-IP gate, the sync protocol's
//! codec, and the transport (TCP or in-memory) with noise and yamux.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::core::transport::{MemoryTransport, PortUse};
use libp2p::core::upgrade::Version;
use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{
    allow_block_list, autonat, connection_limits, dcutr, gossipsub, identify, identity, kad, mdns,
    noise, relay, request_response, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm,
    SwarmBuilder, Transport as _,
};
use tokio::time::Instant;

use super::groups::{address_group, Admit, Group, Groups, Limits, Pending};
use super::{Config, Error, Transport};
use blockend_kernel::sync;

/// Most inbound connections in their handshake at once, from everywhere: the swarm refuses
/// more (`connection_limits`), which also bounds the gate's per-group count of them.
pub(super) const MAX_PENDING_INCOMING: u32 = 32;

/// The sync protocol's name on the wire.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/blockend/sync/2");

/// Kademlia's protocol name: blockend's own DHT, apart from IPFS's (`/ipfs/kad/1.0.0`), so its
/// tables hold blockend nodes only.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/blockend/kad/1.0.0");

/// The circuit relay v2 protocol a relay serves (in a peer's identify info when it relays).
pub const RELAY_HOP_PROTOCOL: StreamProtocol =
    StreamProtocol::new("/libp2p/circuit/relay/0.2.0/hop");

/// Everything a node speaks.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Per-IP limits, checked first: refuses banned and full address groups, and groups with
    /// their most handshakes in flight, before the handshake.
    pub gate: Gate,
    /// Caps on connections.
    pub limits: connection_limits::Behaviour,
    /// Banned peers.
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    /// Live push of new blocks.
    pub gossipsub: gossipsub::Behaviour,
    /// The kernel's sync protocol: each request is one encoded `sync::Message`, the response
    /// an empty acknowledgement.
    pub sync: request_response::Behaviour<SyncCodec>,
    /// Exchanges listen addresses and versions.
    pub identify: identify::Behaviour,
    /// Local discovery, when enabled.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Discovery beyond the LAN: blockend's Kademlia DHT ([`KAD_PROTOCOL`]), where the nodes
    /// of one app announce themselves as providers of the app's key.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// Whether this node is reachable from outside (and the server side of others' probes).
    pub autonat: autonat::Behaviour,
    /// The circuit relay v2 server, when the node serves as a relay (`--relay`).
    pub relay: Toggle<relay::Behaviour>,
    /// The relay client: reservations on relays, and connections through them.
    pub relay_client: relay::client::Behaviour,
    /// Hole punching over a relayed connection (DCUtR), unless turned off.
    pub dcutr: Toggle<dcutr::Behaviour>,
}

/// Refuses an inbound connection from a banned address group, from one that has its most
/// established inbound connections, or from one that has its most connections in their
/// handshake ([`Limits::pending`]), as soon as it is accepted: before the security handshake,
/// so a refused remote costs the node an accept and a close, not a Diffie-Hellman and a
/// signature per attempt. Answers from the [`Groups`] table without changing its counts; the
/// network actor keeps the table (through this field) and counts connections once they are
/// established, which is where connections that were pending together meet the cap.
///
/// The handshakes in flight it counts itself, in [`Pending`]: one is counted when the gate
/// lets it start, and ends when the swarm reports it established
/// (`handle_established_inbound_connection`, always called on the gate, the first field; and
/// `FromSwarm::ConnectionEstablished`: ending twice is harmless) or failed
/// (`FromSwarm::ListenFailure` with its connection id: a failed or timed-out upgrade, a
/// remote that closed, or a denial by a later behaviour, before or after the handshake).
/// Without that count one address could hold all [`MAX_PENDING_INCOMING`] slots with
/// handshakes it never finishes (each until the transport's timeout), starving every honest
/// inbound connection.
pub struct Gate {
    /// The per-group counters, fed by the network actor.
    pub(super) groups: Groups,
    /// Inbound handshakes in flight, per group.
    pending: Pending,
}

impl Gate {
    pub(super) fn new(limits: Limits) -> Self {
        Self {
            groups: Groups::new(limits),
            pending: Pending::new(limits.pending),
        }
    }
}

/// Why the [`Gate`] denied a pending inbound connection: the cause inside the swarm's
/// `ListenError::Denied`, which the network actor downcasts to count it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Refused {
    /// The remote's address group.
    pub(super) group: Group,
    /// [`Admit::Banned`], or [`Admit::Full`]: the group has its most established inbound
    /// connections or its most in their handshake (one reason to the stats, which count both
    /// as `connections_refused_per_ip`).
    pub(super) admit: Admit,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.admit {
            Admit::Banned => "is banned",
            _ => "has its most inbound connections, established or in their handshake",
        };
        write!(f, "address group {} {why}", self.group)
    }
}

impl std::error::Error for Refused {}

impl NetworkBehaviour for Gate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(group) = address_group(remote_addr) else {
            return Ok(());
        };
        let admit = match self.groups.check(group, Instant::now()) {
            Admit::Yes if !self.pending.start(id, group) => Admit::Full,
            admit => admit,
        };
        match admit {
            Admit::Yes => Ok(()),
            admit => Err(ConnectionDenied::new(Refused { group, admit })),
        }
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        // The handshake is over whatever the other behaviours decide: a later denial still
        // comes as a `ListenFailure`, and ending twice is harmless.
        self.pending.end(id);
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ListenFailure(failure) => self.pending.end(failure.connection_id),
            FromSwarm::ConnectionEstablished(established) => {
                self.pending.end(established.connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// Length-delimited by the stream: a request is the bytes of one encoded sync message, read
/// to the end of the stream with a cap; a response is empty.
#[derive(Clone, Debug)]
pub struct SyncCodec {
    /// Largest request accepted, in bytes.
    pub max_request_bytes: u64,
}

#[async_trait]
impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut bytes = Vec::new();
        io.take(self.max_request_bytes + 1)
            .read_to_end(&mut bytes)
            .await?;
        if bytes.len() as u64 > self.max_request_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "sync message over the size cap",
            ));
        }
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

/// The gossipsub message id: blake3 of the whole encoded block, so a forged copy (same header,
/// another signature) never shadows the honest block in gossipsub's seen-cache.
pub fn message_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    gossipsub::MessageId::from(blake3::hash(&message.data).as_bytes().to_vec())
}

/// Gossipsub as `sync::DISSEMINATION` has it (mesh bounds, no flood publish, no IHAVE
/// gossip): the simulator models the same numbers; see the kernel's `sync` docs for why.
fn gossipsub(config: &Config) -> Result<gossipsub::Behaviour, Error> {
    let spread = sync::DISSEMINATION;
    let mut gossip = gossipsub::ConfigBuilder::default();
    gossip
        .mesh_n(spread.mesh_n)
        .mesh_n_low(spread.mesh_n_low)
        .mesh_n_high(spread.mesh_n_high)
        .mesh_outbound_min(spread.mesh_outbound_min)
        .flood_publish(spread.flood_publish)
        .gossip_lazy(spread.gossip_lazy);
    if spread.gossip_lazy == 0 {
        gossip.gossip_factor(0.0);
    }
    let gossip = gossip
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .validate_messages()
        .message_id_fn(message_id)
        .max_transmit_size(config.max_gossip_bytes)
        .heartbeat_interval(config.heartbeat)
        .build()
        .map_err(|e| Error::Config(format!("gossipsub: {e}")))?;
    let mut behaviour =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, gossip)
            .map_err(|e| Error::Config(format!("gossipsub: {e}")))?;
    // Invalid blocks lower a peer's score (P4 = -0.5 x invalid^2): past 10 it falls below the
    // gossip threshold, past 14 below the publish threshold; graylisting (past 20) comes after
    // the node's own ban (past the sync machine's `max_invalid`, default 16), which
    // disconnects the peer for a while. Quiet peers are not punished: feeds are often idle.
    let topic = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -0.5,
        invalid_message_deliveries_decay: 0.9,
        ..Default::default()
    };
    let mut params = gossipsub::PeerScoreParams::default();
    params.topics.insert(config.topic().hash(), topic);
    let thresholds = gossipsub::PeerScoreThresholds {
        gossip_threshold: -50.0,
        publish_threshold: -100.0,
        graylist_threshold: -200.0,
        ..Default::default()
    };
    behaviour
        .with_peer_score(params, thresholds)
        .map_err(|e| Error::Config(format!("gossipsub scoring: {e}")))?;
    behaviour
        .subscribe(&config.topic())
        .map_err(|e| Error::Config(format!("gossipsub subscribe: {e}")))?;
    Ok(behaviour)
}

/// The relay server's bounds (circuit relay v2), when the node serves with `--relay`.
///
/// - **Reservations**: at most 128 at once, 4 per peer, each for an hour (renewed by the
///   client); new ones are rate-limited per peer (a burst of 30, then one per 2 minutes) and
///   per IP (a burst of 60, then one a minute). The node's per-IP cap on inbound connections
///   ([`Config::max_connections_per_ip`]) bounds the peers one IP holds reservations for.
/// - **Circuits**: at most 16 at once, 4 per peer, rate-limited per source peer and IP as
///   reservations are.
/// - **Data**: a circuit carries at most 128 KiB and lives at most 2 minutes (whichever comes
///   first), then the relay closes it. That is room for a catch-up of about a thousand small
///   blocks and for every live block in between; two nodes that stay relayed (hole punching
///   failed) open a new circuit when they next find each other, and anti-entropy carries on
///   where the last one stopped.
pub fn relay_limits() -> relay::Config {
    relay::Config {
        max_reservations: 128,
        max_reservations_per_peer: 4,
        reservation_duration: Duration::from_secs(3600),
        max_circuits: 16,
        max_circuits_per_peer: 4,
        max_circuit_duration: Duration::from_secs(120),
        max_circuit_bytes: 128 * 1024,
        ..relay::Config::default()
    }
}

/// Kademlia as blockend runs it: its own protocol name, a bounded memory store (1,024
/// provided keys, 20 providers per key, at most 2 per address group, filled by the network
/// actor; no other records are stored), provider records kept 30 minutes and
/// renewed by the network actor every 10 minutes (a relay drops the record of a relayed peer
/// as soon as it leaves); only peers that identify with
/// [`KAD_PROTOCOL`] enter the routing table (the network actor adds them, at the addresses
/// it has evidence for).
fn kad(peer_id: PeerId, config: &Config) -> kad::Behaviour<kad::store::MemoryStore> {
    let mut cfg = kad::Config::new(KAD_PROTOCOL);
    cfg.set_query_timeout(Duration::from_secs(30))
        // A record outlives its node by 30 minutes at most (renewed every 10).
        .set_provider_record_ttl(Some(Duration::from_secs(1800)))
        // Renewed by the network actor, with the addresses of the moment.
        .set_provider_publication_interval(None)
        .set_kbucket_inserts(kad::BucketInserts::Manual)
        // Provider records are stored by the network actor (per-group caps); other records
        // never.
        .set_record_filtering(kad::StoreInserts::FilterBoth)
        .set_periodic_bootstrap_interval(Some(Duration::from_secs(300)));
    let store = kad::store::MemoryStore::new(peer_id);
    let mut kad = kad::Behaviour::with_config(peer_id, store, cfg);
    // A relay, or a node given `--external`, is reachable (its operator says so); any other serves
    // the DHT once AutoNAT finds it reachable (the network actor switches it).
    kad.set_mode(Some(if config.relay || !config.external.is_empty() {
        kad::Mode::Server
    } else {
        kad::Mode::Client
    }));
    kad
}

/// AutoNAT (v1): probes reachability through connected peers, and answers their probes.
/// Addresses outside the global unicast ranges are ignored unless
/// [`Config::nonglobal_addresses`] says otherwise (NAT labs only).
fn autonat(peer_id: PeerId, config: &Config) -> autonat::Behaviour {
    autonat::Behaviour::new(
        peer_id,
        autonat::Config {
            boot_delay: Duration::from_secs(3),
            retry_interval: Duration::from_secs(60),
            throttle_server_period: Duration::from_secs(15),
            only_global_ips: !config.nonglobal_addresses,
            ..autonat::Config::default()
        },
    )
}

fn behaviour(
    key: &identity::Keypair,
    config: &Config,
    relay_client: relay::client::Behaviour,
) -> Result<Behaviour, Error> {
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(config.max_connections))
        // A relayed connection each way (two nodes that found each other in the DHT dial at
        // once) and the direct ones a hole punch adds.
        .with_max_established_per_peer(Some(4))
        .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
        .with_max_pending_outgoing(Some(32));
    let peer_id = key.public().to_peer_id();
    let mdns = if config.mdns {
        let mdns = mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
            .map_err(|e| Error::Config(format!("mDNS: {e}")))?;
        Some(mdns)
    } else {
        None
    };
    let sync = request_response::Behaviour::with_codec(
        SyncCodec {
            max_request_bytes: config.sync.limits.max_message_bytes as u64,
        },
        [(SYNC_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(Duration::from_secs(30))
            .with_max_concurrent_streams(64),
    );
    let gate = Gate::new(Limits {
        connections: config.max_connections_per_ip,
        bans: config.max_bans_per_ip,
        invalid: config.max_invalid_per_ip,
        period: config.ban,
        pending: config.max_pending_per_ip,
    });
    Ok(Behaviour {
        gate,
        limits: connection_limits::Behaviour::new(limits),
        blocked: allow_block_list::Behaviour::default(),
        gossipsub: gossipsub(config)?,
        sync,
        identify: identify::Behaviour::new(identify::Config::new(
            "/blockend/1.0.0".to_owned(),
            key.public(),
        )),
        mdns: mdns.into(),
        kad: kad(peer_id, config),
        autonat: autonat(peer_id, config),
        relay: config
            .relay
            .then(|| relay::Behaviour::new(peer_id, relay_limits()))
            .into(),
        relay_client,
        dcutr: config
            .holepunch
            .then(|| dcutr::Behaviour::new(peer_id))
            .into(),
    })
}

/// Whether `transport`, as the node builds its swarm, can dial `addr`: the IP transports dial
/// `<host>/tcp/<port>` and `<host>/udp/<port>/quic-v1`, where the host is `/ip4`, `/ip6`,
/// `/dns`, `/dns4` or `/dns6`; the memory transport `/memory/<n>`; all with an optional
/// `/p2p/<peer id>` at the end. A relayed address is a dialable address of the relay with its
/// peer id, then `/p2p-circuit`, then the peer id of the node behind it
/// (`/ip4/198.51.100.1/tcp/4001/p2p/<relay>/p2p-circuit/p2p/<peer>`). Checked at start, so a
/// `--peer` that could never be dialed is refused in one line instead of failing on every
/// redial.
///
/// # Errors
/// [`Error::Config`] naming the address and what the transport dials.
pub fn check_dialable(transport: Transport, addr: &Multiaddr) -> Result<(), Error> {
    let parts: Vec<Protocol<'_>> = addr.iter().collect();
    let circuit = parts.iter().position(|p| matches!(p, Protocol::P2pCircuit));
    // A relay's own address must end in its peer id (`at > 0` then), and one hop only.
    let (direct, rest) = match circuit {
        Some(at) if at > 0 && matches!(parts[at - 1], Protocol::P2p(_)) => {
            (&parts[..at], &parts[at + 1..])
        }
        Some(_) => (&parts[..0], &parts[..0]),
        None => (&parts[..], &parts[..0]),
    };
    let dialable = !direct.is_empty() && dials_directly(transport, direct);
    // Through a relay the node behind it must be named; directly, the peer id is optional.
    let rest_ok = match circuit {
        Some(_) => matches!(rest, [Protocol::P2p(_)]),
        None => rest.is_empty(),
    };
    if dialable && rest_ok {
        return Ok(());
    }
    let supported = match transport {
        Transport::Ip => {
            "this node dials TCP and QUIC addresses of an /ip4, /ip6, /dns, /dns4 or /dns6 host, \
             e.g. /ip4/192.0.2.1/tcp/4001, /dns4/example.org/udp/4001/quic-v1, and such an \
             address of a relay with /p2p/<relay id>/p2p-circuit/p2p/<peer id> after it \
             (WebSocket addresses are not supported)"
        }
        Transport::Memory => {
            "this node runs the memory transport and dials /memory addresses only (or relayed \
             ones through a /memory relay)"
        }
    };
    Err(Error::Config(format!(
        "cannot dial --peer {addr}: {supported}"
    )))
}

/// Whether `parts` (no `/p2p-circuit` among them) is an address `transport` dials directly,
/// with an optional `/p2p/<peer id>` at the end.
fn dials_directly(transport: Transport, parts: &[Protocol<'_>]) -> bool {
    let mut parts = parts.iter();
    let dialable = match transport {
        Transport::Ip => {
            matches!(
                parts.next(),
                Some(
                    Protocol::Ip4(_)
                        | Protocol::Ip6(_)
                        | Protocol::Dns(_)
                        | Protocol::Dns4(_)
                        | Protocol::Dns6(_)
                )
            ) && match parts.next() {
                Some(Protocol::Tcp(_)) => true,
                Some(Protocol::Udp(_)) => matches!(parts.next(), Some(Protocol::QuicV1)),
                _ => false,
            }
        }
        Transport::Memory => matches!(parts.next(), Some(Protocol::Memory(_))),
    };
    dialable
        && match parts.next() {
            None => true,
            Some(Protocol::P2p(_)) => parts.next().is_none(),
            Some(_) => false,
        }
}

/// Builds the swarm on the configured transport.
pub fn swarm(key: identity::Keypair, config: &Config) -> Result<Swarm<Behaviour>, Error> {
    let idle = Duration::from_secs(3600);
    let builder = SwarmBuilder::with_existing_identity(key.clone()).with_tokio();
    let swarm = match config.transport {
        Transport::Ip => {
            let ip = builder
                .with_tcp(
                    tcp::Config::default().nodelay(true),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .map_err(|e| Error::Config(format!("tcp transport: {e}")))?
                .with_quic();
            // The system's resolver (and hosts file); without a resolver configuration (a
            // bare container) names still resolve from the hosts file.
            let (resolver, options) = match hickory_resolver::system_conf::read_system_conf() {
                Ok(conf) => conf,
                Err(error) => {
                    tracing::warn!(%error, "no system DNS configuration: names resolve from the hosts file only");
                    (
                        libp2p::dns::ResolverConfig::new(),
                        libp2p::dns::ResolverOpts::default(),
                    )
                }
            };
            let ip = ip
                .with_dns_config(resolver, options)
                .with_relay_client(noise::Config::new, yamux::Config::default)
                .map_err(|e| Error::Config(format!("relay client: {e}")))?;
            ip.with_behaviour(|key, relay_client| {
                behaviour(key, config, relay_client)
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            })
            .map_err(|e| Error::Config(super::network::causes(&e)))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build()
        }
        Transport::Memory => {
            let noise = noise::Config::new(&key)
                .map_err(|e| Error::Config(format!("memory transport: {e}")))?;
            let (relayed, relay_client) = relay::client::new(key.public().to_peer_id());
            let behaviour = behaviour(&key, config, relay_client)?;
            // The relay transport first: the memory transport claims any address that starts
            // with `/memory`, circuits through a memory relay included.
            let transport = relayed
                .or_transport(MemoryTransport::default())
                .upgrade(Version::V1)
                .authenticate(noise)
                .multiplex(yamux::Config::default())
                .boxed();
            infallible(
                infallible(builder.with_other_transport(|_| transport))
                    .with_behaviour(|_| behaviour),
            )
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build()
        }
    };
    Ok(swarm)
}

fn infallible<T>(result: Result<T, std::convert::Infallible>) -> T {
    match result {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use libp2p::swarm::{ListenError, ListenFailure};

    use super::*;

    fn addr(text: &str) -> Multiaddr {
        text.parse().expect("a multiaddr")
    }

    #[test]
    fn the_gate_counts_a_handshake_until_it_is_established_or_fails() {
        let mut gate = Gate::new(Limits {
            connections: 8,
            bans: 2,
            invalid: 64,
            period: Duration::from_secs(60),
            pending: 2,
        });
        let local = addr("/ip4/127.0.0.1/tcp/4001");
        let remote = addr("/ip4/10.0.0.1/tcp/5000");
        let id = ConnectionId::new_unchecked;
        let start =
            |gate: &mut Gate, n| gate.handle_pending_inbound_connection(id(n), &local, &remote);
        let fail = |gate: &mut Gate, n| {
            gate.on_swarm_event(FromSwarm::ListenFailure(ListenFailure {
                local_addr: &local,
                send_back_addr: &remote,
                error: &ListenError::Aborted,
                connection_id: id(n),
                peer_id: None,
            }))
        };

        assert!(start(&mut gate, 1).is_ok());
        assert!(start(&mut gate, 2).is_ok());
        let denied = start(&mut gate, 3).expect_err("a third handshake from one IP");
        let refused = denied
            .downcast_ref::<Refused>()
            .expect("the gate's refusal");
        assert_eq!(refused.admit, Admit::Full);
        // The swarm reports the gate's own refusal as a failure too: it frees nothing.
        fail(&mut gate, 3);
        assert!(start(&mut gate, 4).is_err());

        let peer = identity::Keypair::generate_ed25519().public().to_peer_id();
        gate.handle_established_inbound_connection(id(1), peer, &local, &remote)
            .expect("the gate denies nothing once established");
        assert!(
            start(&mut gate, 5).is_ok(),
            "an established one frees its slot"
        );
        assert!(start(&mut gate, 6).is_err());
        fail(&mut gate, 2);
        assert!(start(&mut gate, 7).is_ok(), "a failed one frees its slot");

        // Addresses without an IP are in no group, and never counted.
        let memory = addr("/memory/1");
        for n in 10..20 {
            assert!(gate
                .handle_pending_inbound_connection(id(n), &local, &memory)
                .is_ok());
        }
        assert_eq!(gate.pending.len(), 2);
    }
}
