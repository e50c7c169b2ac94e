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
    allow_block_list, connection_limits, gossipsub, identify, identity, mdns, noise,
    request_response, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder,
    Transport as _,
};
use tokio::time::Instant;

use super::groups::{address_group, Admit, Group, Groups, Limits};
use super::{Config, Error, Transport};

/// The sync protocol's name on the wire.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/blockend/sync/1");

/// Everything a node speaks.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Per-IP limits, checked first: refuses banned and full address groups before the
    /// handshake.
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
}

/// Refuses an inbound connection from a banned address group, or from one that has its most
/// established inbound connections, as soon as it is accepted: before the security handshake,
/// so a refused remote costs the node an accept and a close, not a Diffie-Hellman and a
/// signature per attempt. Answers from the [`Groups`] table without changing its counts; the
/// network actor keeps the table (through this field) and counts connections once they are
/// established, which is where connections that were pending together meet the cap.
pub struct Gate {
    /// The per-group counters, fed by the network actor.
    pub(super) groups: Groups,
}

impl Gate {
    pub(super) fn new(limits: Limits) -> Self {
        Self {
            groups: Groups::new(limits),
        }
    }
}

/// Why the [`Gate`] denied a pending inbound connection: the cause inside the swarm's
/// `ListenError::Denied`, which the network actor downcasts to count it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Refused {
    /// The remote's address group.
    pub(super) group: Group,
    /// [`Admit::Full`] or [`Admit::Banned`].
    pub(super) admit: Admit,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.admit {
            Admit::Banned => "is banned",
            _ => "has its most inbound connections",
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
        _: ConnectionId,
        _: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(group) = address_group(remote_addr) else {
            return Ok(());
        };
        match self.groups.check(group, Instant::now()) {
            Admit::Yes => Ok(()),
            admit => Err(ConnectionDenied::new(Refused { group, admit })),
        }
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
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

    fn on_swarm_event(&mut self, _: FromSwarm) {}

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

/// The gossipsub mesh: target degree, and the bounds that trigger grafting and pruning.
/// `blockend-sim` models live push with the same numbers (`sim::config::Mesh`: `d`, `d_lo`,
/// `d_hi`, `heartbeat_ms`); change both together.
pub const MESH: (usize, usize, usize) = (6, 4, 12);

fn gossipsub(config: &Config) -> Result<gossipsub::Behaviour, Error> {
    let (mesh_n, mesh_n_low, mesh_n_high) = MESH;
    let gossip = gossipsub::ConfigBuilder::default()
        .mesh_n(mesh_n)
        .mesh_n_low(mesh_n_low)
        .mesh_n_high(mesh_n_high)
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

fn behaviour(key: &identity::Keypair, config: &Config) -> Result<Behaviour, Error> {
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(config.max_connections))
        .with_max_established_per_peer(Some(2))
        .with_max_pending_incoming(Some(32))
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
    })
}

/// Whether `transport`, as [`swarm`] builds it, can dial `addr`: TCP dials
/// `/ip4|/ip6/<ip>/tcp/<port>`, the memory transport `/memory/<n>`, either with an optional
/// `/p2p/<peer id>` at the end. Checked at start, so a `--peer` that could never be dialed is
/// refused in one line instead of failing on every redial.
///
/// # Errors
/// [`Error::Config`] naming the address and what the transport dials.
pub fn check_dialable(transport: Transport, addr: &Multiaddr) -> Result<(), Error> {
    let mut parts = addr.iter();
    let dialable = match transport {
        Transport::Tcp => {
            matches!(parts.next(), Some(Protocol::Ip4(_) | Protocol::Ip6(_)))
                && matches!(parts.next(), Some(Protocol::Tcp(_)))
        }
        Transport::Memory => matches!(parts.next(), Some(Protocol::Memory(_))),
    };
    let rest_ok = match parts.next() {
        None => true,
        Some(Protocol::P2p(_)) => parts.next().is_none(),
        Some(_) => false,
    };
    if dialable && rest_ok {
        return Ok(());
    }
    let supported = match transport {
        Transport::Tcp => {
            "this node dials /ip4 and /ip6 TCP addresses only (DNS, QUIC, WebSocket and relayed \
             addresses are not supported yet), e.g. /ip4/192.0.2.1/tcp/4001"
        }
        Transport::Memory => "this node runs the memory transport and dials /memory addresses only",
    };
    Err(Error::Config(format!(
        "cannot dial --peer {addr}: {supported}"
    )))
}

/// Builds the swarm on the configured transport.
pub fn swarm(key: identity::Keypair, config: &Config) -> Result<Swarm<Behaviour>, Error> {
    let idle = Duration::from_secs(3600);
    let behaviour = behaviour(&key, config)?;
    let builder = SwarmBuilder::with_existing_identity(key.clone()).with_tokio();
    let swarm = match config.transport {
        Transport::Tcp => infallible(
            builder
                .with_tcp(
                    tcp::Config::default().nodelay(true),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .map_err(|e| Error::Config(format!("tcp transport: {e}")))?
                .with_behaviour(|_| behaviour),
        )
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build(),
        Transport::Memory => {
            let noise = noise::Config::new(&key)
                .map_err(|e| Error::Config(format!("memory transport: {e}")))?;
            let transport = MemoryTransport::default()
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
