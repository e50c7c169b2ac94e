//! Limits per address group, which a fresh key does not reset: established inbound
//! connections, peer bans and invalid data, all counted per group of remote addresses.
//!
//! A group is an exact IPv4 address or an IPv6 /64 (one host, or one customer's prefix: a
//! single IPv6 host commonly owns a whole /64, so an exact IPv6 address would cost an attacker
//! nothing). Addresses without an IP (`/memory/..`, `/dns/..`, relayed) belong to no group
//! and are not limited. The table is pure state: the network actor feeds it events and acts on
//! its answers.
//!
//! Inbound connections from a banned group, or from one that has its most established inbound
//! connections, are refused before the security handshake: the behaviour's gate
//! (`behaviour::Gate`, which holds this table) asks [`Groups::check`] when the transport
//! accepts a connection, and the node drops it without a protocol byte, so a refused remote
//! cannot make the node do a Diffie-Hellman and a signature per attempt. [`Groups::admit`],
//! once a connection is established, stays the count that decides: connections pending
//! together all pass the check, and the ones past the cap are closed then. A connection the
//! node dialed into a banned group is closed once established (the node chose to dial it).
//!
//! Connections still in their handshake are counted too, in [`Pending`], which the gate keeps
//! beside this table: without it one address could hold every pending slot the swarm has, with
//! handshakes it never finishes, and make the node do a key exchange for each while honest
//! remotes are turned away.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::Multiaddr;
use tokio::time::Instant;

/// Most groups remembered; past it the least recently seen group without connections is
/// forgotten (and with it its counters or its ban: bounded memory comes first).
pub(super) const MAX_GROUPS: usize = 4096;

/// The address group of a remote peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Group {
    /// One IPv4 address (an IPv4-mapped IPv6 address counts as its IPv4 address).
    V4(Ipv4Addr),
    /// An IPv6 /64: the address's top 64 bits.
    V6(u64),
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Group::V4(ip) => write!(f, "{ip}"),
            Group::V6(prefix) => {
                let ip = Ipv6Addr::from(u128::from(*prefix) << 64);
                write!(f, "{ip}/64")
            }
        }
    }
}

/// The group of a connection's remote address: its leading IP component, or `None` for an
/// address without one (memory, DNS) or a relayed one (the IP is the relay's).
pub(super) fn address_group(addr: &Multiaddr) -> Option<Group> {
    if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return None;
    }
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(Group::V4(ip)),
        Protocol::Ip6(ip) => Some(match ip.to_ipv4_mapped() {
            Some(v4) => Group::V4(v4),
            None => Group::V6((u128::from(ip) >> 64) as u64),
        }),
        _ => None,
    }
}

/// The limits, from the node's configuration.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// Most established inbound connections per group.
    pub(super) connections: u32,
    /// Most peer bans per group within `period`; one more bans the group.
    pub(super) bans: u32,
    /// Most invalid items per group within `period`; more bans the group.
    pub(super) invalid: u32,
    /// The counting window, and how long a group ban lasts.
    pub(super) period: Duration,
    /// Most inbound connections per group in their handshake at once.
    pub(super) pending: u32,
}

/// Whether a new connection from a group may stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Admit {
    /// Yes; it is counted until [`Groups::release`].
    Yes,
    /// No: the group has its most connections, established or (before the handshake) in
    /// their handshake.
    Full,
    /// No: the group is banned.
    Banned,
}

#[derive(Debug)]
struct Entry {
    connections: u32,
    bans: u32,
    invalid: u32,
    /// Start of the current counting window.
    since: Instant,
    banned_until: Option<Instant>,
    touched: Instant,
}

/// The counters of every group seen, bounded by [`MAX_GROUPS`].
#[derive(Debug)]
pub(super) struct Groups {
    limits: Limits,
    entries: BTreeMap<Group, Entry>,
}

impl Groups {
    pub(super) fn new(limits: Limits) -> Self {
        Self {
            limits,
            entries: BTreeMap::new(),
        }
    }

    /// The group's entry, its window restarted if it has passed; `None` only when the table is
    /// full of groups with connections.
    fn entry(&mut self, group: Group, now: Instant) -> Option<&mut Entry> {
        if !self.entries.contains_key(&group) && self.entries.len() >= MAX_GROUPS {
            let oldest = self
                .entries
                .iter()
                .filter(|(_, e)| e.connections == 0)
                .min_by_key(|(_, e)| e.touched)
                .map(|(g, _)| *g)?;
            self.entries.remove(&oldest);
        }
        let period = self.limits.period;
        let entry = self.entries.entry(group).or_insert(Entry {
            connections: 0,
            bans: 0,
            invalid: 0,
            since: now,
            banned_until: None,
            touched: now,
        });
        entry.touched = now;
        if now.saturating_duration_since(entry.since) >= period {
            entry.bans = 0;
            entry.invalid = 0;
            entry.since = now;
        }
        Some(entry)
    }

    /// Whether `group` is banned now.
    pub(super) fn is_banned(&self, group: Group, now: Instant) -> bool {
        self.entries
            .get(&group)
            .and_then(|e| e.banned_until)
            .is_some_and(|until| until > now)
    }

    /// Whether a new inbound connection from `group` may start its handshake: not if the group
    /// is banned or has its most connections. Counts nothing ([`Groups::admit`] does, once the
    /// connection is established); a group not in the table may.
    pub(super) fn check(&self, group: Group, now: Instant) -> Admit {
        if self.is_banned(group, now) {
            return Admit::Banned;
        }
        match self.entries.get(&group) {
            Some(entry) if entry.connections >= self.limits.connections => Admit::Full,
            _ => Admit::Yes,
        }
    }

    /// A connection from `group` is established: banned groups and full ones are refused,
    /// `inbound` ones are counted (connections the node dialed are its own choice).
    pub(super) fn admit(&mut self, group: Group, inbound: bool, now: Instant) -> Admit {
        if self.is_banned(group, now) {
            return Admit::Banned;
        }
        if !inbound {
            return Admit::Yes;
        }
        let max = self.limits.connections;
        match self.entry(group, now) {
            Some(entry) if entry.connections >= max => Admit::Full,
            Some(entry) => {
                entry.connections += 1;
                Admit::Yes
            }
            // The table is full of connected groups (more than `MAX_GROUPS` connections):
            // refuse rather than count nothing.
            None => Admit::Full,
        }
    }

    /// A connection [`Admit::Yes`]-ed as inbound from `group` closed.
    pub(super) fn release(&mut self, group: Group) {
        if let Some(entry) = self.entries.get_mut(&group) {
            entry.connections = entry.connections.saturating_sub(1);
        }
    }

    /// A peer of `group` was banned; true if that bans the group.
    pub(super) fn charge_ban(&mut self, group: Group, now: Instant) -> bool {
        let limits = self.limits;
        self.charge(group, now, |e| {
            e.bans = e.bans.saturating_add(1);
            e.bans > limits.bans
        })
    }

    /// Peers of `group` sent `count` more invalid items; true if that bans the group.
    pub(super) fn charge_invalid(&mut self, group: Group, count: u32, now: Instant) -> bool {
        let limits = self.limits;
        self.charge(group, now, |e| {
            e.invalid = e.invalid.saturating_add(count);
            e.invalid > limits.invalid
        })
    }

    fn charge(
        &mut self,
        group: Group,
        now: Instant,
        over: impl FnOnce(&mut Entry) -> bool,
    ) -> bool {
        if self.is_banned(group, now) {
            return false;
        }
        let period = self.limits.period;
        let Some(entry) = self.entry(group, now) else {
            return false;
        };
        if !over(entry) {
            return false;
        }
        entry.banned_until = Some(now + period);
        entry.bans = 0;
        entry.invalid = 0;
        entry.since = now;
        true
    }

    /// Lifts bans that are over and forgets groups with nothing left to count.
    pub(super) fn expire(&mut self, now: Instant) {
        let period = self.limits.period;
        self.entries.retain(|_, e| {
            if e.banned_until.is_some_and(|until| until <= now) {
                e.banned_until = None;
            }
            let window_over = now.saturating_duration_since(e.since) >= period;
            e.connections > 0
                || e.banned_until.is_some()
                || (!window_over && (e.bans > 0 || e.invalid > 0))
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Inbound connections in their handshake, by group: each is counted from the moment the gate
/// lets its handshake start until it is established or fails, and a group may have at most
/// [`Limits::pending`] at once.
///
/// Bounded by the swarm: it holds at most `behaviour::MAX_PENDING_INCOMING` pending inbound
/// connections, and every one it stops holding is reported (established, or failed with its
/// connection id), so neither map outgrows that cap (the one connection over it is counted
/// here, then refused by the swarm's limit and released in the same call).
#[derive(Debug)]
pub(super) struct Pending {
    max: u32,
    groups: HashMap<ConnectionId, Group>,
    counts: HashMap<Group, u32>,
}

impl Pending {
    pub(super) fn new(max: u32) -> Self {
        Self {
            max,
            groups: HashMap::new(),
            counts: HashMap::new(),
        }
    }

    /// Connection `id` from `group` is about to start its handshake: counted and true, or, if
    /// the group has its most handshakes in flight, false and counted nothing.
    pub(super) fn start(&mut self, id: ConnectionId, group: Group) -> bool {
        let count = self.counts.get(&group).copied().unwrap_or(0);
        if count >= self.max {
            return false;
        }
        self.counts.insert(group, count + 1);
        if let Some(old) = self.groups.insert(id, group) {
            // Connection ids are never reused; should one be, it must not leak a count.
            self.release(old);
        }
        true
    }

    /// Connection `id`'s handshake is over (it was established, or it failed): its group has
    /// one fewer. Ids not counted are ignored, so every end may be reported, even twice.
    pub(super) fn end(&mut self, id: ConnectionId) {
        if let Some(group) = self.groups.remove(&id) {
            self.release(group);
        }
    }

    fn release(&mut self, group: Group) {
        if let Some(count) = self.counts.get_mut(&group) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.counts.remove(&group);
            }
        }
    }

    /// Handshakes in flight from `group`.
    #[cfg(test)]
    pub(super) fn count(&self, group: Group) -> u32 {
        self.counts.get(&group).copied().unwrap_or(0)
    }

    /// Handshakes in flight in all.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.groups.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Multiaddr {
        text.parse().expect("a multiaddr")
    }

    fn limits() -> Limits {
        Limits {
            connections: 2,
            bans: 1,
            invalid: 10,
            period: Duration::from_secs(60),
            pending: 2,
        }
    }

    #[test]
    fn an_ipv4_address_is_its_own_group() {
        let a = address_group(&addr("/ip4/10.0.0.1/tcp/4001"));
        let b = address_group(&addr(
            "/ip4/10.0.0.1/tcp/5000/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
        ));
        let c = address_group(&addr("/ip4/10.0.0.2/tcp/4001"));
        assert_eq!(a, Some(Group::V4(Ipv4Addr::new(10, 0, 0, 1))));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn an_ipv6_slash_64_is_one_group() {
        let a = address_group(&addr("/ip6/2001:db8:1:2::1/tcp/4001"));
        let b = address_group(&addr("/ip6/2001:db8:1:2:ffff:ffff:ffff:ffff/tcp/4001"));
        let c = address_group(&addr("/ip6/2001:db8:1:3::1/tcp/4001"));
        assert_eq!(a, Some(Group::V6(0x2001_0db8_0001_0002)));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.expect("a group").to_string(), "2001:db8:1:2::/64");
        let mapped = address_group(&addr("/ip6/::ffff:10.0.0.1/tcp/4001"));
        assert_eq!(mapped, Some(Group::V4(Ipv4Addr::new(10, 0, 0, 1))));
    }

    #[test]
    fn addresses_without_an_ip_have_no_group() {
        assert_eq!(address_group(&addr("/memory/1234")), None);
        assert_eq!(address_group(&addr("/dns4/example.com/tcp/4001")), None);
        assert_eq!(address_group(&Multiaddr::empty()), None);
        let relayed = "/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA/p2p-circuit";
        assert_eq!(address_group(&addr(relayed)), None);
    }

    #[test]
    fn inbound_connections_past_the_limit_are_refused_until_one_closes() {
        let mut groups = Groups::new(limits());
        let g = Group::V4(Ipv4Addr::LOCALHOST);
        let now = Instant::now();
        assert_eq!(groups.admit(g, true, now), Admit::Yes);
        assert_eq!(groups.admit(g, true, now), Admit::Yes);
        assert_eq!(groups.admit(g, true, now), Admit::Full);
        assert_eq!(
            groups.admit(g, false, now),
            Admit::Yes,
            "own dials are not capped"
        );
        groups.release(g);
        assert_eq!(groups.admit(g, true, now), Admit::Yes);
    }

    #[test]
    fn the_check_before_the_handshake_refuses_banned_and_full_groups_and_counts_nothing() {
        let mut groups = Groups::new(limits());
        let g = Group::V4(Ipv4Addr::LOCALHOST);
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(groups.check(g, now), Admit::Yes);
        }
        assert_eq!(groups.admit(g, true, now), Admit::Yes);
        assert_eq!(groups.check(g, now), Admit::Yes);
        assert_eq!(groups.admit(g, true, now), Admit::Yes);
        assert_eq!(groups.check(g, now), Admit::Full);
        groups.release(g);
        assert_eq!(groups.check(g, now), Admit::Yes);
        assert!(!groups.charge_ban(g, now));
        assert!(groups.charge_ban(g, now));
        assert_eq!(groups.check(g, now), Admit::Banned);
        let other = Group::V4(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(groups.check(other, now), Admit::Yes);
        let later = now + Duration::from_secs(61);
        groups.expire(later);
        assert_eq!(groups.check(g, later), Admit::Yes);
    }

    #[test]
    fn bans_past_the_limit_ban_the_group_for_the_period() {
        let mut groups = Groups::new(limits());
        let g = Group::V4(Ipv4Addr::LOCALHOST);
        let now = Instant::now();
        assert!(!groups.charge_ban(g, now));
        assert!(groups.charge_ban(g, now));
        assert_eq!(groups.admit(g, false, now), Admit::Banned);
        let later = now + Duration::from_secs(61);
        groups.expire(later);
        assert_eq!(groups.admit(g, true, later), Admit::Yes);
    }

    #[test]
    fn invalid_items_add_up_across_peers_but_not_across_windows() {
        let mut groups = Groups::new(limits());
        let g = Group::V6(1);
        let now = Instant::now();
        assert!(!groups.charge_invalid(g, 6, now));
        // A new window: the first six no longer count.
        let later = now + Duration::from_secs(61);
        assert!(!groups.charge_invalid(g, 6, later));
        assert!(groups.charge_invalid(g, 5, later));
        assert!(groups.is_banned(g, later));
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut groups = Groups::new(limits());
        let now = Instant::now();
        for i in 0..(MAX_GROUPS as u32 + 100) {
            groups.charge_invalid(Group::V4(Ipv4Addr::from(i)), 1, now);
        }
        assert_eq!(groups.len(), MAX_GROUPS);
        groups.expire(now + Duration::from_secs(61));
        assert_eq!(groups.len(), 0);
    }

    #[test]
    fn handshakes_past_the_pending_limit_are_refused_until_one_ends() {
        let mut pending = Pending::new(limits().pending);
        let g = Group::V4(Ipv4Addr::LOCALHOST);
        let other = Group::V4(Ipv4Addr::new(10, 0, 0, 1));
        let id = ConnectionId::new_unchecked;
        assert!(pending.start(id(1), g));
        assert!(pending.start(id(2), g));
        assert!(!pending.start(id(3), g), "a third handshake from one group");
        assert_eq!(pending.count(g), 2, "a refused handshake is not counted");
        assert!(
            pending.start(id(4), other),
            "another group has its own count"
        );

        // Established or failed, each end frees a slot once.
        pending.end(id(1));
        pending.end(id(1));
        pending.end(id(3));
        assert_eq!(pending.count(g), 1);
        assert!(pending.start(id(5), g));
        assert!(!pending.start(id(6), g));

        for n in [2, 4, 5] {
            pending.end(id(n));
        }
        assert_eq!(
            (pending.count(g), pending.count(other), pending.len()),
            (0, 0, 0)
        );
        assert!(
            pending.counts.is_empty(),
            "groups without handshakes are forgotten"
        );
    }

    #[test]
    fn a_pending_limit_of_zero_refuses_every_handshake() {
        let mut pending = Pending::new(0);
        let g = Group::V6(1);
        assert!(!pending.start(ConnectionId::new_unchecked(1), g));
        assert_eq!(pending.len(), 0);
        assert!(pending.counts.is_empty());
    }
}
