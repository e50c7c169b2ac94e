//! The libp2p node: a kernel on a thread of its own, and a swarm that carries the kernel's sync
//! protocol (request-response) and pushes new blocks live (gossipsub).
//!
//! Two actors joined by bounded channels:
//! - the **kernel actor** (a dedicated OS thread, because RocksDB calls block) owns the
//!   [`Kernel`] and the sync [`Protocol`](blockend_kernel::sync::Protocol), and answers the
//!   local API;
//! - the **network actor** (a tokio task) owns the libp2p swarm: TCP with noise and yamux and
//!   QUIC (or the in-memory transport in tests), and circuit relay v2 connections; gossipsub;
//!   request-response for sync; identify; mDNS; Kademlia; AutoNAT; a relay server (when
//!   asked), the relay client and DCUtR; connection limits and a block list.
//!
//! Inbound network data goes to the kernel with `try_send`: when the kernel's queue is full the
//! message is dropped and counted (anti-entropy repairs the loss), so the network actor never
//! waits on the kernel. Connection events are never dropped.
//!
//! The kernel actor is a thin shell around the sync machine: connections, sync messages,
//! gossip blocks (as `sync::Event::Pushed`) and the anti-entropy timer ([`Config::tick`]) are
//! events for it, and everything it keeps about peers (known heads, wants in flight,
//! penalties) lives in the machine alone.
//!
//! Gossip validation follows DESIGN.md "Drivers": an intrinsic fault (decoding, signature, body
//! hash, size, link) is `Reject`; a valid block is `Accept`; anything not decidable at once
//! (orphan, held, rejected by a slice in the current state) is `Ignore`, so honest relays are
//! never punished. Invalid blocks count against the peer the kernel names as their sender (an
//! orphan found invalid when its parent arrives is charged to whoever sent the orphan, not to
//! whoever sent the parent). A peer whose invalid blocks and malformed messages pass the
//! machine's budget (`sync::Config::max_invalid`, set with [`Config::with_ban`]) is
//! disconnected and banned for [`Config::ban`]. The gossipsub message id is blake3 of the whole
//! encoded block (DESIGN.md), not the block id, so a forged copy cannot shadow the honest block
//! in gossipsub's seen-cache.
//!
//! Identities are free, so some limits are kept per **address group** instead, which a fresh
//! key does not reset: the exact IPv4 address, or the IPv6 /64 (a single IPv6 host commonly
//! holds a whole /64). Addresses without an IP (the memory transport, DNS, relayed) are in no
//! group and not limited. A group may hold [`Config::max_connections_per_ip`] established
//! inbound connections; more are refused and counted in
//! [`Stats::connections_refused_per_ip`]. Every peer ban is charged to the peer's group, and so
//! is every invalid item counted against the peer; a group with more than
//! [`Config::max_bans_per_ip`] bans or more than [`Config::max_invalid_per_ip`] invalid items
//! within [`Config::ban`] is banned for [`Config::ban`] (counted in [`Stats::banned_ips`]):
//! its connections, in and out, are closed, and so is every new one, whatever its key
//! ([`Stats::connections_refused_banned_ip`]). An inbound connection from a banned or full
//! group is refused as soon as it is accepted, before the security handshake, so a refused
//! remote costs an accept and a close, not a key exchange per attempt
//! ([`Stats::connections_refused_before_handshake`]); so is one past
//! [`Config::max_pending_per_ip`] connections still in their handshake from the group (4 by
//! default: one host cannot hold every pending slot); the count of established connections
//! stays authoritative for those that were pending together. At most 4,096 groups are
//! remembered, the least recently seen idle one forgotten first.
//!
//! A peer that does not speak [`SYNC_PROTOCOL`] (a plain libp2p node: its identify info lacks
//! it, or it refuses a sync request as unsupported) is remembered (a bounded set, kept past
//! its connections), logged once, counted in [`Stats::sync_unsupported_peers`] and taken out of
//! the sync machine, so no heads or wants are made for it any more; the connection stays, for
//! whatever else the peer speaks. It meets the machine again when it identifies with the
//! protocol.
//!
//! Retention is the kernel's: the node runs the kernel it is given, with that kernel's
//! `capacity_bytes` (the byte budget for other authors' feeds; the CLI builds it from
//! `DIR/capacity`, `--capacity`, or 1 GiB by default: bounded unless asked otherwise, about six
//! million blocks with 20-byte bodies, small next to today's disks; own feeds are never counted
//! or evicted). Blocks of a feed that ranks too low are refused before their signature is
//! checked (`rejected.over_capacity`, and the kernel's `over_capacity` in [`Stats`]).
//! [`Handle::follow`] and [`Handle::unfollow`] change which authors rank first, persisted in
//! the store; [`Handle::feeds`] lists every feed in retention order.
//!
//! Own blocks are published by gossipsub (not handed to the machine to push, which would send
//! them twice); when gossipsub has no peer for the topic yet (the mesh forms at the first
//! heartbeat) they go to every connected peer as a sync push instead. Blocks that arrive by
//! sync are not pushed on (`sync::Config::push` is off): each neighbour finds them in its next
//! reconciliation round, so a catch-up costs each link the difference once instead of a push
//! to every peer not known to hold them. How live blocks spread (gossipsub's mesh at D = 3, no
//! flood publish, no IHAVE gossip) is `sync::DISSEMINATION`, shared with the simulator.
//!
//! **Reach beyond the LAN** uses libp2p's own protocols only. Discovery: Kademlia on
//! blockend's own protocol name ([`KAD_PROTOCOL`], not IPFS's DHT). A node announces itself
//! as a provider of the app's key (blake3 of the app's gossip topic) once it has an external
//! address (confirmed by AutoNAT, or its relayed address), renews that every 10 minutes and
//! whenever its external addresses change, and looks the key up every 2 s at first, doubling
//! to 5 minutes (again from 2 s when a peer leaves or the routing table meets a new one).
//! Only peers that identify with the DHT protocol enter the routing table, at the addresses
//! the node has evidence for (as for the address book). Eclipse resistance: connections the
//! DHT leads to (dials of DHT answers, at most 4 per answer, and Kademlia's own query dials
//! to new peers) hold at most half of [`Config::max_connections`] and are closed past it;
//! `--peer`/`--bootstrap` peers are always redialed; the address book keeps 2 peers per
//! subnet. Reachability: AutoNAT (v1) probes through connected
//! peers; a node found `public` serves the DHT, any other is a DHT client ([`Config::relay`]
//! nodes, and those given [`Config::external`], serve from the start). A node not known to be
//! `public` reserves a slot on up to 2 relays among its `--peer`/`--bootstrap` peers (those
//! that identify with the circuit relay v2 hop protocol; never a peer the DHT named, since a
//! relay's circuits pass every per-IP limit), retried every 30 s, which makes
//! its relayed address (`<relay>/p2p/<relay id>/p2p-circuit`) external, so its next provider
//! record carries it; once AutoNAT is confident it is `public` (two confirming probes) it
//! gives the slots back and withdraws the relayed addresses. A relay's bounds are
//! [`relay_limits`]; while two nodes are joined only through a relay, sync runs within its
//! data limits (128 KiB and 2 minutes per circuit), and they meet again through the DHT when a
//! circuit closes. Over a relayed connection DCUtR tries to punch a hole to a direct one
//! (counted in [`Stats::holepunch_attempts`] and [`Stats::holepunch_successes`]; off with
//! [`Config::holepunch`]). Relayed connections are in no address group: the relay's IP is not
//! the remote's. AutoNAT ignores non-global addresses unless [`Config::nonglobal_addresses`]
//! is set (the NAT lab's setting, never the default).

pub mod address_book;
mod behaviour;
mod groups;
mod kernel_actor;
mod network;
mod stats;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use blockend_kernel::{sync, Block, FeedStanding, Kernel, PublicKey, Report};
use libp2p::{gossipsub, Multiaddr, PeerId};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use behaviour::{check_dialable, relay_limits, KAD_PROTOCOL, SYNC_PROTOCOL};
pub use stats::{reason, PeerCounters, Reachability, Stats};

use crate::app::NodeApp;

/// Which transport the node speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// The internet transports: TCP with noise and yamux (`/ip4|/ip6/<ip>/tcp/<port>`) and
    /// QUIC with its own TLS 1.3 (`/ip4|/ip6/<ip>/udp/<port>/quic-v1`), both dialed by DNS
    /// name too (`/dns`, `/dns4`, `/dns6`, resolved with the system's resolver and hosts
    /// file).
    #[default]
    Ip,
    /// libp2p's in-process memory transport (`/memory/N` addresses), for tests.
    Memory,
}

/// Node configuration. Defaults suit a node on a LAN; every queue and table is bounded.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Addresses to listen on. Default `/ip4/0.0.0.0/tcp/0` and `/ip4/0.0.0.0/udp/0/quic-v1`
    /// (TCP and QUIC on ports the system picks).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial, and to redial with exponential backoff when the connection drops. Each
    /// must be an address the transport dials (see [`Transport`]; memory: `/memory/<n>`; all
    /// with an optional `/p2p/<peer id>`), or [`Node::spawn`] refuses it. Failed redials are warned about once, then at most once a minute per peer.
    pub peers: Vec<Multiaddr>,
    /// Local discovery with mDNS. Default on.
    pub mdns: bool,
    /// Where to remember the peers this node has been connected to, so it dials them again
    /// after a restart (see [`address_book`]). Default none; `blockend node` keeps it in the
    /// store's `peers` file.
    pub address_book: Option<std::path::PathBuf>,
    /// The transport. Default [`Transport::Ip`]: TCP and QUIC.
    pub transport: Transport,
    /// The app's name: it names the gossip topic, so nodes of different apps do not mix.
    pub app: String,
    /// The sync machine's configuration, including the budget of invalid blocks and malformed
    /// messages per peer before a ban (`max_invalid`, default 16). Its flooding push is off by
    /// default: gossipsub spreads live blocks, reconciliation the rest.
    pub sync: sync::Config,
    /// Anti-entropy period: a reconciliation round with every peer, held blocks released and
    /// expired ones collected this often. Default 2 s (`sync::DISSEMINATION.tick_ms`, which the
    /// simulator reads too).
    pub tick: Duration,
    /// Gossipsub heartbeat. Default 1 s (`sync::DISSEMINATION.heartbeat_ms`).
    pub heartbeat: Duration,
    /// Largest gossip message. Default: the kernel's body cap plus 4 KiB (set by the node).
    pub max_gossip_bytes: usize,
    /// How long a ban lasts. Default 10 minutes.
    pub ban: Duration,
    /// Most established connections. Default 128.
    pub max_connections: u32,
    /// Most established inbound connections from one address group (an IPv4 address or an
    /// IPv6 /64). Default 8.
    pub max_connections_per_ip: u32,
    /// Most inbound connections from one address group in their security handshake at once
    /// (accepted, not yet established); more are refused before the handshake and counted in
    /// [`Stats::connections_refused_per_ip`]. The node holds at most 32 such connections from
    /// everywhere, each until it finishes or times out (10 s), so this keeps one address from
    /// taking them all with handshakes it never finishes. 0 refuses every inbound connection
    /// with an IP. Default 4.
    pub max_pending_per_ip: u32,
    /// Most peers of one address group banned within [`Config::ban`]; one more bans the
    /// group. Default 2.
    pub max_bans_per_ip: u32,
    /// Most invalid blocks and malformed messages from the peers of one address group, in
    /// all, within [`Config::ban`]; more bans the group. Default 64.
    pub max_invalid_per_ip: u32,
    /// Depth of the kernel actor's inbound queue. Default 4,096 messages.
    pub queue: usize,
    /// Longest wait between redials of an unreachable `--peer`. Default 60 s (first 1 s).
    pub max_backoff: Duration,
    /// Serve as a circuit relay v2 for other nodes (`--relay`), within the bounds
    /// [`relay_limits`] lists; also serves the DHT from the start (a relay says it is
    /// reachable). Default off.
    pub relay: bool,
    /// Try to turn a relayed connection into a direct one by hole punching (DCUtR). Default
    /// on.
    pub holepunch: bool,
    /// Addresses this node is known to be reachable at from outside (`--external`), confirmed
    /// at start instead of waiting for AutoNAT: they go into its provider records and a relay
    /// serves reservations at once. A [`Config::relay`] node also counts every listen address
    /// with a concrete IP and port as external. Default none.
    pub external: Vec<Multiaddr>,
    /// Treat addresses outside the global unicast ranges (private, shared, benchmarking:
    /// 10/8, 100.64/10, 192.168/16, 198.18/15, ...) as global in AutoNAT, so reachability is
    /// probed and confirmed on them. For NAT labs built of such ranges (`scripts/nat-lab`);
    /// default off, as real use needs: a node behind a NAT must not believe a LAN peer's
    /// dial-back proves it reachable.
    pub nonglobal_addresses: bool,
}

/// A random 64-bit seed: std's `RandomState` draws its keys from the OS.
fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u8)
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".parse().expect("a valid multiaddr"),
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("a valid multiaddr"),
            ],
            peers: Vec::new(),
            mdns: true,
            address_book: None,
            transport: Transport::Ip,
            app: "app".to_owned(),
            sync: sync::Config::default()
                .with_push(false)
                .with_grace(sync::DISSEMINATION.grace_ms)
                .with_salt_seed(random_seed()),
            tick: Duration::from_millis(sync::DISSEMINATION.tick_ms),
            heartbeat: Duration::from_millis(sync::DISSEMINATION.heartbeat_ms),
            max_gossip_bytes: 0,
            ban: Duration::from_secs(600),
            max_connections: 128,
            max_connections_per_ip: 8,
            max_pending_per_ip: 4,
            max_bans_per_ip: 2,
            max_invalid_per_ip: 64,
            queue: 4096,
            max_backoff: Duration::from_secs(60),
            relay: false,
            holepunch: true,
            external: Vec::new(),
            nonglobal_addresses: false,
        }
    }
}

impl Config {
    /// Serves as a circuit relay (see [`Config::relay`]).
    pub fn with_relay(mut self, relay: bool) -> Self {
        self.relay = relay;
        self
    }

    /// Turns hole punching on or off (see [`Config::holepunch`]).
    pub fn with_holepunch(mut self, holepunch: bool) -> Self {
        self.holepunch = holepunch;
        self
    }

    /// Sets the addresses this node is reachable at from outside (see [`Config::external`]).
    pub fn with_external(mut self, external: Vec<Multiaddr>) -> Self {
        self.external = external;
        self
    }

    /// Treats non-global addresses as global in AutoNAT (see [`Config::nonglobal_addresses`]).
    pub fn with_nonglobal_addresses(mut self, nonglobal: bool) -> Self {
        self.nonglobal_addresses = nonglobal;
        self
    }

    /// Sets the listen addresses.
    pub fn with_listen(mut self, listen: Vec<Multiaddr>) -> Self {
        self.listen = listen;
        self
    }
    /// Sets the peers to dial.
    pub fn with_peers(mut self, peers: Vec<Multiaddr>) -> Self {
        self.peers = peers;
        self
    }
    /// Remembers connected peers in the file at `path` (see [`Config::address_book`]).
    pub fn with_address_book(mut self, path: std::path::PathBuf) -> Self {
        self.address_book = Some(path);
        self
    }
    /// Turns mDNS on or off.
    pub fn with_mdns(mut self, mdns: bool) -> Self {
        self.mdns = mdns;
        self
    }
    /// Sets the transport.
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }
    /// Sets the anti-entropy period.
    pub fn with_tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }
    /// Sets the number of invalid blocks and malformed messages tolerated per peer (the sync
    /// machine's `max_invalid`: there is one budget, kept by the machine) and the ban length.
    pub fn with_ban(mut self, max_invalid: u32, ban: Duration) -> Self {
        self.sync = self.sync.with_max_invalid(max_invalid);
        self.ban = ban;
        self
    }

    /// Sets the most established inbound connections from one address group.
    pub fn with_max_connections_per_ip(mut self, max: u32) -> Self {
        self.max_connections_per_ip = max;
        self
    }
    /// Sets the most inbound connections from one address group in their handshake at once.
    pub fn with_max_pending_per_ip(mut self, max: u32) -> Self {
        self.max_pending_per_ip = max;
        self
    }
    /// Sets the most peer bans per address group before the group is banned.
    pub fn with_max_bans_per_ip(mut self, max: u32) -> Self {
        self.max_bans_per_ip = max;
        self
    }
    /// Sets the most invalid items per address group before the group is banned.
    pub fn with_max_invalid_per_ip(mut self, max: u32) -> Self {
        self.max_invalid_per_ip = max;
        self
    }

    fn topic(&self) -> gossipsub::IdentTopic {
        gossipsub::IdentTopic::new(format!("blockend/{}/blocks/1", self.app))
    }
}

/// A node failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot be used (a bad address, a `--peer` the transport cannot dial,
    /// a transport that failed to build): the message says which; fix the configuration.
    #[error("{0}")]
    Config(String),
    /// The node could not listen on an address (the port is taken, the address is not the
    /// host's): pick another address or free the port.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why, with the OS cause (e.g. "Address already in use (os error 98)").
        reason: String,
    },
    /// The kernel refused the request (a rejected block, a store failure).
    #[error(transparent)]
    Kernel(#[from] blockend_kernel::Error),
    /// The state cannot be shown: the app has no slice of that name, or its state does not
    /// render as JSON (the cause says which).
    #[error(transparent)]
    State(#[from] crate::app::StateError),
    /// The store was repaired and its own feed lost its newest blocks: appends wait until
    /// peers have sent them back (or the wait is over), so no block is signed at a height the
    /// author already used. Retry later.
    #[error("the store was repaired and its own feed is being recovered from peers (it holds up to seq {have}, it had reached seq {want}); appends resume within {left_ms} ms")]
    Recovering {
        /// The own feed's newest seq now (-1: none).
        have: i64,
        /// The seq the own feed had reached before the damage.
        want: u64,
        /// How long appends still wait at most.
        left_ms: u64,
    },
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
}

/// What the node confirms as its external addresses at start: [`Config::external`], and for a
/// relay every listen address with a concrete IP and port.
fn external_addresses(config: &Config) -> Vec<Multiaddr> {
    use libp2p::multiaddr::Protocol;
    let concrete = |addr: &Multiaddr| {
        addr.iter().all(|p| match p {
            Protocol::Ip4(ip) => !ip.is_unspecified(),
            Protocol::Ip6(ip) => !ip.is_unspecified(),
            Protocol::Tcp(port) | Protocol::Udp(port) => port != 0,
            Protocol::Memory(port) => port != 0,
            _ => true,
        })
    };
    let mut out = config.external.clone();
    if config.relay {
        out.extend(config.listen.iter().filter(|a| concrete(a)).cloned());
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|a| seen.insert(a.clone()));
    out
}

/// Whether `addr` runs through a circuit relay.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2pCircuit))
}

/// The transport a connection to `addr` runs on: `quic`, `tcp` or `memory` (the last one
/// named in the address: a relayed address names the relay's first).
pub fn transport_of(addr: &Multiaddr) -> &'static str {
    use libp2p::multiaddr::Protocol;
    let mut found = "unknown";
    for part in addr.iter() {
        match part {
            Protocol::QuicV1 | Protocol::Quic => found = "quic",
            Protocol::Tcp(_) => found = "tcp",
            Protocol::Memory(_) => found = "memory",
            Protocol::P2pCircuit => break,
            _ => {}
        }
    }
    found
}

/// A connected peer, as `blockend peers` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct PeerInfo {
    /// The peer id (base58).
    pub peer: String,
    /// The peer's author key (hex), which its peer id names ([`author_of`]); absent for a
    /// peer whose id is not an ed25519 key (not a blockend node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The remote address of the connection the node prefers: a direct one over a relayed
    /// one, then the oldest.
    pub address: String,
    /// How that connection runs: `tcp`, `quic` or `memory`.
    pub transport: &'static str,
    /// `direct`, or `relayed` (through a circuit relay: `/p2p-circuit` in the address).
    pub connection: &'static str,
    /// Connections open with the peer (a relayed one and a direct one while an upgrade
    /// settles, for example).
    pub connections: usize,
    /// Traffic with the peer.
    #[serde(flatten)]
    pub counters: PeerCounters,
}

/// The libp2p peer id of a node whose author is `author`: a node's libp2p identity is its
/// author's ed25519 key, so one names the other.
///
/// # Errors
/// A one-line message when the bytes are not an ed25519 public key.
pub fn peer_id_of(author: &PublicKey) -> Result<PeerId, String> {
    libp2p::identity::ed25519::PublicKey::try_from_bytes(&author.0)
        .map(|key| libp2p::identity::PublicKey::from(key).to_peer_id())
        .map_err(|e| {
            format!(
                "author {} is not an ed25519 public key: {e}",
                author.to_hex()
            )
        })
}

/// The author a peer id names ([`peer_id_of`] backwards), or `None` for a peer id that does
/// not embed an ed25519 key (a foreign libp2p node with another key type, or a hashed key).
pub fn author_of(peer: &PeerId) -> Option<PublicKey> {
    let hash = libp2p::multihash::Multihash::<64>::from_bytes(&peer.to_bytes()).ok()?;
    // The identity multihash (code 0) holds the protobuf-encoded public key itself.
    if hash.code() != 0 {
        return None;
    }
    let key = libp2p::identity::PublicKey::try_decode_protobuf(hash.digest()).ok()?;
    let key = key.try_into_ed25519().ok()?;
    Some(PublicKey(key.to_bytes()))
}

/// A read of the kernel, run on the kernel actor's thread.
type KernelRead = Box<dyn FnOnce(&Kernel) + Send>;

/// Requests to the kernel actor.
enum KernelCmd {
    /// Run a read of the kernel ([`Handle::read`]).
    Read(KernelRead),
    /// Dispatch blocks from an import ([`Handle::import`]).
    Import(Vec<Block>, oneshot::Sender<Result<Report, Error>>),
    Connected(PeerId),
    Disconnected(PeerId),
    Sync {
        peer: PeerId,
        bytes: Vec<u8>,
    },
    Gossip {
        source: PeerId,
        id: gossipsub::MessageId,
        bytes: Vec<u8>,
    },
    Tick,
    Append(Vec<u8>, oneshot::Sender<Result<Arc<Block>, Error>>),
    State(
        Option<String>,
        oneshot::Sender<Result<serde_json::Value, Error>>,
    ),
    Blocks(Option<PublicKey>, oneshot::Sender<Vec<Arc<Block>>>),
    Stats(oneshot::Sender<Stats>),
    /// Follow (`follow`) or unfollow an author; the reply says whether that changed anything.
    Follow {
        author: PublicKey,
        follow: bool,
        reply: oneshot::Sender<Result<bool, Error>>,
    },
    /// Every feed in retention order (`Kernel::retention`).
    Feeds(oneshot::Sender<Vec<FeedStanding>>),
    /// Hold appends until the own feed reaches `seq` again or `until` passes (after a repair).
    RecoverOwnFeed {
        seq: u64,
        until: std::time::Instant,
    },
    Shutdown,
}

/// Requests to the network actor.
enum NetCmd {
    /// Send a sync message.
    Send { to: PeerId, bytes: Vec<u8> },
    /// Publish an own block by gossip (falls back to a sync push to every peer).
    Publish(Arc<Block>),
    /// Publish raw bytes on the gossip topic (tests and fault injection).
    PublishRaw(Vec<u8>),
    /// The verdict on a gossip message.
    Validate {
        source: PeerId,
        id: gossipsub::MessageId,
        verdict: gossipsub::MessageAcceptance,
    },
    /// Drop the connection and ban the peer for a while.
    Ban(PeerId),
    /// Drop the connection.
    Disconnect(PeerId),
    /// The connected peers and their addresses.
    Peers(oneshot::Sender<Vec<(PeerId, Vec<Multiaddr>)>>),
    /// The addresses the node listens on, with its peer id.
    Listening(oneshot::Sender<Vec<Multiaddr>>),
}

/// A cheap, cloneable handle on a running node.
#[derive(Clone)]
pub struct Handle {
    peer_id: PeerId,
    author: PublicKey,
    kernel: mpsc::Sender<KernelCmd>,
    net: mpsc::Sender<NetCmd>,
    blocks: broadcast::Sender<Arc<Block>>,
    changes: watch::Receiver<u64>,
    stats: Arc<Mutex<Stats>>,
}

/// A running node: its handle, and the tasks to wait for on shutdown.
pub struct Node {
    handle: Handle,
    shutdown: watch::Sender<bool>,
    network: tokio::task::JoinHandle<()>,
    kernel: std::thread::JoinHandle<()>,
}

impl Node {
    /// Starts a node around `kernel`: listens on the configured addresses (returns once they
    /// are bound), dials the configured peers, and runs until [`Node::shutdown`].
    ///
    /// The libp2p identity is the kernel's identity, so the peer id names the author.
    ///
    /// # Errors
    /// [`Error::Config`] when a `--peer` is not an address the transport dials or the swarm
    /// cannot be built; [`Error::Listen`] when an address cannot be bound.
    pub async fn spawn(
        kernel: Kernel,
        app: Arc<dyn NodeApp>,
        mut config: Config,
    ) -> Result<Node, Error> {
        if config.max_gossip_bytes == 0 {
            config.max_gossip_bytes = kernel.config().max_body_bytes as usize + 4096;
        }
        for addr in &config.peers {
            behaviour::check_dialable(config.transport, addr)?;
        }
        for addr in &config.external {
            if behaviour::check_dialable(config.transport, addr).is_err() || is_relayed(addr) {
                return Err(Error::Config(format!(
                    "--external {addr} is not an address peers could dial this node at: give \
                     its public TCP or QUIC address, e.g. /ip4/198.51.100.7/tcp/4001"
                )));
            }
        }
        let key = libp2p::identity::Keypair::ed25519_from_bytes(kernel.identity().secret())
            .map_err(|e| Error::Config(format!("identity: {e}")))?;
        let peer_id = key.public().to_peer_id();
        let author = kernel.author();
        let mut swarm = behaviour::swarm(key, &config)?;
        let mut listeners = Vec::with_capacity(config.listen.len());
        for addr in &config.listen {
            let id = swarm.listen_on(addr.clone()).map_err(|e| Error::Listen {
                addr: addr.clone(),
                reason: network::causes(&e),
            })?;
            listeners.push((id, addr.clone()));
        }
        for addr in external_addresses(&config) {
            swarm.add_external_address(addr);
        }
        let (kernel_tx, kernel_rx) = mpsc::channel(config.queue);
        let (net_tx, net_rx) = mpsc::channel(config.queue);
        let (blocks_tx, _) = broadcast::channel(1024);
        let (changes_tx, changes_rx) = watch::channel(0);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let stats = Arc::new(Mutex::new(Stats::default()));
        let handle = Handle {
            peer_id,
            author,
            kernel: kernel_tx.clone(),
            net: net_tx.clone(),
            blocks: blocks_tx.clone(),
            changes: changes_rx,
            stats: stats.clone(),
        };
        let actor = kernel_actor::Actor::new(
            kernel,
            app,
            &config,
            net_tx,
            blocks_tx,
            changes_tx,
            stats.clone(),
        );
        let kernel_thread = std::thread::Builder::new()
            .name("blockend-kernel".into())
            .spawn(move || actor.run(kernel_rx))
            .map_err(|e| Error::Config(format!("kernel thread: {e}")))?;
        let mut network =
            network::Network::new(swarm, config.clone(), kernel_tx.clone(), stats, shutdown_rx);
        network.wait_for_listeners(&listeners).await?;
        let network = tokio::spawn(network.run(net_rx));
        let tick = config.tick;
        let mut ticker_shutdown = shutdown_tx.subscribe();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = ticker_shutdown.changed() => break,
                    _ = interval.tick() => {
                        if kernel_tx.send(KernelCmd::Tick).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Node {
            handle,
            shutdown: shutdown_tx,
            network,
            kernel: kernel_thread,
        })
    }

    /// The node's handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Stops the network, then the kernel, which closes its store (writing a state snapshot)
    /// before this returns, so the store can be reopened at once.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.network.await;
        // Queued requests ahead of it are answered first.
        let _ = self.handle.kernel.send(KernelCmd::Shutdown).await;
        let kernel = self.kernel;
        let _ = tokio::task::spawn_blocking(move || kernel.join()).await;
    }
}

impl Handle {
    /// The node's libp2p peer id (derived from the kernel's identity).
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The kernel's author key.
    pub fn author(&self) -> PublicKey {
        self.author
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> KernelCmd) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.kernel
            .send(make(tx))
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    async fn ask_net<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> NetCmd,
    ) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.net.send(make(tx)).await.map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// After a repair that cut the own feed short: holds appends ([`Error::Recovering`])
    /// until peers have sent the own feed back up to `seq` (the sync machine asks for it like
    /// any feed a peer holds further) or `wait` has passed; then appends go on, with a warning
    /// if the feed did not come back.
    ///
    /// # Errors
    /// [`Error::Stopped`].
    pub async fn recover_own_feed(&self, seq: u64, wait: Duration) -> Result<(), Error> {
        let until = std::time::Instant::now() + wait;
        self.kernel
            .send(KernelCmd::RecoverOwnFeed { seq, until })
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Creates, stores and publishes an own block.
    ///
    /// # Errors
    /// [`Error::Kernel`] when no slice takes the body or the store fails,
    /// [`Error::Recovering`] while the own feed is recovered after a repair.
    pub async fn append(&self, body: Vec<u8>) -> Result<Arc<Block>, Error> {
        self.ask(|tx| KernelCmd::Append(body, tx)).await?
    }

    /// The named slice's state (the app's default slice for `None`) as `state` prints it:
    /// `{"slice", "state", "digest", "set_hash"}` ([`crate::api::state_with_digests`]).
    ///
    /// # Errors
    /// [`Error::State`] when the app has no such slice or its state does not render as JSON.
    pub async fn state(&self, slice: Option<String>) -> Result<serde_json::Value, Error> {
        self.ask(|tx| KernelCmd::State(slice, tx)).await?
    }

    /// Every stored block, or one author's, in feed order.
    ///
    /// # Errors
    /// [`Error::Stopped`].
    pub async fn blocks(&self, author: Option<PublicKey>) -> Result<Vec<Arc<Block>>, Error> {
        self.ask(|tx| KernelCmd::Blocks(author, tx)).await
    }

    /// Runs `read` on the kernel, on the kernel actor's thread (between the node's other
    /// requests), and returns what it returns. Keep it short: the node serves nothing else
    /// meanwhile.
    ///
    /// # Errors
    /// [`Error::Stopped`].
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Kernel) -> T + Send + 'static,
    ) -> Result<T, Error> {
        self.ask(|tx| {
            KernelCmd::Read(Box::new(move |kernel| {
                let _ = tx.send(read(kernel));
            }))
        })
        .await
    }

    /// Dispatches `blocks` (an import: one bounded batch) as if a peer had sent them, with
    /// no peer to blame: each is verified and placed like any peer's block. Local
    /// subscribers hear of what was accepted and fork proofs spread at once; peers get the
    /// rest by reconciliation, not pushed. Returns the kernel's report.
    ///
    /// # Errors
    /// [`Error::Kernel`] when the store fails; [`Error::Stopped`].
    pub async fn import(&self, blocks: Vec<Block>) -> Result<Report, Error> {
        self.ask(|tx| KernelCmd::Import(blocks, tx)).await?
    }

    /// The node's counters.
    ///
    /// # Errors
    /// [`Error::Stopped`].
    pub async fn stats(&self) -> Result<Stats, Error> {
        self.ask(KernelCmd::Stats).await
    }

    /// Follows `author`: its feed ranks above every feed the user does not follow and is
    /// kept first when the store is full, and a tombstone that refused it is lifted.
    /// Persisted with the store. Returns whether the author was not followed before.
    ///
    /// # Errors
    /// [`Error::Kernel`] past the bound on followed authors or when the store fails;
    /// [`Error::Stopped`].
    pub async fn follow(&self, author: PublicKey) -> Result<bool, Error> {
        self.ask(|reply| KernelCmd::Follow {
            author,
            follow: true,
            reply,
        })
        .await?
    }

    /// Stops following `author` (its feed is ranked by arrival again). Persisted with the
    /// store. Returns whether the author was followed.
    ///
    /// # Errors
    /// [`Error::Kernel`] when the store fails; [`Error::Stopped`].
    pub async fn unfollow(&self, author: PublicKey) -> Result<bool, Error> {
        self.ask(|reply| KernelCmd::Follow {
            author,
            follow: false,
            reply,
        })
        .await?
    }

    /// Every feed held, in the order retention keeps them (the own feed first), then the
    /// feeds evicted whose tombstones last: [`Kernel::retention`].
    ///
    /// # Errors
    /// [`Error::Stopped`].
    pub async fn feeds(&self) -> Result<Vec<FeedStanding>, Error> {
        self.ask(KernelCmd::Feeds).await
    }

    /// The connected peers with their counters.
    ///
    /// # Errors
    /// [`Error::Stopped`].
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, Error> {
        let peers = self.ask_net(NetCmd::Peers).await?;
        let stats = self.stats.lock().expect("stats lock").clone();
        Ok(peers
            .into_iter()
            .filter_map(|(peer, addrs)| {
                let best = addrs
                    .iter()
                    .find(|a| !is_relayed(a))
                    .or(addrs.first())?
                    .clone();
                Some((peer, best, addrs.len()))
            })
            .map(|(peer, addr, connections)| PeerInfo {
                peer: peer.to_base58(),
                author: author_of(&peer).map(|a| a.to_hex()),
                transport: transport_of(&addr),
                connection: if is_relayed(&addr) {
                    "relayed"
                } else {
                    "direct"
                },
                connections,
                address: addr.to_string(),
                counters: stats
                    .peers
                    .get(&peer.to_base58())
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect())
    }

    /// The addresses the node listens on, each ending in `/p2p/<peer id>`.
    ///
    /// # Errors
    /// [`Error::Stopped`].
    pub async fn listening(&self) -> Result<Vec<Multiaddr>, Error> {
        self.ask_net(NetCmd::Listening).await
    }

    /// Blocks as the kernel accepts them (own and received). A reader that falls more than
    /// 1,024 blocks behind loses the oldest and sees `Lagged`.
    pub fn subscribe_blocks(&self) -> broadcast::Receiver<Arc<Block>> {
        self.blocks.subscribe()
    }

    /// Changes to the state: the value counts dispatches that changed something.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Publishes raw bytes on the gossip topic, bypassing the kernel: for tests and fault
    /// injection (a forged block, garbage).
    ///
    /// # Errors
    /// [`Error::Stopped`].
    pub async fn publish_raw(&self, bytes: Vec<u8>) -> Result<(), Error> {
        self.net
            .send(NetCmd::PublishRaw(bytes))
            .await
            .map_err(|_| Error::Stopped)
    }
}
