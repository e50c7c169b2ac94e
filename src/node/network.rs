//! The network actor: owns the swarm, turns swarm events into kernel requests (never waiting
//! on the kernel), carries out what the kernel actor asks, and keeps `--peer` connections up
//! with exponential backoff.
//!
//! It also decides which connected peers the sync machine meets: a peer whose identify info
//! lacks [`SYNC_PROTOCOL`], or that refuses a sync request as unsupported, is remembered in a
//! bounded set and taken out of the machine (the connection stays); it is put back when it
//! identifies with the protocol.
//!
//! Limits that a fresh key does not reset are kept per address group ([`super::groups`], in
//! the behaviour's [`Gate`](super::behaviour::Gate)): inbound connections from a banned group
//! or past [`Config::max_connections_per_ip`] are refused by the gate before the handshake;
//! those that got through together are counted here once established, and closed at once
//! past the cap. Every peer ban, and every invalid item the kernel actor counts against a peer
//! (read from the shared [`Stats`]), is charged to the peer's group, and a group over its
//! budget is banned.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blockend_kernel::sync::Message;
use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, PublishError};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::OutboundFailure;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, ListenError, SwarmEvent};
use libp2p::{
    autonat, dcutr, identify, kad, mdns, relay, request_response, Multiaddr, PeerId, Swarm,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::address_book::{self, AddressBook};
use super::behaviour::{
    Behaviour, BehaviourEvent, Refused, KAD_PROTOCOL, RELAY_HOP_PROTOCOL, SYNC_PROTOCOL,
};
use super::groups::{address_group, Admit, Group, Groups};
use super::{Config, Error, KernelCmd, NetCmd, Reachability, Stats};

/// A `--peer` to keep connected.
struct Target {
    addr: Multiaddr,
    peer: Option<PeerId>,
    /// When to dial next; `None` while connected or dialing.
    next: Option<Instant>,
    backoff: Duration,
    /// Rate limit on the warnings of its failed dials.
    failures: FailureLog,
}

/// Least time between two warnings about one `--peer` that cannot be reached.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Rate limit on the warnings about one `--peer`'s failed dials: the first failure (since the
/// last connection) is logged at once, later ones at most once per [`WARN_EVERY`], that line
/// telling how many failed since the last. Time is passed in, so it is tested without waiting.
#[derive(Debug, Default)]
struct FailureLog {
    /// When the last warning was logged; `None` before the first failure of a streak.
    last: Option<Instant>,
    /// Failures since the last warning, not logged yet.
    quiet: u32,
}

impl FailureLog {
    /// A dial failed at `now`: `Some(n)` when a warning is due, covering `n` failures (this
    /// one and those kept quiet since the last warning); `None` to keep quiet.
    fn failed(&mut self, now: Instant) -> Option<u32> {
        self.quiet += 1;
        match self.last {
            Some(last) if now.duration_since(last) < WARN_EVERY => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.quiet))
            }
        }
    }

    /// The peer was reached: its next failure is news again.
    fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Most peers remembered as not speaking sync; past it the oldest is forgotten (a forgotten
/// peer costs one refused request when it next connects, and is remembered again).
const MAX_NO_SYNC: usize = 1024;

/// Peers known not to speak [`SYNC_PROTOCOL`] (a plain libp2p node, a crawler), oldest first.
/// Kept past their connections, so a reconnect costs no refused request and no log line.
#[derive(Default)]
struct NoSync {
    peers: BTreeSet<PeerId>,
    order: VecDeque<PeerId>,
}

impl NoSync {
    fn contains(&self, peer: &PeerId) -> bool {
        self.peers.contains(peer)
    }

    /// Remembers `peer`, forgetting the oldest when full; false if it was remembered already.
    fn insert(&mut self, peer: PeerId) -> bool {
        if !self.peers.insert(peer) {
            return false;
        }
        if self.order.len() >= MAX_NO_SYNC {
            if let Some(oldest) = self.order.pop_front() {
                self.peers.remove(&oldest);
            }
        }
        self.order.push_back(peer);
        true
    }

    /// Forgets `peer`; false if it was not remembered.
    fn remove(&mut self, peer: &PeerId) -> bool {
        if !self.peers.remove(peer) {
            return false;
        }
        self.order.retain(|p| p != peer);
        true
    }
}

/// Most peers whose invalid counts are watched for their group; past it peers gone longest
/// are forgotten (after a last look).
const MAX_WATCHED: usize = 4096;

/// How long a disconnected peer's invalid count is still watched: what the kernel counts for
/// it after the network saw it go (its queue drains later) is still charged to its group.
const WATCH_AFTER_GONE: Duration = Duration::from_secs(10);

/// Gossip messages one peer may hand to validation per second, sustained. Gossipsub keeps
/// every message it receives in time-based caches (the seen-cache for a minute, the peer
/// score's delivery records for two), whatever the verdict, so memory grows with the rate of
/// messages let in, not with what the kernel keeps: the rate is bounded here, per peer.
const GOSSIP_RATE: f64 = 256.0;

/// Gossip messages a peer may send at once above [`GOSSIP_RATE`] (a publication burst).
const GOSSIP_BURST: f64 = 1024.0;

/// Over-rate messages (since the peer's bucket was last full) after which the peer is
/// graylisted: its messages are then dropped by gossipsub before any cache holds them.
const GOSSIP_STRIKES: u32 = 1024;

/// How long a peer over the gossip rate stays graylisted.
const THROTTLE_FOR: Duration = Duration::from_secs(30);

/// The application score given to a throttled peer: times gossipsub's weight (10) it is far
/// below the graylist threshold (-200), whatever its other score components.
const THROTTLED_SCORE: f64 = -1000.0;

/// Most peers remembered as throttled; past it the one due soonest is let go early.
const MAX_THROTTLED: usize = 4096;

/// What to do with one gossip message, by its sender's rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admission {
    /// Within the rate: on to validation.
    Admit,
    /// Over the rate: ignored at once.
    OverRate,
    /// Over the rate for too long: ignored, and the peer is throttled.
    Throttle,
}

/// A token bucket over one peer's gossip messages. Time is passed in, so it is tested
/// without waiting.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// Over-rate messages since the bucket was last full.
    over: u32,
}

impl Bucket {
    fn new(now: Instant) -> Self {
        Self {
            tokens: GOSSIP_BURST,
            last: now,
            over: 0,
        }
    }

    /// One message arrives at `now`.
    fn admit(&mut self, now: Instant) -> Admission {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * GOSSIP_RATE).min(GOSSIP_BURST);
        if self.tokens >= GOSSIP_BURST {
            // Quiet long enough to refill: a past burst is forgiven.
            self.over = 0;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Admission::Admit;
        }
        self.over += 1;
        if self.over >= GOSSIP_STRIKES {
            self.over = 0;
            return Admission::Throttle;
        }
        Admission::OverRate
    }
}

/// A peer whose invalid count is charged to its group.
struct Watched {
    group: Group,
    /// Its invalid count in [`Stats`] when last charged.
    invalid: u32,
    /// When its last connection closed.
    gone: Option<Instant>,
}

pub(super) struct Network {
    swarm: Swarm<Behaviour>,
    config: Config,
    topic: IdentTopic,
    kernel: mpsc::Sender<KernelCmd>,
    stats: Arc<Mutex<Stats>>,
    shutdown: watch::Receiver<bool>,
    listening: Vec<Multiaddr>,
    connected: BTreeMap<PeerId, Multiaddr>,
    /// Every established connection of each connected peer: its remote address, and whether
    /// this node dialed it.
    links: BTreeMap<PeerId, BTreeMap<ConnectionId, (Multiaddr, bool)>>,
    targets: Vec<Target>,
    dialing: BTreeMap<ConnectionId, usize>,
    bans: BTreeMap<PeerId, Instant>,
    no_sync: NoSync,
    /// Inbound connections counted in the gate's [`Groups`], with their group.
    inbound: BTreeMap<ConnectionId, Group>,
    watched: BTreeMap<PeerId, Watched>,
    /// Connection events waiting for room in the kernel's queue, oldest first: they are never
    /// dropped, and they must arrive in order (a connect, then the peer found not to speak
    /// sync taken out again).
    pending: VecDeque<KernelCmd>,
    /// Gossip rate per connected peer.
    gossip_rate: BTreeMap<PeerId, Bucket>,
    /// Peers graylisted for their gossip rate, with when that ends.
    throttled: BTreeMap<PeerId, Instant>,
    /// The remembered peers, and when the book was last written.
    book: Option<(AddressBook, Instant)>,
    /// Discovery through the DHT and reservations on relays.
    reach: Reach,
}

/// The DHT key under which the nodes of one app announce themselves: blake3 of the app's
/// gossip topic, so nodes find the peers of their own app only.
pub(super) fn app_key(config: &Config) -> kad::RecordKey {
    let topic = config.topic();
    kad::RecordKey::new(blake3::hash(topic.hash().as_str().as_bytes()).as_bytes())
}

/// Relays a node behind a NAT holds reservations on at once.
const MAX_RESERVATIONS: usize = 2;

/// The first wait between two DHT lookups of the app's providers; it doubles after each,
/// up to [`FIND_AT_MOST_EVERY`], and starts again when the routing table meets a new peer.
const FIND_FIRST_EVERY: Duration = Duration::from_secs(2);

/// The longest wait between two DHT lookups of the app's providers.
const FIND_AT_MOST_EVERY: Duration = Duration::from_secs(300);

/// How often the node renews its provider record (and at once when its external addresses
/// change, at most every [`PROVIDE_AT_MOST_EVERY`]).
const PROVIDE_EVERY: Duration = Duration::from_secs(600);

/// The least time between two provider announcements.
const PROVIDE_AT_MOST_EVERY: Duration = Duration::from_secs(2);

/// Providers of one key a DHT server keeps (kad's `MemoryStore` default, `K`).
const PROVIDERS_PER_KEY: usize = 20;

/// Of those, the most from one address group: past it the group's oldest record makes room.
const PROVIDERS_PER_GROUP: usize = 2;

/// Providers whose address group is remembered; past it an arbitrary one is forgotten.
const MAX_PROVIDER_GROUPS: usize = 4096;

/// Most dials of its own a node tracks at once (mDNS can name many peers).
const MAX_OWN_DIALS: usize = 256;

/// How often reservations are retried on known relays while the node holds fewer than
/// [`MAX_RESERVATIONS`] and is not known to be reachable.
const RESERVE_RETRY: Duration = Duration::from_secs(30);

/// Providers dialed from one DHT answer at most (a relay client carries at most 10 circuit
/// requests in flight per relay connection; the next lookups bring the others).
const DIALS_PER_ANSWER: usize = 4;

/// Discovery beyond the LAN: DHT lookups and announcements, and reservations on relays.
///
/// Eclipse resistance: DHT answers are dialed only while fewer than half the connection
/// slots ([`Config::max_connections`]) are taken, at most [`DIALS_PER_ANSWER`] per answer, so
/// the peers the DHT names (which any node can announce) never hold every slot; explicit
/// peers are redialed whatever the DHT says, and inbound connections and the address book
/// keep the other half.
struct Reach {
    key: kad::RecordKey,
    /// When the next lookup of the app's providers is due, and the wait after it.
    next_find: Instant,
    find_every: Duration,
    /// When the provider record is next due (`None`: not before the node has an external
    /// address), and when it was last sent.
    next_provide: Option<Instant>,
    provided: Option<Instant>,
    /// Relay listeners (`.../p2p-circuit`) by relay, and whether the relay accepted.
    reservations: BTreeMap<PeerId, (ListenerId, bool)>,
    /// Connected peers that identified as relays.
    relays: BTreeSet<PeerId>,
    /// The lookup of the app's providers in flight, if any (one at a time).
    finding: Option<kad::QueryId>,
    /// Dials this node started itself (address book, mDNS, DHT answers), until they end.
    own_dials: BTreeSet<ConnectionId>,
    /// Of those, the dials of peers a DHT answer named.
    dht_dials: BTreeSet<ConnectionId>,
    /// Peers connected through the DHT: by a dial of a DHT answer, or by a dial this node
    /// did not start (Kademlia's own queries). At most half the connection slots.
    dht_peers: BTreeSet<PeerId>,
    /// When reservations are next retried on the known relays.
    next_reserve: Instant,
    /// As a DHT server: the address group each provider announced itself from (at most
    /// [`MAX_PROVIDER_GROUPS`]).
    provider_groups: BTreeMap<PeerId, Option<Group>>,
    reachability: Reachability,
}

/// How often a changed address book is written.
const SAVE_BOOK_EVERY: Duration = Duration::from_secs(10);

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);

impl Network {
    pub(super) fn new(
        swarm: Swarm<Behaviour>,
        config: Config,
        kernel: mpsc::Sender<KernelCmd>,
        stats: Arc<Mutex<Stats>>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let now = Instant::now();
        let key = app_key(&config);
        // Addresses given as external (`--external`, a relay's own) are announced at once.
        let announce = swarm.external_addresses().next().is_some().then_some(now);
        let targets = config
            .peers
            .iter()
            .map(|addr| Target {
                addr: addr.clone(),
                peer: addr.iter().find_map(|p| match p {
                    Protocol::P2p(peer) => Some(peer),
                    _ => None,
                }),
                next: Some(now),
                backoff: FIRST_BACKOFF,
                failures: FailureLog::default(),
            })
            .collect();
        Self {
            swarm,
            topic: config.topic(),
            config,
            kernel,
            stats,
            shutdown,
            listening: Vec::new(),
            connected: BTreeMap::new(),
            links: BTreeMap::new(),
            targets,
            dialing: BTreeMap::new(),
            bans: BTreeMap::new(),
            no_sync: NoSync::default(),
            inbound: BTreeMap::new(),
            watched: BTreeMap::new(),
            pending: VecDeque::new(),
            gossip_rate: BTreeMap::new(),
            throttled: BTreeMap::new(),
            book: None,
            reach: Reach {
                key,
                next_find: now + FIND_FIRST_EVERY,
                find_every: FIND_FIRST_EVERY,
                next_provide: announce,
                provided: None,
                reservations: BTreeMap::new(),
                relays: BTreeSet::new(),
                finding: None,
                own_dials: BTreeSet::new(),
                dht_dials: BTreeSet::new(),
                dht_peers: BTreeSet::new(),
                next_reserve: now + RESERVE_RETRY,
                provider_groups: BTreeMap::new(),
                reachability: Reachability::Unknown,
            },
        }
        .with_book()
    }

    /// Loads the address book and dials up to [`address_book::DIAL_ON_START`] of its peers
    /// once (explicit peers are dialed and redialed as targets).
    fn with_book(mut self) -> Self {
        let Some(path) = self.config.address_book.clone() else {
            return self;
        };
        let book = AddressBook::load(&path);
        let explicit: Vec<PeerId> = self.targets.iter().filter_map(|t| t.peer).collect();
        for (peer, addrs) in book.to_dial(address_book::DIAL_ON_START) {
            if explicit.contains(&peer) {
                continue;
            }
            tracing::debug!(%peer, ?addrs, "dialing a remembered peer");
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            let id = opts.connection_id();
            if self.swarm.dial(opts).is_ok() {
                self.reach.own_dials.insert(id);
            }
        }
        self.book = Some((book, Instant::now()));
        self
    }

    /// What the node has evidence `peer` is reachable at: the addresses it dialed it at and
    /// connected, then the listen addresses it announces on an IP it connected from. A
    /// peer's other claims (other hosts, names, private addresses behind a NAT) are not
    /// taken: they would let it file itself under any subnet and make this node dial hosts
    /// of its choosing after a restart.
    fn evidenced(&self, peer: PeerId, announced: &[Multiaddr]) -> Vec<Multiaddr> {
        let Some(links) = self.links.get(&peer) else {
            return Vec::new();
        };
        let mut out: Vec<Multiaddr> = links
            .values()
            .filter(|(_, dialed)| *dialed)
            .map(|(a, _)| a.clone())
            .collect();
        // A relayed connection's IP is the relay's, not the peer's.
        let ips: Vec<std::net::IpAddr> = links
            .values()
            .filter(|(a, _)| !super::is_relayed(a))
            .filter_map(|(a, _)| address_book::ip_of(a))
            .collect();
        out.extend(
            announced
                .iter()
                .filter(|a| address_book::ip_of(a).is_some_and(|ip| ips.contains(&ip)))
                .cloned(),
        );
        out
    }

    /// Remembers that `peer` was connected, reachable at `addrs`.
    /// Relayed addresses are not remembered: they would be filed under the relay's subnet,
    /// where relayed peers would push out the relay's own entry.
    fn remember(&mut self, peer: PeerId, addrs: &[Multiaddr]) {
        let addrs: Vec<Multiaddr> = addrs
            .iter()
            .filter(|a| !super::is_relayed(a))
            .cloned()
            .collect();
        if let Some((book, _)) = &mut self.book {
            book.note(peer, &addrs, unix_now());
        }
    }

    /// Writes the address book if it changed, at most every [`SAVE_BOOK_EVERY`] unless `now`.
    fn save_book(&mut self, force: bool) {
        let (Some((book, saved)), Some(path)) = (&mut self.book, &self.config.address_book) else {
            return;
        };
        if !force && saved.elapsed() < SAVE_BOOK_EVERY {
            return;
        }
        *saved = Instant::now();
        if let Err(error) = book.save_if_changed(path) {
            tracing::warn!("cannot write the address book {}: {error}", path.display());
        }
    }

    /// Drives the swarm until every listener has an address (so the caller can print them),
    /// or one fails.
    ///
    /// # Errors
    /// [`Error::Listen`] naming the listener's address and the cause (the OS error), or
    /// [`Error::Config`] when the listeners take more than 10 s.
    pub(super) async fn wait_for_listeners(
        &mut self,
        listeners: &[(ListenerId, Multiaddr)],
    ) -> Result<(), Error> {
        let addr_of = |id: ListenerId, addresses: &[Multiaddr]| {
            listeners
                .iter()
                .find(|(l, _)| *l == id)
                .map(|(_, a)| a.clone())
                .or_else(|| addresses.first().cloned())
                .unwrap_or(Multiaddr::empty())
        };
        let count = listeners.len();
        let mut ready = HashSet::new();
        let deadline = tokio::time::sleep(Duration::from_secs(10));
        tokio::pin!(deadline);
        while ready.len() < count {
            tokio::select! {
                _ = &mut deadline => {
                    return Err(Error::Config("timed out waiting for the listeners".into()));
                }
                event = self.swarm.select_next_some() => match event {
                    SwarmEvent::NewListenAddr { listener_id, address } => {
                        ready.insert(listener_id);
                        self.listening.push(address);
                    }
                    SwarmEvent::ListenerError { listener_id, error } => {
                        let addr = addr_of(listener_id, &[]);
                        return Err(Error::Listen { addr, reason: causes(&error) });
                    }
                    SwarmEvent::ListenerClosed { listener_id, addresses, reason } => {
                        let reason = match reason {
                            Ok(()) => "the listener closed".to_owned(),
                            Err(e) => causes(&e),
                        };
                        let addr = addr_of(listener_id, &addresses);
                        return Err(Error::Listen { addr, reason });
                    }
                    other => self.on_event(other),
                },
            }
        }
        Ok(())
    }

    /// The actor's loop. Cancel-safe at every await: it stops on shutdown or when the kernel
    /// actor is gone.
    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<NetCmd>) {
        let mut timer = tokio::time::interval(Duration::from_millis(250));
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => break,
                // Owned, so the permit does not borrow `self` in the handler.
                permit = self.kernel.clone().reserve_owned(), if !self.pending.is_empty() => {
                    match permit {
                        Ok(permit) => self.on_room(permit),
                        Err(_) => break,
                    }
                }
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                // Before the swarm: under a flood the swarm always has an event ready, and the
                // timer (ban expiry, per-IP charges, throttles) must still run.
                _ = timer.tick() => self.on_timer(),
                event = self.swarm.select_next_some() => self.on_event(event),
            }
        }
        self.save_book(true);
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().expect("stats lock")
    }

    /// The per-group table, which the gate consults before every inbound handshake.
    fn groups(&mut self) -> &mut Groups {
        &mut self.swarm.behaviour_mut().gate.groups
    }

    /// Hands a network message to the kernel without waiting: a full queue drops it (counted;
    /// anti-entropy repairs the loss). So does a queue of connection events still waiting,
    /// which the message must not overtake.
    fn offer(&mut self, cmd: KernelCmd) -> bool {
        if self.pending.is_empty() && self.kernel.try_send(cmd).is_ok() {
            return true;
        }
        self.stats().dropped += 1;
        false
    }

    /// Hands a connection event to the kernel; these are never dropped, and keep their order
    /// (the actor's loop sends what waits as room appears).
    fn tell(&mut self, cmd: KernelCmd) {
        if !self.pending.is_empty() {
            self.pending.push_back(cmd);
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(cmd)) = self.kernel.try_send(cmd) {
            self.pending.push_back(cmd);
        }
    }

    /// The kernel's queue has room: the oldest waiting connection event goes.
    fn on_room(&mut self, permit: mpsc::OwnedPermit<KernelCmd>) {
        if let Some(cmd) = self.pending.pop_front() {
            permit.send(cmd);
        }
    }

    /// Sends one sync message by request-response, counting it.
    fn request(&mut self, to: PeerId, bytes: Vec<u8>) {
        self.stats().peer(&to).sync_requests += 1;
        self.swarm.behaviour_mut().sync.send_request(&to, bytes);
    }

    /// Whether the sync machine knows `peer`: connected, and not known to lack sync.
    fn syncs_with(&self, peer: &PeerId) -> bool {
        self.connected.contains_key(peer) && !self.no_sync.contains(peer)
    }

    /// `peer` does not speak sync: remembered, and taken out of the sync machine so it makes
    /// no more messages for it. The connection stays (gossipsub, identify). Logged and counted
    /// once per peer, not per refused request.
    fn lacks_sync(&mut self, peer: PeerId, evidence: &'static str) {
        if !self.no_sync.insert(peer) {
            return;
        }
        tracing::info!(%peer, evidence, "peer does not speak {SYNC_PROTOCOL}; not syncing with it");
        {
            let mut stats = self.stats();
            stats.sync_unsupported_peers += 1;
            stats.peer(&peer).sync_unsupported = true;
        }
        self.tell(KernelCmd::Disconnected(peer));
    }

    /// `peer` identified with the sync protocol: if it was remembered as lacking it (it has
    /// upgraded), the sync machine meets it again.
    fn speaks_sync(&mut self, peer: PeerId) {
        if !self.no_sync.remove(&peer) {
            return;
        }
        self.stats().peer(&peer).sync_unsupported = false;
        if self.connected.contains_key(&peer) {
            tracing::info!(%peer, "peer now speaks {SYNC_PROTOCOL}; syncing with it");
            self.tell(KernelCmd::Connected(peer));
        }
    }

    fn on_command(&mut self, command: NetCmd) {
        match command {
            NetCmd::Send { to, bytes } => {
                // A message the machine made before it heard that the peer lacks sync.
                if self.syncs_with(&to) {
                    self.request(to, bytes);
                }
            }
            NetCmd::Publish(block) => {
                let bytes = block.encode();
                match self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(self.topic.clone(), bytes)
                {
                    Ok(_) | Err(PublishError::Duplicate) => {}
                    Err(error) => {
                        // No mesh yet (it forms at the first heartbeat), or queues full: push
                        // by sync to every connected peer instead.
                        tracing::debug!(%error, "gossip publish failed; pushing by sync");
                        let bytes = Message::Blocks(vec![block]).encode();
                        let peers: Vec<PeerId> = self
                            .connected
                            .keys()
                            .filter(|p| !self.no_sync.contains(p))
                            .copied()
                            .collect();
                        for peer in peers {
                            {
                                let mut stats = self.stats();
                                stats.bytes_sent += bytes.len() as u64;
                                let counters = stats.peer(&peer);
                                counters.blocks_sent += 1;
                                counters.bytes_sent += bytes.len() as u64;
                            }
                            self.request(peer, bytes.clone());
                        }
                    }
                }
            }
            NetCmd::PublishRaw(bytes) => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(self.topic.clone(), bytes);
                if let Err(error) = result {
                    tracing::debug!(%error, "raw publish failed");
                }
            }
            NetCmd::Validate {
                source,
                id,
                verdict,
            } => {
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &source, verdict);
            }
            NetCmd::Ban(peer) => {
                if self.swarm.behaviour_mut().blocked.block_peer(peer) {
                    tracing::warn!(%peer, ban_s = self.config.ban.as_secs(), "banned peer for sending invalid data");
                    self.stats().banned += 1;
                }
                self.bans.insert(peer, Instant::now() + self.config.ban);
                if let Some((book, _)) = &mut self.book {
                    book.forget(&peer);
                }
                let _ = self.swarm.disconnect_peer_id(peer);
                self.charge_invalid();
                let now = Instant::now();
                if let Some(group) = self.watched.get(&peer).map(|w| w.group) {
                    if self.groups().charge_ban(group, now) {
                        self.ban_group(group, "too many banned peers");
                    }
                }
            }
            NetCmd::Disconnect(peer) => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            NetCmd::Peers(reply) => {
                let peers = self
                    .connected
                    .iter()
                    .map(|(p, first)| {
                        let addrs: Vec<Multiaddr> = match self.links.get(p) {
                            Some(links) if !links.is_empty() => {
                                links.values().map(|(a, _)| a.clone()).collect()
                            }
                            _ => vec![first.clone()],
                        };
                        (*p, addrs)
                    })
                    .collect();
                let _ = reply.send(peers);
            }
            NetCmd::Listening(reply) => {
                let id = *self.swarm.local_peer_id();
                let addrs = self
                    .listening
                    .iter()
                    .map(|a| a.clone().with(Protocol::P2p(id)))
                    .collect();
                let _ = reply.send(addrs);
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => self.listening.push(address),
            SwarmEvent::ListenerClosed { listener_id, .. } => {
                // A relay listener closes when the relay's connection does (or it refused):
                // the relay is asked again once it is connected and identified.
                self.reach
                    .reservations
                    .retain(|_, (id, _)| *id != listener_id);
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "external address confirmed");
                self.reach.next_provide = Some(Instant::now());
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                tracing::debug!(%address, "external address expired");
                self.reach.next_provide = Some(Instant::now());
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listening.retain(|a| a != &address)
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                // Before anything can return: these sets must forget the dial whatever happens
                // to the connection.
                let ours = self.reach.own_dials.remove(&connection_id)
                    || self.dialing.contains_key(&connection_id);
                let from_dht = self.reach.dht_dials.remove(&connection_id);
                let addr = endpoint.get_remote_address();
                let group = address_group(addr);
                // A connection that came in through a relay names the remote by its peer id
                // only (`/p2p/<id>`); the relayed address it came in on is the local one.
                let addr = match &endpoint {
                    libp2p::core::ConnectedPoint::Listener { local_addr, .. }
                        if super::is_relayed(local_addr) =>
                    {
                        local_addr
                    }
                    _ => addr,
                };
                if let Some(group) = group {
                    let admit = self
                        .groups()
                        .admit(group, endpoint.is_listener(), Instant::now());
                    if admit != Admit::Yes {
                        self.refuse(connection_id, peer_id, group, admit);
                        return;
                    }
                    if endpoint.is_listener() {
                        self.inbound.insert(connection_id, group);
                    }
                }
                if endpoint.is_dialer()
                    && (from_dht || !ours)
                    && !self.connected.contains_key(&peer_id)
                    && !self.reach.dht_peers.contains(&peer_id)
                {
                    // A new peer the DHT led to (an answer this node dialed, or Kademlia's
                    // own query dials): within the DHT's half of the slots only.
                    if self.dht_connections() >= self.dht_budget() {
                        tracing::debug!(peer = %peer_id, "closing a DHT connection: the DHT's share of the slots is taken");
                        self.swarm.close_connection(connection_id);
                        return;
                    }
                    self.reach.dht_peers.insert(peer_id);
                }
                if let Some(group) = group {
                    // Also a peer first connected through a relay, once it is direct.
                    self.watch(peer_id, group);
                }
                if let Some(i) = self.dialing.remove(&connection_id) {
                    let target = &mut self.targets[i];
                    target.peer = Some(peer_id);
                    target.backoff = FIRST_BACKOFF;
                    target.next = None;
                    target.failures.reset();
                }
                self.links
                    .entry(peer_id)
                    .or_default()
                    .insert(connection_id, (addr.clone(), endpoint.is_dialer()));
                // Not `num_established == 1`: a first connection may have been refused.
                if let Entry::Vacant(entry) = self.connected.entry(peer_id) {
                    tracing::info!(peer = %peer_id, %addr, "connected");
                    entry.insert(addr.clone());
                    // A peer remembered as lacking sync meets the machine only once it
                    // identifies with the protocol.
                    if !self.no_sync.contains(&peer_id) {
                        self.tell(KernelCmd::Connected(peer_id));
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some(group) = self.inbound.remove(&connection_id) {
                    self.groups().release(group);
                }
                if let Some(links) = self.links.get_mut(&peer_id) {
                    links.remove(&connection_id);
                    if links.is_empty() {
                        self.links.remove(&peer_id);
                    }
                }
                if num_established != 0 || self.connected.remove(&peer_id).is_none() {
                    return;
                }
                tracing::info!(peer = %peer_id, "disconnected");
                self.forget_relayed_provider(peer_id);
                self.gossip_rate.remove(&peer_id);
                self.reach.relays.remove(&peer_id);
                self.reach.dht_peers.remove(&peer_id);
                // A peer gone (a relay's circuit ran out, say): look the app's peers up again
                // soon (one lookup per FIND_FIRST_EVERY at most, whoever comes and goes).
                self.reach.find_every = FIND_FIRST_EVERY;
                self.reach.next_find = self.reach.next_find.min(Instant::now() + FIND_FIRST_EVERY);
                let now = Instant::now();
                if let Some(watched) = self.watched.get_mut(&peer_id) {
                    watched.gone = Some(now);
                }
                if !self.no_sync.contains(&peer_id) {
                    self.tell(KernelCmd::Disconnected(peer_id));
                }
                for target in &mut self.targets {
                    if target.peer == Some(peer_id) && target.next.is_none() {
                        target.next = Some(now + target.backoff);
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                self.reach.own_dials.remove(&connection_id);
                self.reach.dht_dials.remove(&connection_id);
                if let Some(i) = self.dialing.remove(&connection_id) {
                    self.redial_later(i, Instant::now(), &causes(&error));
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => self.on_incoming_error(&send_back_addr, &error),
            SwarmEvent::Behaviour(event) => self.on_behaviour(event),
            _ => {}
        }
    }

    fn on_behaviour(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let now = Instant::now();
                let admission = self
                    .gossip_rate
                    .entry(propagation_source)
                    .or_insert_with(|| Bucket::new(now))
                    .admit(now);
                let offered = match admission {
                    Admission::Admit => self.offer(KernelCmd::Gossip {
                        source: propagation_source,
                        id: message_id.clone(),
                        bytes: message.data,
                    }),
                    Admission::OverRate => {
                        self.stats().gossip_over_rate += 1;
                        false
                    }
                    Admission::Throttle => {
                        self.stats().gossip_over_rate += 1;
                        self.throttle(propagation_source, now);
                        false
                    }
                };
                // Never left unvalidated: gossipsub holds an unvalidated message (and keeps
                // asking for it) until its history window passes.
                if !offered {
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            MessageAcceptance::Ignore,
                        );
                }
            }
            BehaviourEvent::Sync(request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            }) => {
                let _ = self.swarm.behaviour_mut().sync.send_response(channel, ());
                self.offer(KernelCmd::Sync {
                    peer,
                    bytes: request,
                });
            }
            BehaviourEvent::Sync(request_response::Event::OutboundFailure {
                peer,
                error: OutboundFailure::UnsupportedProtocols,
                ..
            }) => self.lacks_sync(peer, "refused a sync request"),
            BehaviourEvent::Sync(request_response::Event::OutboundFailure {
                peer, error, ..
            }) => {
                tracing::debug!(%peer, %error, "sync message not delivered");
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })
                if self.connected.contains_key(&peer_id) =>
            {
                let banned = self.bans.contains_key(&peer_id);
                if info.protocols.contains(&SYNC_PROTOCOL) {
                    if !banned {
                        let addrs = self.evidenced(peer_id, &info.listen_addrs);
                        self.remember(peer_id, &addrs);
                    }
                    self.speaks_sync(peer_id);
                } else {
                    self.lacks_sync(peer_id, "identify lists no sync protocol");
                }
                if !banned && info.protocols.contains(&KAD_PROTOCOL) {
                    self.add_to_dht(peer_id, &info.listen_addrs);
                }
                if !banned && info.protocols.contains(&RELAY_HOP_PROTOCOL) {
                    self.reach.relays.insert(peer_id);
                    self.reserve_on(peer_id);
                }
            }
            BehaviourEvent::Kad(event) => self.on_kad(event),
            BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. }) => {
                self.on_reachability(&new);
            }
            BehaviourEvent::RelayClient(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            }) => {
                if let Some((_, accepted)) = self.reach.reservations.get_mut(&relay_peer_id) {
                    *accepted = true;
                }
                if !renewal {
                    tracing::info!(relay = %relay_peer_id, "reserved a slot on a relay");
                }
            }
            BehaviourEvent::Relay(relay::Event::ReservationReqAccepted { .. }) => {
                self.stats().relay_reservations_served += 1;
            }
            BehaviourEvent::Relay(relay::Event::CircuitReqAccepted { .. }) => {
                self.stats().relay_circuits_served += 1;
            }
            BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            }) => {
                let mut stats = self.stats();
                stats.holepunch_attempts += 1;
                match result {
                    Ok(_) => {
                        stats.holepunch_successes += 1;
                        tracing::info!(peer = %remote_peer_id, "hole punched: direct connection");
                    }
                    Err(error) => {
                        tracing::info!(peer = %remote_peer_id, error = %causes(&error), "hole punching failed; staying relayed");
                    }
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    if self.connected.contains_key(&peer) || self.bans.contains_key(&peer) {
                        continue;
                    }
                    let opts = DialOpts::peer_id(peer)
                        .addresses(vec![addr])
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    let id = opts.connection_id();
                    if self.swarm.dial(opts).is_ok() && self.reach.own_dials.len() < MAX_OWN_DIALS {
                        self.reach.own_dials.insert(id);
                    }
                }
            }
            _ => {}
        }
    }

    /// `peer` serves the DHT: its routing entry gets the addresses the node has evidence for
    /// (see [`Network::evidenced`]), so a peer cannot point the table at hosts of its choosing.
    fn add_to_dht(&mut self, peer: PeerId, announced: &[Multiaddr]) {
        let addrs = self.evidenced(peer, announced);
        let kad = &mut self.swarm.behaviour_mut().kad;
        let mut new = false;
        for addr in addrs {
            new |= matches!(kad.add_address(&peer, addr), kad::RoutingUpdate::Success);
        }
        if new {
            // A new way into the DHT: look the app's peers up again soon.
            self.reach.find_every = FIND_FIRST_EVERY;
            self.reach.next_find = self
                .reach
                .next_find
                .min(Instant::now() + Duration::from_millis(250));
        }
    }

    /// `peer` is a relay: unless this node is reachable, or holds its most reservations
    /// already, it reserves a slot there by listening on the relay's circuit address (the
    /// relay client confirms that address as external once the relay accepts, and the next
    /// provider record carries it). Only relays this node dialed directly are used: their
    /// address is one it has reached.
    fn reserve_on(&mut self, relay: PeerId) {
        let confident = self.swarm.behaviour().autonat.confidence() >= 2;
        if self.config.relay
            || (self.reach.reachability == Reachability::Public && confident)
            || self.reach.reservations.len() >= MAX_RESERVATIONS
            || self.reach.reservations.contains_key(&relay)
        {
            return;
        }
        // Only a relay the user named (`--peer`, `--bootstrap`): a relay carries inbound
        // connections that no per-IP limit sees, so a peer the DHT named must not become one.
        if !self.targets.iter().any(|t| t.peer == Some(relay)) {
            return;
        }
        let Some(addr) = self.links.get(&relay).and_then(|links| {
            links
                .values()
                .find(|(addr, dialed)| *dialed && !super::is_relayed(addr))
                .map(|(addr, _)| addr.clone())
        }) else {
            return;
        };
        let mut circuit: Multiaddr = addr
            .iter()
            .filter(|p| !matches!(p, Protocol::P2p(_)))
            .collect();
        circuit.push(Protocol::P2p(relay));
        circuit.push(Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit.clone()) {
            Ok(id) => {
                tracing::debug!(%circuit, "asking the relay for a reservation");
                self.reach.reservations.insert(relay, (id, false));
            }
            Err(error) => {
                tracing::debug!(%circuit, error = %causes(&error), "cannot listen through the relay")
            }
        }
    }

    /// `peer` left. If this node is a relay and serves the DHT a provider record of `peer`
    /// whose every address runs through this relay, the record is dropped at once: the
    /// peer's reservation ended with its connection, so nobody can reach it there any more
    /// (without this, a relay's table fills with the records of nodes gone offline, until
    /// their TTL, and new ones are refused: a key holds 20 providers per server).
    fn forget_relayed_provider(&mut self, peer: PeerId) {
        use libp2p::kad::store::RecordStore;
        if !self.config.relay {
            return;
        }
        let me = *self.swarm.local_peer_id();
        let through_me = |addr: &Multiaddr| {
            let parts: Vec<Protocol<'_>> = addr.iter().collect();
            parts
                .windows(2)
                .any(|w| matches!(w, [Protocol::P2p(relay), Protocol::P2pCircuit] if *relay == me))
        };
        let key = self.reach.key.clone();
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let stale = store.providers(&key).iter().any(|record| {
            record.provider == peer
                && !record.addresses.is_empty()
                && record.addresses.iter().all(through_me)
        });
        if stale {
            store.remove_provider(&key, &peer);
            tracing::debug!(%peer, "dropped the provider record of a relayed peer that left");
        }
    }

    /// The node is reachable: its relay slots go back, and its relayed addresses stop being
    /// announced.
    fn give_back_reservations(&mut self) {
        for (_, (id, _)) in std::mem::take(&mut self.reach.reservations) {
            self.swarm.remove_listener(id);
        }
        let relayed: Vec<Multiaddr> = self
            .swarm
            .external_addresses()
            .filter(|a| super::is_relayed(a))
            .cloned()
            .collect();
        for addr in relayed {
            self.swarm.remove_external_address(&addr);
        }
        tracing::info!("reachable: gave the relay reservations back");
    }

    /// AutoNAT's verdict changed: a reachable node serves the DHT and gives its relay slots
    /// back; an unreachable one is a DHT client and reserves on the relays it is connected to.
    fn on_reachability(&mut self, status: &autonat::NatStatus) {
        let reachability = match status {
            autonat::NatStatus::Public(_) => Reachability::Public,
            autonat::NatStatus::Private => Reachability::Private,
            autonat::NatStatus::Unknown => Reachability::Unknown,
        };
        tracing::info!(?reachability, "reachability changed");
        self.reach.reachability = reachability;
        self.stats().reachability = reachability;
        let server = reachability == Reachability::Public
            || self.config.relay
            || !self.config.external.is_empty();
        self.swarm.behaviour_mut().kad.set_mode(Some(if server {
            kad::Mode::Server
        } else {
            kad::Mode::Client
        }));
        if reachability == Reachability::Public {
            // Given back once AutoNAT is confident (on_reach_timer): one lying server must
            // not cut a node behind a NAT off its relays.
        } else {
            let relays: Vec<PeerId> = self.reach.relays.iter().copied().collect();
            for relay in relays {
                self.reserve_on(relay);
            }
        }
    }

    /// Connections of peers the DHT led to, and DHT dials in flight.
    fn dht_connections(&self) -> usize {
        let connections: usize = self
            .reach
            .dht_peers
            .iter()
            .map(|p| self.links.get(p).map_or(0, BTreeMap::len))
            .sum();
        connections + self.reach.dht_dials.len()
    }

    /// The DHT's share of the connection slots: half.
    fn dht_budget(&self) -> usize {
        (self.config.max_connections as usize / 2).max(1)
    }

    /// As a DHT server, an ADD_PROVIDER from `record.provider` (kad checks the sender is the
    /// provider). kad's own store ignores new providers once a key has 20, so 20 forged
    /// identities would hold a key for good; here a key keeps at most
    /// [`PROVIDERS_PER_GROUP`] providers per address group (the sender's IP), and when the
    /// key is full the oldest record makes room, so a few hosts cannot lock a key and
    /// renewing honest nodes get back in.
    fn store_provider(&mut self, record: kad::ProviderRecord) {
        use libp2p::kad::store::RecordStore;
        // A provider connected through a relay is filed under the relay's address group.
        let group = self.links.get(&record.provider).and_then(|links| {
            links.values().find_map(|(addr, _)| {
                let direct: Multiaddr = addr
                    .iter()
                    .take_while(|p| !matches!(p, Protocol::P2pCircuit))
                    .collect();
                address_group(&direct)
            })
        });
        if self.reach.provider_groups.len() >= MAX_PROVIDER_GROUPS
            && !self.reach.provider_groups.contains_key(&record.provider)
        {
            self.reach.provider_groups.pop_first();
        }
        self.reach.provider_groups.insert(record.provider, group);
        let me = *self.swarm.local_peer_id();
        let groups = &self.reach.provider_groups;
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let held: Vec<(PeerId, Option<std::time::Instant>)> = store
            .providers(&record.key)
            .into_iter()
            .map(|r| (r.provider, r.expires))
            .collect();
        let group_of = |peer: &PeerId| groups.get(peer).copied().flatten();
        if let Some(victim) = provider_to_evict(&held, me, record.provider, group, group_of) {
            store.remove_provider(&record.key, &victim);
        }
        if let Err(error) = store.add_provider(record) {
            tracing::debug!(%error, "provider record not stored");
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        if let kad::Event::InboundRequest { request } = event {
            // Records are not stored at all: blockend's DHT carries provider records only.
            if let kad::InboundRequest::AddProvider {
                record: Some(record),
            } = request
            {
                self.store_provider(record);
            }
            return;
        }
        let kad::Event::OutboundQueryProgressed {
            id, result, step, ..
        } = event
        else {
            return;
        };
        if step.last && self.reach.finding == Some(id) {
            self.reach.finding = None;
        }
        match result {
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                providers,
                ..
            })) => {
                let me = *self.swarm.local_peer_id();
                let mut dialed = 0;
                for peer in providers {
                    if peer == me {
                        continue;
                    }
                    self.stats().dht_providers_found += 1;
                    if self.connected.contains_key(&peer)
                        || self.bans.contains_key(&peer)
                        || self.dht_connections() >= self.dht_budget()
                        || dialed >= DIALS_PER_ANSWER
                    {
                        continue;
                    }
                    // The DHT knows the addresses from the answer (the query is still open).
                    let opts = DialOpts::peer_id(peer)
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    let id = opts.connection_id();
                    if self.swarm.dial(opts).is_ok() {
                        self.reach.own_dials.insert(id);
                        self.reach.dht_dials.insert(id);
                        dialed += 1;
                        self.stats().dht_dials += 1;
                        tracing::debug!(%peer, "dialing a peer the DHT names");
                    }
                }
            }
            kad::QueryResult::StartProviding(Ok(_)) => {
                tracing::debug!("announced in the DHT");
            }
            kad::QueryResult::StartProviding(Err(error)) => {
                tracing::debug!(%error, "DHT announcement incomplete");
            }
            _ => {}
        }
    }

    /// The DHT's periodic work: the lookup of the app's providers, and the node's own
    /// provider record once it has an external address to put in it.
    fn on_reach_timer(&mut self, now: Instant) {
        if now >= self.reach.next_find {
            let kad = &mut self.swarm.behaviour_mut().kad;
            let known = kad.kbuckets().any(|bucket| bucket.num_entries() > 0);
            if known && self.reach.finding.is_none() {
                let key = self.reach.key.clone();
                self.reach.finding = Some(kad.get_providers(key));
                self.reach.find_every = (self.reach.find_every * 2).min(FIND_AT_MOST_EVERY);
            }
            self.reach.next_find = now + self.reach.find_every;
        }
        let due = self.reach.next_provide.is_some_and(|at| at <= now)
            && self
                .reach
                .provided
                .is_none_or(|at| now.duration_since(at) >= PROVIDE_AT_MOST_EVERY);
        if due && self.swarm.external_addresses().next().is_some() {
            let key = self.reach.key.clone();
            let kad = &mut self.swarm.behaviour_mut().kad;
            let known = kad.kbuckets().any(|bucket| bucket.num_entries() > 0);
            if known {
                if let Err(error) = kad.start_providing(key) {
                    tracing::debug!(%error, "cannot announce in the DHT");
                }
                self.reach.provided = Some(now);
                self.reach.next_provide = Some(now + PROVIDE_EVERY);
                // Others may have looked before this node was announced: look again soon.
                self.reach.next_find = self.reach.next_find.min(Instant::now() + FIND_FIRST_EVERY);
            }
        }
        let confident = self.swarm.behaviour().autonat.confidence() >= 2;
        if self.reach.reachability == Reachability::Public
            && confident
            && !self.reach.reservations.is_empty()
        {
            self.give_back_reservations();
        }
        if now >= self.reach.next_reserve {
            self.reach.next_reserve = now + RESERVE_RETRY;
            let relays: Vec<PeerId> = self.reach.relays.iter().copied().collect();
            for relay in relays {
                self.reserve_on(relay);
            }
        }
        let reservations = self
            .reach
            .reservations
            .values()
            .filter(|(_, ok)| *ok)
            .count();
        self.stats().relay_reservations = reservations;
    }

    fn on_timer(&mut self) {
        self.save_book(false);
        self.on_reach_timer(Instant::now());
        let now = Instant::now();
        for i in 0..self.targets.len() {
            let target = &self.targets[i];
            let due = target.next.is_some_and(|t| t <= now);
            let connected = target.peer.is_some_and(|p| self.connected.contains_key(&p));
            if !due {
                continue;
            }
            if connected {
                self.targets[i].next = None;
                continue;
            }
            let opts = DialOpts::unknown_peer_id()
                .address(target.addr.clone())
                .build();
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    self.dialing.insert(id, i);
                    self.targets[i].next = None;
                }
                Err(error) => self.redial_later(i, now, &causes(&error)),
            }
        }
        let expired: Vec<PeerId> = self
            .bans
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in expired {
            self.bans.remove(&peer);
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
        }
        let done: Vec<PeerId> = self
            .throttled
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in done {
            self.unthrottle(peer);
        }
        self.groups().expire(now);
        self.charge_invalid();
        self.watched.retain(|_, w| {
            w.gone
                .is_none_or(|gone| now.duration_since(gone) < WATCH_AFTER_GONE)
        });
    }

    /// `peer` sent gossip over [`GOSSIP_RATE`] for too long: graylisted for [`THROTTLE_FOR`]
    /// (gossipsub drops its messages on arrival, before its caches hold them), counted, and
    /// warned about once per throttling. The connection stays (sync still works).
    fn throttle(&mut self, peer: PeerId, now: Instant) {
        if self.throttled.len() >= MAX_THROTTLED && !self.throttled.contains_key(&peer) {
            let soonest = self.throttled.iter().min_by_key(|(_, until)| **until);
            if let Some((&soonest, _)) = soonest {
                self.unthrottle(soonest);
            }
        }
        self.swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(&peer, THROTTLED_SCORE);
        self.throttled.insert(peer, now + THROTTLE_FOR);
        self.stats().gossip_throttled += 1;
        tracing::warn!(%peer, rate = GOSSIP_RATE, for_s = THROTTLE_FOR.as_secs(), "peer over the gossip rate; ignoring its gossip");
    }

    /// `peer`'s throttling is over: its gossip is let in again, from a full bucket.
    fn unthrottle(&mut self, peer: PeerId) {
        self.throttled.remove(&peer);
        self.gossip_rate.remove(&peer);
        // False when gossipsub has forgotten the peer; nothing to undo then.
        self.swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(&peer, 0.0);
    }

    /// A dial of `--peer` `i` failed (refused at once by the swarm, or the connection
    /// attempt failed; one failure is reported by one of the two, never both): it is
    /// redialed after its backoff, and warned about within [`FailureLog`]'s rate limit.
    fn redial_later(&mut self, i: usize, now: Instant, error: &str) {
        let target = &mut self.targets[i];
        let retry = target.backoff.as_secs();
        match target.failures.failed(now) {
            Some(1) => {
                tracing::warn!(
                    "cannot reach {}: {error}; retrying in {retry}s",
                    target.addr
                );
            }
            Some(failures) => tracing::warn!(
                "cannot reach {}: {failures} failed dials since the last warning, the last: \
                 {error}; retrying in {retry}s",
                target.addr
            ),
            None => tracing::debug!(
                "cannot reach {}: {error}; retrying in {retry}s",
                target.addr
            ),
        }
        target.next = Some(now + target.backoff);
        target.backoff = (target.backoff * 2).min(self.config.max_backoff);
    }

    /// An inbound connection failed before it was established. The gate's refusals come once
    /// per attempt from a remote the node already refuses, and cost it nothing: counted, and
    /// logged at debug only (a banned host retrying must not flood the log).
    fn on_incoming_error(&mut self, from: &Multiaddr, error: &ListenError) {
        let refused = match error {
            ListenError::Denied { cause } => cause.downcast_ref::<Refused>().copied(),
            _ => None,
        };
        match refused {
            Some(Refused { group, admit }) => {
                self.count_refusal(admit);
                self.stats().connections_refused_before_handshake += 1;
                tracing::debug!(%from, %group, ?admit, "refused a connection before the handshake");
            }
            None => tracing::debug!(%from, error = %causes(error), "inbound connection failed"),
        }
    }

    /// Counts a refused connection under its reason.
    fn count_refusal(&mut self, admit: Admit) {
        let mut stats = self.stats();
        match admit {
            Admit::Full => stats.connections_refused_per_ip += 1,
            _ => stats.connections_refused_banned_ip += 1,
        }
    }

    /// Closes an established connection from a banned or full group at once, counted: one
    /// that got past the gate (pending together with others that filled the group, or banned
    /// during its handshake), or one the node dialed. A `--peer` dialed into it is redialed
    /// with backoff, as if unreachable.
    fn refuse(&mut self, id: ConnectionId, peer: PeerId, group: Group, admit: Admit) {
        self.swarm.close_connection(id);
        self.count_refusal(admit);
        tracing::debug!(%peer, %group, ?admit, "refused a connection");
        if let Some(i) = self.dialing.remove(&id) {
            let target = &mut self.targets[i];
            target.peer = Some(peer);
            target.next = Some(Instant::now() + target.backoff);
            target.backoff = (target.backoff * 2).min(self.config.max_backoff);
        }
    }

    /// Starts charging `peer`'s invalid count to `group`, from what it is now.
    fn watch(&mut self, peer: PeerId, group: Group) {
        if self.watched.len() >= MAX_WATCHED && !self.watched.contains_key(&peer) {
            self.charge_invalid();
            let oldest = self
                .watched
                .iter()
                .filter_map(|(p, w)| w.gone.map(|gone| (gone, *p)))
                .min();
            match oldest {
                Some((_, oldest)) => {
                    self.watched.remove(&oldest);
                }
                // Every watched peer is connected (more than `MAX_WATCHED` connections).
                None => return,
            }
        }
        if let Some(watched) = self.watched.get_mut(&peer) {
            // Back within the grace time: what it sent meanwhile is still charged.
            watched.group = group;
            watched.gone = None;
            return;
        }
        let invalid = self
            .stats()
            .peers
            .get(&peer.to_base58())
            .map_or(0, |c| c.invalid);
        self.watched.insert(
            peer,
            Watched {
                group,
                invalid,
                gone: None,
            },
        );
    }

    /// Charges every watched peer's new invalid items (counted by the kernel actor) to its
    /// group, banning groups that go over their budget.
    fn charge_invalid(&mut self) {
        let mut charges = Vec::new();
        {
            let stats = self.stats.lock().expect("stats lock");
            for (peer, watched) in &mut self.watched {
                let now = stats.peers.get(&peer.to_base58()).map_or(0, |c| c.invalid);
                if now > watched.invalid {
                    charges.push((watched.group, now - watched.invalid));
                    watched.invalid = now;
                }
            }
        }
        let now = Instant::now();
        for (group, count) in charges {
            if self.groups().charge_invalid(group, count, now) {
                self.ban_group(group, "too many invalid items");
            }
        }
    }

    /// `group` is banned: counted, and every connection from it closed.
    fn ban_group(&mut self, group: Group, why: &'static str) {
        tracing::warn!(%group, why, ban_s = self.config.ban.as_secs(), "banned address group");
        self.stats().banned_ips += 1;
        let peers: Vec<PeerId> = self
            .connected
            .iter()
            .filter(|(_, addr)| address_group(addr) == Some(group))
            .map(|(p, _)| *p)
            .collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        let inbound: Vec<ConnectionId> = self
            .inbound
            .iter()
            .filter(|(_, g)| **g == group)
            .map(|(id, _)| *id)
            .collect();
        for id in inbound {
            self.swarm.close_connection(id);
        }
    }
}

/// Which provider record of a key makes room for one from `new` (in address group `group`),
/// given the records `held` (provider, expiry; the node's own, `me`, included and never
/// chosen): the oldest of `new`'s group once that holds [`PROVIDERS_PER_GROUP`], else the
/// oldest of all once the key holds [`PROVIDERS_PER_KEY`], else none. A renewal (`new` holds
/// a record already) replaces its own record and evicts nothing.
fn provider_to_evict(
    held: &[(PeerId, Option<std::time::Instant>)],
    me: PeerId,
    new: PeerId,
    group: Option<Group>,
    group_of: impl Fn(&PeerId) -> Option<Group>,
) -> Option<PeerId> {
    if held.iter().any(|(p, _)| *p == new) {
        return None;
    }
    let others = || held.iter().filter(|(p, _)| *p != me);
    let oldest = |records: Vec<&(PeerId, Option<std::time::Instant>)>| {
        records.into_iter().min_by_key(|(_, e)| *e).map(|(p, _)| *p)
    };
    let same: Vec<_> = others()
        .filter(|(p, _)| group.is_some() && group_of(p) == group)
        .collect();
    if same.len() >= PROVIDERS_PER_GROUP {
        oldest(same)
    } else if held.len() >= PROVIDERS_PER_KEY {
        oldest(others().collect())
    } else {
        None
    }
}

/// `error` and its sources on one line, `: `-separated. libp2p's errors often keep the cause
/// out of their own text (a `TransportError::Other` displays as nothing, the OS error is
/// its source), and span lines; logs and CLI errors are one line each, with the cause.
pub(super) fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(error) = next {
        let text = one_line(&error.to_string());
        // Wrappers often repeat their source's text (an `io::Error` around another error).
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = error.source();
    }
    if parts.is_empty() {
        return "unknown error".to_owned();
    }
    parts.join(": ")
}

/// libp2p's dial errors span lines; logs and CLI errors are one line each.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    #[test]
    fn one_host_holds_at_most_two_provider_slots_of_a_key_and_a_full_key_lets_newcomers_in() {
        let me = peer();
        let start = std::time::Instant::now();
        let attacker = Some(Group::V4([192, 0, 2, 1].into()));
        let honest = Some(Group::V4([198, 51, 100, 7].into()));
        let mut held: Vec<(PeerId, Option<std::time::Instant>)> = vec![(me, None)];
        let mut groups: BTreeMap<PeerId, Option<Group>> = BTreeMap::new();
        // Twenty sybils from one address: each past the second pushes out the group's oldest.
        for i in 0..20u64 {
            let sybil = peer();
            let group_of = |p: &PeerId| groups.get(p).copied().flatten();
            let victim = provider_to_evict(&held, me, sybil, attacker, group_of);
            assert_eq!(victim.is_some(), i >= 2, "sybil {i}");
            held.retain(|(p, _)| Some(*p) != victim);
            held.push((sybil, Some(start + Duration::from_secs(i))));
            groups.insert(sybil, attacker);
        }
        assert_eq!(held.len(), 3, "the node's own record and two sybils");
        assert!(held.iter().any(|(p, _)| *p == me));
        // A renewal evicts nothing.
        let (renewing, _) = held[1];
        assert_eq!(
            provider_to_evict(&held, me, renewing, attacker, |p| groups
                .get(p)
                .copied()
                .flatten()),
            None
        );
        // A full key of distinct hosts: the newcomer takes the oldest record's place, never
        // the node's own.
        let mut full: Vec<(PeerId, Option<std::time::Instant>)> = vec![(me, None)];
        full.extend((0..19u64).map(|i| (peer(), Some(start + Duration::from_secs(100 + i)))));
        let oldest = full[1].0;
        assert_eq!(
            provider_to_evict(&full, me, peer(), honest, |_| None),
            Some(oldest)
        );
    }

    #[test]
    fn the_first_failure_is_warned_at_once_then_one_line_a_minute_counts_the_rest() {
        let start = Instant::now();
        let mut log = FailureLog::default();
        assert_eq!(log.failed(start), Some(1));
        // Backoff 1, 2, 4, 8, 16 s: all within the minute, kept quiet.
        for s in [1, 3, 7, 15, 31] {
            assert_eq!(log.failed(start + Duration::from_secs(s)), None, "at {s}s");
        }
        // The next failure past the minute covers the five quiet ones and itself.
        assert_eq!(log.failed(start + Duration::from_secs(63)), Some(6));
        assert_eq!(log.failed(start + Duration::from_secs(100)), None);
        assert_eq!(log.failed(start + Duration::from_secs(123)), Some(2));
    }

    #[test]
    fn a_failure_after_a_connection_is_warned_at_once() {
        let start = Instant::now();
        let mut log = FailureLog::default();
        assert_eq!(log.failed(start), Some(1));
        assert_eq!(log.failed(start + Duration::from_secs(1)), None);
        log.reset();
        assert_eq!(log.failed(start + Duration::from_secs(2)), Some(1));
    }

    #[test]
    fn a_burst_is_admitted_and_a_sustained_flood_is_throttled() {
        let start = Instant::now();
        let mut bucket = Bucket::new(start);
        for i in 0..GOSSIP_BURST as u32 {
            assert_eq!(bucket.admit(start), Admission::Admit, "message {i}");
        }
        assert_eq!(bucket.admit(start), Admission::OverRate);
        // A tick later the rate has refilled a token, and no more.
        let later = start + Duration::from_millis(4);
        assert_eq!(bucket.admit(later), Admission::Admit);
        assert_eq!(bucket.admit(later), Admission::OverRate);
        for _ in 2..GOSSIP_STRIKES - 1 {
            assert_eq!(bucket.admit(later), Admission::OverRate);
        }
        assert_eq!(bucket.admit(later), Admission::Throttle);
    }

    #[test]
    fn a_peer_that_calms_down_is_forgiven() {
        let start = Instant::now();
        let mut bucket = Bucket::new(start);
        for _ in 0..GOSSIP_BURST as u32 + GOSSIP_STRIKES - 1 {
            assert_ne!(bucket.admit(start), Admission::Throttle);
        }
        // Quiet until the bucket is full again: the strikes are gone.
        let refilled = start + Duration::from_secs_f64(GOSSIP_BURST / GOSSIP_RATE);
        for _ in 0..GOSSIP_BURST as u32 + GOSSIP_STRIKES - 1 {
            assert_ne!(bucket.admit(refilled), Admission::Throttle);
        }
    }

    #[test]
    fn a_peer_at_the_rate_is_never_ignored() {
        let start = Instant::now();
        let mut bucket = Bucket::new(start);
        let step = Duration::from_secs_f64(1.0 / GOSSIP_RATE);
        for i in 0..10 * GOSSIP_RATE as u32 {
            assert_eq!(
                bucket.admit(start + step * i),
                Admission::Admit,
                "message {i}"
            );
        }
    }

    #[test]
    fn causes_keep_the_os_error_a_transport_error_hides() {
        let os = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let error = libp2p::TransportError::Other(os);
        assert_eq!(
            error.to_string(),
            "",
            "libp2p still hides it; this helper may go"
        );
        assert_eq!(causes(&error), "address in use");
    }
}
