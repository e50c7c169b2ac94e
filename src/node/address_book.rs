//! The peers a node has been connected to, remembered across restarts (`Config::address_book`,
//! the store's `peers` file for `blockend node`), so a restarted node dials them again without
//! a `--peer`. Only addresses the node has evidence for go in: the address it dialed and
//! connected to, and the listen addresses a peer announces (identify) on the IP it connected
//! from, so a peer cannot file itself under subnets it is not in, nor make the node dial other
//! hosts later. Bounded, and diverse by construction: at most [`PER_SUBNET`] peers per subnet
//! (an IPv4 /24, an IPv6 /48, or one DNS name), [`MAX_PEERS`] in all, oldest seen out first;
//! at most [`MAX_ADDRS`] addresses per peer. A remote that connects from many addresses of one
//! subnet fills one subnet's slots, not the book, and a restarted node dials at most
//! [`DIAL_ON_START`] of them, one per subnet first: the book helps a node find its swarm
//! again, it does not decide whom it talks to (explicit `--peer` and `--bootstrap` peers are
//! always dialed and kept).
//!
//! The file holds one JSON object per line, `{"peer": "<base58>", "addrs": [...], "seen":
//! <unix seconds>}`; lines that do not parse are skipped (a torn write loses one entry, not
//! the book), and it is written whole to a temporary file and renamed into place.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::Path;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

/// Most peers remembered.
pub const MAX_PEERS: usize = 256;

/// Most peers remembered per subnet.
pub const PER_SUBNET: usize = 2;

/// Most addresses remembered per peer.
pub const MAX_ADDRS: usize = 4;

/// Most remembered peers dialed when a node starts.
pub const DIAL_ON_START: usize = 8;

/// A peer seen again within this many seconds with the same addresses does not change the
/// book (so a busy node does not rewrite it for every identify).
const REFRESH_SECS: u64 = 600;

/// Largest address book file read, in bytes (a line is well under 1 KiB).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Where an address points, for diversity: an IPv4 /24, an IPv6 /48, or a DNS name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subnet {
    V4([u8; 3]),
    V6([u16; 3]),
    Name(String),
    /// Neither (a memory address in tests): one subnet per address.
    Other(String),
}

/// The subnet of `addr`'s leading component.
pub fn subnet(addr: &Multiaddr) -> Subnet {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => {
            let o = ip.octets();
            Subnet::V4([o[0], o[1], o[2]])
        }
        Some(Protocol::Ip6(ip)) => match ip.to_ipv4_mapped() {
            Some(v4) => subnet(&Multiaddr::from(IpAddr::V4(v4))),
            None => {
                let s = ip.segments();
                Subnet::V6([s[0], s[1], s[2]])
            }
        },
        Some(Protocol::Dns(n) | Protocol::Dns4(n) | Protocol::Dns6(n)) => {
            Subnet::Name(n.to_ascii_lowercase())
        }
        _ => Subnet::Other(addr.to_string()),
    }
}

/// One remembered peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Base58 peer id.
    pub peer: String,
    /// Addresses to dial it at, best first (without `/p2p/`).
    pub addrs: Vec<String>,
    /// When it was last connected (unix seconds).
    pub seen: u64,
}

/// The book: remembered peers by id.
#[derive(Debug, Default)]
pub struct AddressBook {
    peers: BTreeMap<PeerId, (Vec<Multiaddr>, u64)>,
    changed: bool,
}

impl AddressBook {
    /// Reads the book at `path`; a missing file is an empty book, unreadable lines are
    /// skipped.
    pub fn load(path: &Path) -> AddressBook {
        let mut book = AddressBook::default();
        let Ok(file) = std::fs::File::open(path) else {
            return book;
        };
        let mut bytes = Vec::new();
        use std::io::Read as _;
        if file.take(MAX_FILE_BYTES).read_to_end(&mut bytes).is_err() {
            tracing::warn!(
                "address book {}: unreadable, starting empty",
                path.display()
            );
            return book;
        }
        for line in String::from_utf8_lossy(&bytes).lines() {
            let Ok(entry) = serde_json::from_str::<Entry>(line) else {
                continue;
            };
            let Ok(peer) = entry.peer.parse::<PeerId>() else {
                continue;
            };
            let addrs: Vec<Multiaddr> = entry.addrs.iter().filter_map(|a| a.parse().ok()).collect();
            book.note(peer, &addrs, entry.seen);
        }
        book.changed = false;
        book
    }

    /// Remembers that `peer` was connected at `now`, reachable at `addrs` (the first ones
    /// kept). Keeps the bounds: a peer whose subnet is full replaces that subnet's oldest, a
    /// full book drops its oldest.
    pub fn note(&mut self, peer: PeerId, addrs: &[Multiaddr], now: u64) {
        let mut kept: Vec<Multiaddr> = Vec::new();
        let held = self
            .peers
            .get(&peer)
            .map(|(a, _)| a.clone())
            .unwrap_or_default();
        for addr in addrs.iter().chain(&held) {
            let bare = without_peer_id(addr);
            if !kept.contains(&bare) && kept.len() < MAX_ADDRS && dialable(&bare) {
                kept.push(bare);
            }
        }
        let Some(first) = kept.first() else {
            return;
        };
        let net = subnet(first);
        if let Some((held, seen)) = self.peers.get(&peer) {
            if *held == kept && now < seen.saturating_add(REFRESH_SECS) {
                return; // nothing new: no write for it
            }
        }
        // A known peer is placed again like a new one: moving into a full subnet costs that
        // subnet's oldest its slot.
        self.peers.remove(&peer);
        {
            let same: Vec<(PeerId, u64)> = self
                .peers
                .iter()
                .filter(|(_, (a, _))| a.first().map(subnet).as_ref() == Some(&net))
                .map(|(p, (_, seen))| (*p, *seen))
                .collect();
            if same.len() >= PER_SUBNET {
                if let Some((oldest, _)) = same.iter().min_by_key(|(p, seen)| (*seen, *p)) {
                    self.peers.remove(oldest);
                }
            } else if self.peers.len() >= MAX_PEERS {
                let oldest = self
                    .peers
                    .iter()
                    .min_by_key(|(p, (_, seen))| (*seen, **p))
                    .map(|(p, _)| *p);
                if let Some(oldest) = oldest {
                    self.peers.remove(&oldest);
                }
            }
        }
        self.peers.insert(peer, (kept, now));
        self.changed = true;
    }

    /// Forgets `peer` (it proved to be someone else, or was banned).
    pub fn forget(&mut self, peer: &PeerId) {
        self.changed |= self.peers.remove(peer).is_some();
    }

    /// Peers remembered.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Up to `n` peers to dial on start, with their addresses: the most recently seen of each
    /// subnet first, then the next of each, and so on.
    pub fn to_dial(&self, n: usize) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mut by_net: BTreeMap<Subnet, Vec<(u64, PeerId, Vec<Multiaddr>)>> = BTreeMap::new();
        for (peer, (addrs, seen)) in &self.peers {
            if let Some(first) = addrs.first() {
                by_net
                    .entry(subnet(first))
                    .or_default()
                    .push((*seen, *peer, addrs.clone()));
            }
        }
        for list in by_net.values_mut() {
            list.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        }
        let mut out = Vec::new();
        let mut round = 0;
        while out.len() < n {
            let before = out.len();
            for list in by_net.values() {
                if let Some((_, peer, addrs)) = list.get(round) {
                    if out.len() < n {
                        out.push((*peer, addrs.clone()));
                    }
                }
            }
            if out.len() == before {
                break;
            }
            round += 1;
        }
        out
    }

    /// Writes the book to `path` if it changed since it was loaded or last saved.
    ///
    /// # Errors
    /// The I/O error of writing or renaming the file.
    pub fn save_if_changed(&mut self, path: &Path) -> std::io::Result<()> {
        if !self.changed {
            return Ok(());
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".new");
        let tmp = std::path::PathBuf::from(tmp);
        {
            let mut file = std::fs::File::create(&tmp)?;
            for (peer, (addrs, seen)) in &self.peers {
                let entry = Entry {
                    peer: peer.to_base58(),
                    addrs: addrs.iter().map(ToString::to_string).collect(),
                    seen: *seen,
                };
                let line = serde_json::to_string(&entry).map_err(std::io::Error::other)?;
                writeln!(file, "{line}")?;
            }
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        self.changed = false;
        Ok(())
    }
}

/// `addr` without a trailing `/p2p/<id>`.
fn without_peer_id(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

/// Whether an address is worth remembering: an IP that is not unspecified, then `/tcp/P` or
/// `/udp/P/quic-v1` and nothing else (what the node dials; a relayed address is a relay's,
/// not the peer's), or a memory address (tests).
fn dialable(addr: &Multiaddr) -> bool {
    let mut parts = addr.iter();
    let host = match parts.next() {
        Some(Protocol::Ip4(ip)) => !ip.is_unspecified(),
        Some(Protocol::Ip6(ip)) => {
            !ip.is_unspecified() && ip.to_ipv4_mapped().is_none_or(|v4| !v4.is_unspecified())
        }
        Some(Protocol::Memory(_)) => return parts.next().is_none(),
        _ => false,
    };
    let transport = match parts.next() {
        Some(Protocol::Tcp(_)) => true,
        Some(Protocol::Udp(_)) => matches!(parts.next(), Some(Protocol::QuicV1)),
        _ => false,
    };
    host && transport && parts.next().is_none()
}

/// The IP an address starts with, IPv4-mapped IPv6 as IPv4.
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Multiaddr {
        text.parse().expect("a multiaddr")
    }

    const ID: &str = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo";

    #[test]
    fn one_subnet_fills_its_slots_not_the_book() {
        let mut book = AddressBook::default();
        for i in 0..50u64 {
            let a = addr(&format!("/ip4/198.18.7.{}/tcp/4001", i + 1));
            book.note(PeerId::random(), &[a], i);
        }
        assert_eq!(book.len(), PER_SUBNET, "one /24, two peers");
        // The newest two stay.
        assert!(book.peers.values().all(|(_, seen)| *seen >= 48));
    }

    #[test]
    fn the_book_is_bounded_and_drops_the_oldest() {
        let mut book = AddressBook::default();
        for i in 0..(MAX_PEERS as u64 + 10) {
            let a = addr(&format!(
                "/ip4/100.{}.{}.1/udp/4001/quic-v1",
                i / 256,
                i % 256
            ));
            book.note(PeerId::random(), &[a], i);
        }
        assert_eq!(book.len(), MAX_PEERS);
        assert!(book.peers.values().all(|(_, seen)| *seen >= 10));
    }

    #[test]
    fn start_dials_spread_over_subnets_first() {
        let mut book = AddressBook::default();
        for net in 0..3u8 {
            for host in 1..=2u8 {
                let a = addr(&format!("/ip4/198.18.{net}.{host}/tcp/4001"));
                book.note(PeerId::random(), &[a], u64::from(host));
            }
        }
        let dial = book.to_dial(3);
        let nets: std::collections::BTreeSet<Subnet> =
            dial.iter().map(|(_, a)| subnet(&a[0])).collect();
        assert_eq!(nets.len(), 3, "one per subnet before a second: {dial:?}");
        assert_eq!(book.to_dial(100).len(), 6);
    }

    #[test]
    fn only_addresses_the_node_dials_are_remembered() {
        let mut book = AddressBook::default();
        let peer = PeerId::random();
        let relayed = format!("/ip4/198.18.0.1/tcp/4001/p2p/{ID}/p2p-circuit");
        book.note(
            peer,
            &[
                addr("/ip4/0.0.0.0/tcp/4001"),
                addr("/ip6/::ffff:0.0.0.0/tcp/4001"),
                addr(&relayed),
                addr("/ip4/198.18.0.1"),
                addr("/ip4/198.18.0.1/udp/4001"),
                addr("/ip4/198.18.0.1/tcp/4001/ws"),
                addr("/dns4/example.org/tcp/4001"),
            ],
            1,
        );
        assert!(book.is_empty(), "{:?}", book.peers);
        let quic = format!("/ip4/198.18.0.1/udp/4001/quic-v1/p2p/{ID}");
        book.note(peer, &[addr(&quic)], 2);
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn a_peer_seen_again_with_nothing_new_changes_nothing() {
        let mut book = AddressBook::default();
        let peer = PeerId::random();
        let a = addr("/ip4/198.18.0.1/tcp/4001");
        book.note(peer, std::slice::from_ref(&a), 100);
        book.changed = false;
        book.note(peer, std::slice::from_ref(&a), 101);
        assert!(!book.changed);
        book.note(peer, &[a], 100 + REFRESH_SECS);
        assert!(book.changed);
    }

    #[test]
    fn a_known_peer_moving_into_a_full_subnet_does_not_make_it_three() {
        let mut book = AddressBook::default();
        for host in 1..=2u8 {
            let a = addr(&format!("/ip4/198.18.9.{host}/tcp/4001"));
            book.note(PeerId::random(), &[a], u64::from(host));
        }
        let mover = PeerId::random();
        book.note(mover, &[addr("/ip4/198.18.1.1/tcp/4001")], 3);
        book.note(mover, &[addr("/ip4/198.18.9.3/tcp/4001")], 4);
        let in_nine = book
            .peers
            .values()
            .filter(|(a, _)| subnet(&a[0]) == Subnet::V4([198, 18, 9]))
            .count();
        assert_eq!(in_nine, PER_SUBNET);
    }

    #[test]
    fn a_saved_book_loads_back_and_a_torn_line_costs_one_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("peers");
        let mut book = AddressBook::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        book.note(a, &[addr("/ip4/198.18.0.1/tcp/4001")], 5);
        book.note(b, &[addr("/ip4/198.18.1.1/udp/4001/quic-v1")], 6);
        book.save_if_changed(&path).expect("saved");
        let loaded = AddressBook::load(&path);
        assert_eq!(loaded.peers, book.peers);
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str("{\"peer\": \"not a peer\"\n{garbage\n\u{fffd}\u{1}");
        std::fs::write(&path, text).expect("write");
        assert_eq!(AddressBook::load(&path).len(), 2);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.extend([0xff, 0xfe, b'\n']);
        std::fs::write(&path, bytes).expect("write");
        assert_eq!(
            AddressBook::load(&path).len(),
            2,
            "invalid UTF-8 costs its line"
        );
        assert!(AddressBook::load(&dir.path().join("missing")).is_empty());
    }
}
