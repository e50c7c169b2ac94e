//! The node's counters: what `blockend stats` prints.

use std::collections::BTreeMap;

use blockend_kernel::{BlockError, Kernel, Outcome, PublicKey};
use serde::Serialize;

/// Traffic with one peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PeerCounters {
    /// The peer's author key (hex), which its peer id names: a blockend node's libp2p
    /// identity is its author's key. Absent for a peer whose id is not an ed25519 key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Blocks received from the peer (sync and gossip, duplicates included).
    pub blocks_received: u64,
    /// Bytes of sync messages and gossip payloads received from the peer.
    pub bytes_received: u64,
    /// Blocks sent to the peer by the sync protocol (gossip fan-out is counted in the totals).
    pub blocks_sent: u64,
    /// Bytes of sync messages sent to the peer.
    pub bytes_sent: u64,
    /// Invalid blocks and malformed messages from the peer.
    pub invalid: u32,
    /// Sync requests handed to the transport for the peer (one per sync message sent).
    pub sync_requests: u64,
    /// The peer is known not to speak the sync protocol, so the node does not sync with it
    /// (the connection stays, for gossip and identify).
    pub sync_unsupported: bool,
}

/// Whether a node is reachable from outside, as AutoNAT found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reachability {
    /// Not probed yet, or no peer to probe through.
    #[default]
    Unknown,
    /// Peers could dial it back.
    Public,
    /// Peers could not: behind a NAT or a firewall.
    Private,
}

/// Node-wide counters. Cumulative since the node started, except `blocks_stored` and the
/// capacity figures, which are the store's now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Ticks of the sync machine so far (one per `Config::tick`): reconciliation rounds
    /// opened, lost wants asked again, held blocks released, expired ones collected.
    pub ticks: u64,
    /// Blocks in the store's candidate set now.
    pub blocks_stored: usize,
    /// Blocks received, all channels, duplicates included.
    pub blocks_received: u64,
    /// Of those, blocks that were new to this node (accepted, waiting, held, or rejected by a
    /// slice: anything but a duplicate or an invalid block).
    pub new_blocks_received: u64,
    /// Of those, blocks that arrived by the sync protocol (catch-up, anti-entropy).
    pub sync_blocks_received: u64,
    /// Of those, blocks that arrived by gossip.
    pub gossip_blocks_received: u64,
    /// Blocks received that this node already had.
    pub duplicates_received: u64,
    /// Bytes received (sync messages and gossip payloads).
    pub bytes_received: u64,
    /// Blocks sent (sync batches, plus one per gossip publication of an own block).
    pub blocks_sent: u64,
    /// Bytes sent (sync messages and gossip payloads).
    pub bytes_sent: u64,
    /// Blocks refused or not counted, by reason (`bad_signature`, `slice:counter`, ...).
    pub rejected: BTreeMap<String, u64>,
    /// Blocks evicted with their feeds for capacity.
    pub evicted: u64,
    /// Blocks whose bodies garbage collection dropped.
    pub collected: u64,
    /// Inbound messages dropped because the kernel's queue was full.
    pub dropped: u64,
    /// Gossip messages ignored at once, without reaching the kernel, because their sender was
    /// over the per-peer gossip rate.
    pub gossip_over_rate: u64,
    /// Times a peer was graylisted in gossipsub for staying over the gossip rate.
    pub gossip_throttled: u64,
    /// Peers banned for sending invalid data.
    pub banned: u64,
    /// Inbound connections refused because their address group (an IPv4 address or an IPv6
    /// /64) had `max_connections_per_ip` already: before the handshake, or right after it when
    /// several were pending together.
    pub connections_refused_per_ip: u64,
    /// Connections refused because their address group is banned: inbound ones before the
    /// handshake (or right after it, when the ban came during it), dialed ones once
    /// established.
    pub connections_refused_banned_ip: u64,
    /// Of the two above, the inbound connections refused before the handshake, without a
    /// protocol byte sent.
    pub connections_refused_before_handshake: u64,
    /// Address groups banned, for too many banned peers or too many invalid items in all.
    pub banned_ips: u64,
    /// Peers found not to speak the sync protocol (by identify or by a refused request), each
    /// counted once while the node remembers it.
    pub sync_unsupported_peers: u64,
    /// Whether this node is reachable from outside, as AutoNAT last found: `unknown` (not
    /// probed yet, or no peer to probe through), `public` or `private` (behind a NAT or a
    /// firewall: the node reserves slots on relays instead).
    pub reachability: Reachability,
    /// Relays this node holds a reservation on now (its relayed addresses).
    pub relay_reservations: usize,
    /// Hole punches tried (DCUtR, over a relayed connection), and of those the ones that
    /// gave a direct connection. The side that dialed through the relay counts its successes
    /// only (DCUtR reports no failure there); the side that was dialed counts both.
    pub holepunch_attempts: u64,
    /// See `holepunch_attempts`.
    pub holepunch_successes: u64,
    /// Peers of this app named by DHT answers (provider records; a peer named by several
    /// servers in one lookup counts once per server).
    pub dht_providers_found: u64,
    /// Of those, the ones dialed (not connected already, and within the DHT's share of the
    /// connection slots).
    pub dht_dials: u64,
    /// As a relay (`--relay`): reservations accepted, and circuits accepted.
    pub relay_reservations_served: u64,
    /// See `relay_reservations_served`.
    pub relay_circuits_served: u64,
    /// Per peer (base58 peer id).
    pub peers: BTreeMap<String, PeerCounters>,
    /// The byte budget for other authors' feeds (`null`: unbounded, for a kernel built without
    /// one).
    pub capacity_bytes: Option<u64>,
    /// Bytes of other authors' feeds held now: what the budget bounds.
    pub capacity_used: u64,
    /// What is left of the budget (0 when over it; `null` when unbounded).
    pub capacity_free: Option<u64>,
    /// Bytes of the own feed held now: never counted against the budget, never evicted.
    pub own_bytes: u64,
    /// Blocks refused at the door because the store is full and their feed ranks below every
    /// feed it would have to push out (the kernel's count since it opened).
    pub over_capacity: u64,
    /// Feeds evicted for capacity (the kernel's count since it opened).
    pub evicted_feeds: u64,
}

impl Stats {
    /// Sets the figures the kernel keeps: blocks stored, evicted and collected, and the
    /// capacity figures.
    pub fn update_from(&mut self, kernel: &Kernel) {
        let counters = kernel.stats();
        let capacity = kernel.config().capacity_bytes;
        self.blocks_stored = counters.blocks;
        self.evicted = counters.evicted_blocks;
        self.collected = counters.collected;
        self.capacity_bytes = capacity;
        self.capacity_used = counters.other_bytes;
        self.capacity_free = capacity.map(|c| c.saturating_sub(counters.other_bytes));
        self.own_bytes = counters.own_bytes;
        self.over_capacity = counters.over_capacity;
        self.evicted_feeds = counters.evicted_feeds;
    }

    /// [`Stats::update_from`] for a kernel whose own feed is `own`'s, which may not be the
    /// kernel's author: a kernel opened read-only without the secret key signs with a
    /// throwaway one, and counts the store's own feed as another author's.
    pub fn update_from_as(&mut self, kernel: &Kernel, own: PublicKey) {
        self.update_from(kernel);
        if own == kernel.author() {
            return;
        }
        let bytes = kernel
            .retention()
            .iter()
            .find(|feed| feed.author == own)
            .map_or(0, |feed| feed.bytes);
        self.own_bytes += bytes;
        self.capacity_used = self.capacity_used.saturating_sub(bytes);
        self.capacity_free = self
            .capacity_bytes
            .map(|c| c.saturating_sub(self.capacity_used));
    }

    /// The counters of one peer, created on first use.
    pub(crate) fn peer(&mut self, peer: &libp2p::PeerId) -> &mut PeerCounters {
        self.peers
            .entry(peer.to_base58())
            .or_insert_with(|| PeerCounters {
                author: super::author_of(peer).map(|a| a.to_hex()),
                ..PeerCounters::default()
            })
    }

    /// Counts the outcome of one received block.
    pub(crate) fn outcome(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Duplicate => self.duplicates_received += 1,
            Outcome::Invalid(error) => *self.rejected.entry(reason(error)).or_default() += 1,
            other => {
                self.new_blocks_received += 1;
                let refused = match other {
                    Outcome::Rejected { slice, .. } => Some(format!("slice:{slice}")),
                    Outcome::Frozen { .. } => Some("frozen".to_owned()),
                    Outcome::Tombstoned { .. } => Some("tombstoned".to_owned()),
                    Outcome::OverCapacity => Some("over_capacity".to_owned()),
                    _ => None,
                };
                if let Some(key) = refused {
                    *self.rejected.entry(key).or_default() += 1;
                }
            }
        }
    }

    /// Counts a message that did not decode.
    pub(crate) fn malformed(&mut self) {
        *self.rejected.entry("malformed".to_owned()).or_default() += 1;
    }
}

/// A short, stable key for an intrinsic fault.
pub fn reason(error: &BlockError) -> String {
    match error {
        BlockError::Decode(_) => "malformed",
        BlockError::BadKey => "bad_key",
        BlockError::WeakKey => "weak_key",
        BlockError::BadSignature => "bad_signature",
        BlockError::TooLarge { .. } => "too_large",
        BlockError::TimeBeforeParent { .. } => "time_before_parent",
        BlockError::SeqMismatch { .. } => "seq_mismatch",
        BlockError::BodyMismatch => "body_mismatch",
        BlockError::ForeignParent => "foreign_parent",
        _ => "invalid",
    }
    .to_owned()
}
