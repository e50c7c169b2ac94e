//! Scenarios: what a run simulates, as read from a TOML file (see `sim/scenarios/`).
//!
//! Every field has a default, so a scenario file names only what differs. Times are virtual
//! milliseconds from the start of the run.

use std::path::Path;

use serde::Deserialize;

use crate::error::Error;

/// One simulation run, as a scenario file describes it.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Scenario {
    /// A short name, used in reports and file names.
    pub name: String,
    /// The seed of the one random generator (overridden by `--seed`).
    pub seed: u64,
    /// Number of simulated peers (overridden by `--peers`).
    pub peers: usize,
    /// The run stops here even if it has not quiesced (virtual ms).
    pub max_time_ms: u64,
    /// Who is connected to whom.
    pub topology: Topology,
    /// The dissemination model's parameters.
    pub mesh: Mesh,
    /// Latency, bandwidth and faults of every link.
    pub network: Network,
    /// What the honest peers write.
    pub workload: Workload,
    /// Byte budget of every kernel for other authors' feeds; none means no capacity pressure.
    pub capacity_bytes: Option<u64>,
    /// How every kernel ranks feeds when over capacity.
    pub retention: Retention,
    /// Network partitions that heal.
    pub partitions: Vec<Partition>,
    /// Peers that leave and come back.
    pub churn: Option<Churn>,
    /// Misbehaving peers.
    pub adversaries: Vec<Adversary>,
    /// Peers that flood the swarm with fresh identities.
    pub sybil: Option<Sybil>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "scenario".into(),
            seed: 1,
            peers: 100,
            max_time_ms: 600_000,
            topology: Topology::default(),
            mesh: Mesh::default(),
            network: Network::default(),
            workload: Workload::default(),
            capacity_bytes: None,
            retention: Retention::Observed,
            partitions: Vec::new(),
            churn: None,
            adversaries: Vec::new(),
            sybil: None,
        }
    }
}

impl Scenario {
    /// Parses a scenario from TOML text.
    ///
    /// # Errors
    /// [`Error::Parse`] for text that is not a valid scenario.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        Self::parse(text, Path::new("<text>"))
    }

    /// Reads and parses a scenario file.
    ///
    /// # Errors
    /// [`Error::Read`] if the file cannot be read, [`Error::Parse`] or [`Error::Invalid`] if
    /// it is not a valid scenario.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| Error::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
        scenario.check()?;
        Ok(scenario)
    }

    /// Checks the values a file cannot express wrongly by type alone.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the first bad value.
    pub fn check(&self) -> Result<(), Error> {
        let invalid = |reason: &str| {
            Err(Error::Invalid {
                reason: reason.to_owned(),
            })
        };
        if self.peers < 2 {
            return invalid("peers must be at least 2");
        }
        if self.mesh.d == 0 || self.mesh.heartbeat_ms == 0 || self.mesh.sync_every == 0 {
            return invalid("mesh.d, mesh.heartbeat_ms and mesh.sync_every must be positive");
        }
        for (name, p) in [
            ("loss", self.network.loss),
            ("duplicate", self.network.duplicate),
            ("reorder", self.network.reorder),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::Invalid {
                    reason: format!("network.{name} must be a probability, not {p}"),
                });
            }
        }
        if self.network.loss >= 1.0 {
            return invalid("network.loss must be below 1: nothing would arrive");
        }
        for p in &self.partitions {
            if p.heal_ms <= p.at_ms || p.groups < 2 {
                return invalid("a partition needs groups >= 2 and heal_ms after at_ms");
            }
        }
        if let Some(churn) = &self.churn {
            if !(0.0..=1.0).contains(&churn.fraction) || churn.rejoin_ms <= churn.leave_ms {
                return invalid("churn needs a fraction in 0..=1 and rejoin_ms after leave_ms");
            }
        }
        if let Some(sybil) = &self.sybil {
            if !(0.0..=1.0).contains(&sybil.backdated) {
                return invalid("sybil.backdated must be a fraction in 0..=1");
            }
            if sybil.blocks_per_feed == 0 {
                return invalid("sybil.blocks_per_feed must be positive");
            }
            if sybil.joiners > 0 && sybil.join_ms <= sybil.start_ms {
                return invalid("sybil.join_ms must come after sybil.start_ms");
            }
            if sybil.joiners > 0 && self.churn.is_some() {
                return invalid("sybil.joiners and churn cannot be combined");
            }
        }
        Ok(())
    }

    /// Adversarial peers in total, Sybil peers included.
    pub fn adversary_count(&self) -> usize {
        let sybils = self.sybil.as_ref().map_or(0, |s| s.count);
        self.adversaries.iter().map(|a| a.count).sum::<usize>() + sybils
    }
}

/// The connection graph.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Topology {
    /// Its shape.
    pub kind: TopologyKind,
    /// Connections per peer for `random-regular`; ring-lattice neighbours for `small-world`.
    pub degree: usize,
    /// Probability that a small-world lattice edge is rewired to a random peer.
    pub rewire: f64,
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            kind: TopologyKind::RandomRegular,
            degree: 8,
            rewire: 0.1,
        }
    }
}

/// Shapes of the connection graph.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TopologyKind {
    /// Everyone connected to everyone: N(N-1)/2 connections, for small swarms.
    Full,
    /// Every peer has `degree` connections to random peers.
    RandomRegular,
    /// Each peer connected to the next, the last to the first.
    Ring,
    /// A ring without the closing link: the worst diameter.
    Line,
    /// Watts-Strogatz: a ring lattice of `degree` neighbours, each edge rewired with
    /// probability `rewire`.
    SmallWorld,
}

/// Parameters of the dissemination model (see the crate docs). The names are gossipsub's and
/// the defaults the node's: both read
/// [`sync::DISSEMINATION`](blockend_kernel::sync::DISSEMINATION), so a figure from the
/// simulator holds for the node's config. The model covers what the node uses: a publisher
/// sends to its mesh (no flood publish) and there is no IHAVE gossip (checked by a test).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Mesh {
    /// Mesh degree D: a new block is pushed to this many mesh peers (gossipsub `mesh_n`, 3).
    pub d: usize,
    /// Below this many mesh peers, a peer grafts more at the heartbeat (`mesh_n_low`, 2).
    pub d_lo: usize,
    /// A peer accepts grafts up to this many mesh peers (`mesh_n_high`, 4).
    pub d_hi: usize,
    /// Heartbeat interval: mesh repair and adversary actions (gossipsub `heartbeat_interval`,
    /// 1 s).
    pub heartbeat_ms: u64,
    /// A tick of every sync machine (`sync::Event::Tick`: a reconciliation round with every
    /// connection, lost wants, held blocks, garbage collection, missing bodies) every this many
    /// heartbeats (the node's tick over its heartbeat: 2).
    pub sync_every: u64,
    /// A peer collects pushed blocks for this long before one kernel dispatch handles them all
    /// (validation and processing delay; 0 dispatches each arrival at once).
    pub batch_ms: u64,
}

impl Default for Mesh {
    /// The node's numbers: [`DISSEMINATION`](blockend_kernel::sync::DISSEMINATION).
    fn default() -> Self {
        let spread = blockend_kernel::sync::DISSEMINATION;
        Self {
            d: spread.mesh_n,
            d_lo: spread.mesh_n_low,
            d_hi: spread.mesh_n_high,
            heartbeat_ms: spread.heartbeat_ms,
            sync_every: (spread.tick_ms / spread.heartbeat_ms.max(1)).max(1),
            batch_ms: 5,
        }
    }
}

/// The links: latency, bandwidth and faults (the same for every link).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Network {
    /// One-way latency of a message.
    pub latency: Latency,
    /// Bytes per second each direction of a link carries; 0 means unlimited. Messages queue
    /// behind each other on a busy link.
    pub bandwidth_bytes_per_s: u64,
    /// Probability a message is lost.
    pub loss: f64,
    /// Probability a message arrives twice.
    pub duplicate: f64,
    /// Probability a message is held back by up to `reorder_ms`, so later ones overtake it.
    pub reorder: f64,
    /// The most a reordered message is held back.
    pub reorder_ms: u64,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            latency: Latency::default(),
            bandwidth_bytes_per_s: 0,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_ms: 100,
        }
    }
}

/// A latency distribution, in virtual ms.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Latency {
    /// Always the same.
    Constant {
        /// The latency.
        ms: f64,
    },
    /// Uniform between two bounds.
    Uniform {
        /// Lower bound.
        min_ms: f64,
        /// Upper bound.
        max_ms: f64,
    },
    /// Log-normal: most messages near the median, a long tail (as on the internet).
    LogNormal {
        /// The median.
        median_ms: f64,
        /// The spread of the underlying normal.
        sigma: f64,
    },
}

impl Default for Latency {
    fn default() -> Self {
        Latency::Uniform {
            min_ms: 20.0,
            max_ms: 80.0,
        }
    }
}

/// What honest peers write.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Workload {
    /// Which ready-made slice the peers run.
    pub kind: WorkloadKind,
    /// How many peers write: a number, or `"all"` honest peers.
    pub senders: Senders,
    /// Blocks each sender writes.
    pub blocks_per_sender: u64,
    /// First block time (virtual ms); each sender starts at a random offset below `interval_ms`.
    pub start_ms: u64,
    /// Time between a sender's blocks.
    pub interval_ms: u64,
    /// Chat only: how long a message lives.
    pub ttl_ms: u64,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            kind: WorkloadKind::Counter,
            senders: Senders::Count(1),
            blocks_per_sender: 1,
            start_ms: 1_000,
            interval_ms: 100,
            ttl_ms: 60_000,
        }
    }
}

/// The ready-made workloads.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// `blockend_reducers::Counter`: bodies `{"value": n}`, strictly growing per author.
    Counter,
    /// `blockend_reducers::Chat`: one room, messages that expire after `ttl_ms`.
    Chat,
}

/// How many peers write.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Senders {
    /// This many (the first honest peers).
    Count(usize),
    /// Every honest peer.
    All(AllSenders),
}

/// The word `"all"`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum AllSenders {
    /// Every honest peer.
    #[serde(rename = "all")]
    All,
}

/// A partition: peers are split into `groups` contiguous ranges of ids that cannot reach each
/// other from `at_ms` until `heal_ms`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// When the network splits.
    pub at_ms: u64,
    /// When it heals.
    pub heal_ms: u64,
    /// Into how many groups.
    #[serde(default = "two")]
    pub groups: usize,
}

fn two() -> usize {
    2
}

/// Peers that leave and rejoin.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    /// Fraction of honest non-sending peers that leave.
    pub fraction: f64,
    /// When they leave.
    pub leave_ms: u64,
    /// When they come back.
    pub rejoin_ms: u64,
    /// Whether they come back with their store (else empty, same identity).
    #[serde(default = "yes")]
    pub keep_store: bool,
}

fn yes() -> bool {
    true
}

/// The ranking every kernel uses for retention (`blockend_kernel::retention`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Retention {
    /// `Observed`, the kernel's default: followed feeds, then this node's arrival order, then
    /// length. The simulator follows no one, so arrival order alone decides.
    #[default]
    Observed,
    /// `OldestLongest`: claimed genesis time first. Not Sybil-proof (a backdated genesis
    /// outranks every honest feed); kept as the control that shows a flood evicting.
    OldestLongest,
}

/// Sybil peers: each signs many fresh feeds (a new identity per feed) and, from `start_ms`,
/// pushes all of them to every connection. A fraction of the feeds claim a genesis in 1970.
/// The Sybil peers are the last ids, after the other adversaries.
///
/// `joiners` honest peers (the last honest ids before the adversaries; none of them writes)
/// are offline and empty from the start and join at `join_ms`, after the flood: a fresh node
/// meeting a swarm that already carries some flood feeds. Their figures are reported apart
/// (`joiner_*`) and do not decide the run: such a node ranks feeds in the order it happens to
/// receive them, so the flood feeds its neighbours keep in their spare room can come before
/// honest ones (see the kernel's `retention` docs, "What it cannot do").
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Sybil {
    /// How many Sybil peers.
    pub count: usize,
    /// Fresh feeds each Sybil peer signs.
    pub feeds_each: u64,
    /// Blocks in each Sybil feed.
    pub blocks_per_feed: u64,
    /// Fraction of the feeds whose genesis claims a time in 1970.
    pub backdated: f64,
    /// When the flood starts (virtual ms): the first heartbeat at or after it.
    pub start_ms: u64,
    /// The Sybil peers push their whole flood again at every heartbeat until this time (at
    /// or before `start_ms`: once).
    pub until_ms: u64,
    /// Fresh honest peers that join after the flood (at most the honest peers that do not
    /// write).
    pub joiners: usize,
    /// When they join (virtual ms).
    pub join_ms: u64,
}

impl Default for Sybil {
    fn default() -> Self {
        Self {
            count: 1,
            feeds_each: 1_000,
            blocks_per_feed: 1,
            backdated: 0.5,
            start_ms: 20_000,
            until_ms: 0,
            joiners: 0,
            join_ms: 40_000,
        }
    }
}

/// A group of misbehaving peers.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Adversary {
    /// What they do.
    pub kind: AdversaryKind,
    /// How many peers do it.
    #[serde(default = "one")]
    pub count: usize,
    /// They act at every heartbeat until this time (virtual ms).
    #[serde(default = "until")]
    pub until_ms: u64,
}

fn one() -> usize {
    1
}

fn until() -> u64 {
    5_000
}

/// Kinds of misbehaviour.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum AdversaryKind {
    /// Pushes copies of honest blocks with a tampered signature, and blocks in honest authors'
    /// names signed with its own key.
    Forger,
    /// Signs two different blocks at one height of its own feed and pushes one to each half of
    /// its mesh.
    Forker,
    /// Replays every block it holds to every connection, many times per heartbeat.
    Flooder,
    /// Sends a validly signed block over the body size limit and a message over the message
    /// size limit.
    Oversized,
    /// Sends bytes that do not decode as a message.
    Malformed,
    /// Writes a feed of validly signed blocks in which every other block is one the
    /// application rejects in the author's state (for the counter, a value that does not
    /// grow), and pushes each to one neighbour only. Honest peers keep such blocks in their
    /// candidate set without counting or pushing them, and fetch them from each other when
    /// they ask for the feed, so they still end with one `set_hash`.
    Rejected,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model pushes to the mesh only and has no IHAVE gossip: a change of the shared
    /// parameters to flood publish or lazy gossip would make its figures wrong for the node.
    #[test]
    fn the_mesh_model_covers_the_nodes_dissemination() {
        let spread = blockend_kernel::sync::DISSEMINATION;
        assert!(!spread.flood_publish, "the model does not flood-publish");
        assert_eq!(spread.gossip_lazy, 0, "the model has no IHAVE gossip");
        let mesh = Mesh::default();
        assert_eq!(
            (mesh.d, mesh.d_lo, mesh.d_hi, mesh.heartbeat_ms),
            (
                spread.mesh_n,
                spread.mesh_n_low,
                spread.mesh_n_high,
                spread.heartbeat_ms
            )
        );
        assert_eq!(mesh.sync_every * mesh.heartbeat_ms, spread.tick_ms);
    }
}
