//! The node's counters: what `blockend stats` prints.

use std::collections::BTreeMap;

use blockend_kernel::{BlockError, Outcome};
use serde::Serialize;

/// Traffic with one peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PeerCounters {
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

/// Node-wide counters. Cumulative since the node started, except `blocks_stored`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
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
    /// Per peer (base58 peer id).
    pub peers: BTreeMap<String, PeerCounters>,
}

impl Stats {
    /// The counters of one peer, created on first use.
    pub(crate) fn peer(&mut self, peer: &libp2p::PeerId) -> &mut PeerCounters {
        self.peers.entry(peer.to_base58()).or_default()
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
