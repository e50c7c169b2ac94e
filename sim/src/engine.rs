//! The discrete-event engine: one queue of timed events, one seeded ChaCha generator, one
//! virtual clock shared by every kernel.
//!
//! Virtual time runs in microseconds inside the engine (kernels see milliseconds since
//! [`EPOCH_MS`]). Events at the same time run in the order they were scheduled, so a run is a
//! pure function of its scenario and seed.

mod actions;
mod deliver;
mod finish;
mod sybil;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

use foldhash::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use blockend_kernel::kernel::VerdictCache;
use blockend_kernel::sync::{self, Protocol};
use blockend_kernel::{
    Block, BlockId, BlockStore, Config, Identity, Kernel, ManualClock, Observed, OldestLongest,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{self, AdversaryKind, Scenario, Senders};
use crate::error::Error;
use crate::network::{Bytes, Wire};
use crate::progress::Progress;
use crate::report::{Counters, Report};
use crate::topology::{self, PeerId};
use crate::trace::Trace;
use crate::workload::{self, AppOf, Workload};

/// Virtual time zero, as the kernels' clocks read it (ms since the Unix epoch).
pub const EPOCH_MS: u64 = 1_700_000_000_000;

/// What a peer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Honest,
    Adversary(AdversaryKind),
    /// Floods fresh identities ([`config::Sybil`]).
    Sybil,
}

enum Event {
    Deliver {
        to: PeerId,
        from: PeerId,
        epochs: (u32, u32),
        wire: Wire,
    },
    Flush {
        peer: PeerId,
        epoch: u32,
    },
    Create {
        peer: PeerId,
        n: u64,
    },
    Heartbeat {
        round: u64,
    },
    Split {
        groups: usize,
    },
    Heal {
        groups: usize,
    },
    Leave {
        peer: PeerId,
    },
    Rejoin {
        peer: PeerId,
    },
}

struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: the earliest (time, then scheduling order) comes out first.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A thread that checks signatures ahead into the shared verdict cache: the run is one
/// thread, and a signature check is a tenth of its work, so on a machine with a second core
/// each honest block is checked there while the events before its first delivery run. The
/// verdict is a function of the block alone, so the run's figures are the same with or without
/// it, whichever side checks a block first; it only moves work off the main thread.
pub(crate) struct Checker {
    blocks: std::sync::mpsc::SyncSender<Arc<Block>>,
    thread: std::thread::JoinHandle<()>,
}

/// Blocks waiting for the [`Checker`] at most; past that the main thread checks them.
const CHECKS_QUEUED: usize = 4_096;

impl Checker {
    /// A checker filling `cache`, or none on a single core.
    fn start(cache: &VerdictCache) -> Option<Self> {
        if std::thread::available_parallelism().map_or(1, usize::from) < 2 {
            return None;
        }
        let (blocks, rx) = std::sync::mpsc::sync_channel::<Arc<Block>>(CHECKS_QUEUED);
        let cache = cache.clone();
        let thread = std::thread::Builder::new()
            .name("blockend-sim-checker".into())
            .spawn(move || {
                for block in rx {
                    let _ = cache.check(&block);
                }
            })
            .ok()?;
        Some(Self { blocks, thread })
    }

    /// Queues `block` for a check. A full queue (the thread is behind) or a stopped thread
    /// drops it: the kernel that meets the block first checks it itself.
    pub(crate) fn check(&self, block: &Arc<Block>) {
        let _ = self.blocks.try_send(block.clone());
    }

    /// Stops the thread once it has drained its queue.
    pub(crate) fn stop(self) {
        drop(self.blocks);
        let _ = self.thread.join();
    }
}

pub(crate) struct Peer {
    pub kernel: Option<Kernel>,
    /// The store of a peer that left and will come back with it.
    pub parked: Option<Box<dyn BlockStore>>,
    pub protocol: Protocol<PeerId>,
    pub secret: [u8; 32],
    pub role: Role,
    pub online: bool,
    pub epoch: u32,
    pub neighbours: Vec<PeerId>,
    /// When each link (to `neighbours[i]`) is free to send again, µs.
    pub link_free: Vec<u64>,
    pub mesh: Vec<PeerId>,
    /// Peers a misbehaviour disconnected, both ways.
    pub banned: Vec<PeerId>,
    /// Pushed blocks waiting for the next dispatch: (sender, block, hop).
    pub inbox: Vec<(PeerId, Arc<Block>, u16)>,
    /// Gossip verdicts held open for blocks that wait in the kernel, oldest first: (since
    /// when, µs; tracked block). Entries already decided are skipped when met (see
    /// [`Simulation::expire_verdicts`]); `open_verdicts` counts the ones still open, at most
    /// `DISSEMINATION.max_open_verdicts`, as the node holds them.
    pub held_verdicts: std::collections::VecDeque<(u64, u32)>,
    pub open_verdicts: usize,
    pub flush_pending: bool,
    pub sent_messages: u64,
    /// Bytes this peer sent, by what they pay for.
    pub sent_bytes: Bytes,
    /// Tracked (honest) blocks this peer counts.
    pub count: u32,
    /// When `count` last grew, µs.
    pub last_gain: u64,
    pub churned: bool,
    /// A fresh honest peer that joins after a Sybil flood ([`config::Sybil::joiners`]).
    pub joiner: bool,
}

/// Honest blocks, which every honest peer must end up holding.
#[derive(Default)]
pub(crate) struct Tracked {
    /// Looked up several times per delivery: keyed by foldhash, not SipHash.
    pub ids: HashMap<BlockId, u32>,
    pub blocks: Vec<Arc<Block>>,
    /// Hop at which each peer first counted each block: `hops[block * peers + peer]`.
    pub hops: Vec<u16>,
    /// When each block was written, µs.
    pub created: Vec<u64>,
    /// Each time an honest peer newly counted a block it did not write: how many times at
    /// each hop (index = hop), for the report's histogram.
    pub hop_counts: Vec<u64>,
    /// The same events by virtual ms from the block's writing to its counting: (ms, times).
    pub delivery_ms: BTreeMap<u64, u64>,
    /// What gossipsub at each peer knows of each block, `pushed[block * peers + peer]`:
    /// [`UNSEEN`], [`PENDING`] (a pushed copy came, its verdict waits for the kernel's, as the
    /// node's does for a block that waits in the mempool) or [`DECIDED`] (forwarded or
    /// dropped). The first pushed copy of a block that validates is forwarded, even when the
    /// kernel already had it by sync: gossipsub's seen-cache is its own.
    pub pushed: Vec<u8>,
    /// Arrivals of tracked blocks at any peer, duplicates included.
    pub deliveries: u64,
    pub first_created: Option<u64>,
    pub last_created: u64,
}

/// What the oversized adversaries send: one message over the size limit, shared, and each
/// one's block over the body limit.
pub(crate) struct Oversized {
    pub bytes: Arc<Vec<u8>>,
    pub blocks: HashMap<PeerId, Arc<Block>>,
}

/// Not yet counted, in [`Tracked::hops`].
pub(crate) const NO_HOP: u16 = u16::MAX;

/// [`Tracked::pushed`]: no pushed copy came yet.
pub(crate) const UNSEEN: u8 = 0;
/// [`Tracked::pushed`]: a pushed copy came; its verdict waits for the kernel's.
pub(crate) const PENDING: u8 = 1;
/// [`Tracked::pushed`]: forwarded, or dropped.
pub(crate) const DECIDED: u8 = 2;

/// A simulation run: build it from a [`Scenario`], then [`Simulation::run`] it.
pub struct Simulation {
    pub(crate) scenario: Scenario,
    pub(crate) source: Option<PathBuf>,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) now: u64,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    /// Events in the queue other than heartbeats.
    pending: usize,
    /// Scripted events (creations, partitions, churn) not yet run.
    pub(crate) scripted: usize,
    pub(crate) peers: Vec<Peer>,
    clock: ManualClock,
    cache: VerdictCache,
    /// Checks the signatures of honest blocks as they are written, on another core, into
    /// `cache` (see [`Checker`]).
    pub(crate) checker: Option<Checker>,
    kernel_config: Config,
    pub(crate) sync_config: sync::Config,
    pub(crate) workload: Box<dyn Workload>,
    pub(crate) tracked: Tracked,
    /// Active partitions, by number of groups.
    pub(crate) partitions: Vec<usize>,
    pub(crate) counters: Counters,
    pub(crate) trace: Trace,
    pub(crate) progress: Progress,
    /// Blocks accepted plus wants sent, at the last anti-entropy round.
    activity_mark: u64,
    pub(crate) quiescent: bool,
    /// Adversary state: the forker's fork is done; the oversized adversary's shared payloads.
    pub(crate) forked: Vec<PeerId>,
    pub(crate) oversized: Option<Oversized>,
    /// The rejected-block writer's newest block and how many it wrote, per adversary.
    pub(crate) rejecting: BTreeMap<PeerId, (Arc<Block>, u64)>,
    /// The Sybil peers' flood and what became of it.
    pub(crate) flood: sybil::Flood,
}

impl Simulation {
    /// Builds the swarm a scenario describes with its ready-made workload.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a scenario that cannot be built, [`Error::Kernel`] if a kernel
    /// cannot open.
    pub fn new(scenario: Scenario) -> Result<Self, Error> {
        let workload = workload::ready_made(&scenario.workload);
        Self::with_workload(scenario, workload)
    }

    /// Builds the swarm with a user's own [`Workload`] (application and block bodies) in place
    /// of the ready-made one the scenario names.
    ///
    /// # Errors
    /// As [`Simulation::new`].
    pub fn with_workload(scenario: Scenario, workload: Box<dyn Workload>) -> Result<Self, Error> {
        scenario.check()?;
        let n = scenario.peers;
        let adversaries = scenario.adversary_count();
        if adversaries >= n {
            return Err(Error::Invalid {
                reason: format!("{adversaries} adversaries leave no honest peer among {n}"),
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(scenario.seed);
        let adjacency = topology::build(&scenario.topology, n, &mut rng)?;
        let mesh = topology::mesh(&adjacency, scenario.mesh.d, &mut rng);
        let clock = ManualClock::new(EPOCH_MS);
        let mut kernel_config = Config::default().with_snapshot_interval(usize::MAX);
        if let Some(bytes) = scenario.capacity_bytes {
            kernel_config = kernel_config.with_capacity_bytes(bytes);
        }
        let max_degree = adjacency.iter().map(Vec::len).max().unwrap_or(0);
        let sync_config = sync::Config::default()
            .with_push(false)
            .with_grace(sync::DISSEMINATION.grace_ms)
            .with_salt_seed(scenario.seed)
            .with_max_peers(max_degree.max(128));
        // Adversaries are the last ids (Sybil peers last of all); honest senders the first.
        let mut roles = vec![Role::Honest; n];
        let mut next = n - adversaries;
        for group in &scenario.adversaries {
            for _ in 0..group.count {
                roles[next] = Role::Adversary(group.kind);
                next += 1;
            }
        }
        for role in &mut roles[next..] {
            *role = Role::Sybil;
        }
        let honest = n - adversaries;
        let senders = match scenario.workload.senders {
            Senders::Count(k) => k.min(honest),
            Senders::All(_) => honest,
        };
        let mut sim = Self {
            scenario,
            source: None,
            rng,
            now: 0,
            queue: BinaryHeap::new(),
            seq: 0,
            pending: 0,
            scripted: 0,
            peers: Vec::with_capacity(n),
            clock,
            cache: VerdictCache::default(),
            checker: None,
            kernel_config,
            sync_config,
            workload,
            tracked: Tracked::default(),
            partitions: Vec::new(),
            counters: Counters::new(n),
            trace: Trace::default(),
            progress: Progress::new(false),
            activity_mark: 0,
            quiescent: false,
            forked: Vec::new(),
            oversized: None,
            rejecting: BTreeMap::new(),
            flood: sybil::Flood::default(),
        };
        for (p, (neighbours, mesh)) in adjacency.into_iter().zip(mesh).enumerate() {
            let secret: [u8; 32] = sim.rng.gen();
            let kernel = sim.open_kernel(secret, None)?;
            sim.peers.push(Peer {
                kernel: Some(kernel),
                parked: None,
                protocol: Protocol::new(sim.sync_config),
                secret,
                role: roles[p],
                online: true,
                epoch: 0,
                link_free: vec![0; neighbours.len()],
                neighbours,
                mesh,
                banned: Vec::new(),
                inbox: Vec::new(),
                held_verdicts: std::collections::VecDeque::new(),
                open_verdicts: 0,
                flush_pending: false,
                sent_messages: 0,
                sent_bytes: Bytes::default(),
                count: 0,
                last_gain: 0,
                churned: false,
                joiner: false,
            });
        }
        sim.sign_flood();
        sim.script(senders, honest);
        Ok(sim)
    }

    /// Names the scenario file, for the reproducing command line.
    pub fn with_source(mut self, path: impl Into<PathBuf>) -> Self {
        self.source = Some(path.into());
        self
    }

    /// Shows progress on stderr (a start line, a bar when stderr is a terminal, an end line).
    pub fn with_progress(mut self, on: bool) -> Self {
        self.progress = Progress::new(on);
        self
    }

    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        let file = self
            .source
            .as_ref()
            .map_or_else(|| "SCENARIO.toml".to_owned(), |p| p.display().to_string());
        format!(
            "blockend sim {file} --seed {} --peers {}",
            self.scenario.seed, self.scenario.peers
        )
    }

    pub(crate) fn open_kernel(
        &self,
        secret: [u8; 32],
        store: Option<Box<dyn BlockStore>>,
    ) -> Result<Kernel, Error> {
        let builder = Kernel::builder(&AppOf(&*self.workload))
            .with_clock(self.clock.clone())
            .with_identity(Identity::from_secret(secret))
            .with_config(self.kernel_config.clone())
            .with_verdict_cache(self.cache.clone());
        let builder = match self.scenario.retention {
            config::Retention::Observed => builder.with_retention(Observed),
            config::Retention::OldestLongest => builder.with_retention(OldestLongest),
        };
        let builder = match store {
            Some(store) => builder.with_boxed_store(store),
            None => builder,
        };
        Ok(builder.open()?)
    }

    /// Schedules the workload, partitions, churn and the first heartbeat.
    fn script(&mut self, senders: usize, honest: usize) {
        let workload = self.scenario.workload.clone();
        if workload.blocks_per_sender > 0 {
            for p in 0..senders {
                let offset = self.rng.gen_range(0..workload.interval_ms.max(1) * 1_000);
                self.schedule_scripted(
                    workload.start_ms * 1_000 + offset,
                    Event::Create {
                        peer: p as PeerId,
                        n: 0,
                    },
                );
            }
        }
        for partition in self.scenario.partitions.clone() {
            let groups = partition.groups;
            self.schedule_scripted(partition.at_ms * 1_000, Event::Split { groups });
            self.schedule_scripted(partition.heal_ms * 1_000, Event::Heal { groups });
        }
        if let Some(sybil) = self.scenario.sybil {
            // The last honest peers, never senders: offline and empty until after the flood.
            let joining = sybil.joiners.min(honest.saturating_sub(senders));
            for p in (honest - joining)..honest {
                let peer = p as PeerId;
                self.peers[p].joiner = true;
                self.schedule_scripted(0, Event::Leave { peer });
                self.schedule_scripted(sybil.join_ms * 1_000, Event::Rejoin { peer });
            }
        }
        if let Some(churn) = self.scenario.churn {
            // Non-senders among the honest peers leave; senders stay so their blocks exist.
            let candidates: Vec<usize> = (senders..honest).collect();
            let leaving = ((candidates.len() as f64) * churn.fraction).round() as usize;
            for &p in candidates.iter().rev().take(leaving) {
                let peer = p as PeerId;
                self.peers[p].churned = true;
                self.schedule_scripted(churn.leave_ms * 1_000, Event::Leave { peer });
                self.schedule_scripted(churn.rejoin_ms * 1_000, Event::Rejoin { peer });
            }
        }
        self.schedule(0, Event::Heartbeat { round: 0 });
    }

    fn schedule(&mut self, at: u64, event: Event) {
        if !matches!(event, Event::Heartbeat { .. }) {
            self.pending += 1;
        }
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            event,
        });
    }

    fn schedule_scripted(&mut self, at: u64, event: Event) {
        self.scripted += 1;
        self.schedule(at, event);
    }

    /// The virtual time in ms.
    pub(crate) fn now_ms(&self) -> u64 {
        self.now / 1_000
    }

    /// Runs to quiescence (or `max_time_ms`), checks the invariants and reports.
    ///
    /// # Errors
    /// [`Error::Kernel`] if a kernel's store fails. A broken invariant is not an error here:
    /// it is listed in [`Report::violations`] (the CLI turns it into [`Error::Invariant`]).
    pub fn run(mut self) -> Result<Report, Error> {
        let started = std::time::Instant::now();
        self.progress.start(&self.scenario, self.peers.len());
        self.checker = Checker::start(&self.cache);
        self.connect_all()?;
        let limit = self.scenario.max_time_ms.saturating_mul(1_000);
        while let Some(Scheduled { at, event, .. }) = self.queue.pop() {
            if at > limit {
                break;
            }
            self.now = at;
            self.clock.set(EPOCH_MS + self.now_ms());
            if !matches!(event, Event::Heartbeat { .. }) {
                self.pending -= 1;
            }
            if self.handle(event)? {
                break;
            }
        }
        if let Some(checker) = self.checker.take() {
            checker.stop();
        }
        self.finish(started)
    }

    /// Handles one event; true when the run is over.
    fn handle(&mut self, event: Event) -> Result<bool, Error> {
        match event {
            Event::Deliver {
                to,
                from,
                epochs,
                wire,
            } => self.deliver(to, from, epochs, wire)?,
            Event::Flush { peer, epoch } => {
                if self.peers[peer as usize].epoch == epoch {
                    self.flush(peer)?;
                }
            }
            Event::Create { peer, n } => {
                self.scripted -= 1;
                self.create(peer, n)?;
            }
            Event::Heartbeat { round } => return self.heartbeat(round),
            Event::Split { groups } => {
                self.scripted -= 1;
                self.trace.event(self.now, 4, groups as u64, 0);
                self.partitions.push(groups);
                self.counters.activity += 1;
            }
            Event::Heal { groups } => {
                self.scripted -= 1;
                self.trace.event(self.now, 5, groups as u64, 0);
                self.counters.activity += 1;
                if let Some(i) = self.partitions.iter().position(|g| *g == groups) {
                    self.partitions.remove(i);
                }
            }
            Event::Leave { peer } => {
                self.scripted -= 1;
                self.counters.activity += 1;
                self.leave(peer);
            }
            Event::Rejoin { peer } => {
                self.scripted -= 1;
                self.counters.activity += 1;
                self.rejoin(peer)?;
            }
        }
        Ok(false)
    }

    /// Mesh repair, adversaries and, every `sync_every` beats, a tick of every sync machine
    /// (anti-entropy, lost wants, held blocks, garbage collection, missing bodies). Returns true
    /// once the swarm is quiescent.
    fn heartbeat(&mut self, round: u64) -> Result<bool, Error> {
        self.repair_mesh();
        self.act_adversaries()?;
        if round.is_multiple_of(self.scenario.mesh.sync_every) {
            let activity = self.counters.activity + self.counters.wants;
            let adversaries_done = self
                .scenario
                .adversaries
                .iter()
                .all(|a| self.now_ms() >= a.until_ms)
                && self
                    .scenario
                    .sybil
                    .is_none_or(|s| self.now_ms() >= s.start_ms.max(s.until_ms));
            if round > 0
                && self.scripted == 0
                && self.pending == 0
                && activity == self.activity_mark
                && adversaries_done
            {
                self.quiescent = true;
                return Ok(true);
            }
            self.activity_mark = activity;
            for p in 0..self.peers.len() {
                if !self.peers[p].online {
                    continue;
                }
                self.expire_verdicts(p as PeerId);
                let step = self.step(p as PeerId, sync::Event::Tick)?;
                if let Some(report) = step.and_then(|s| s.report) {
                    self.account(p as PeerId, &report);
                    self.absorb(p as PeerId, &report, deliver::Hops::Held);
                    let released = self.gossip_verdicts(p as PeerId, &[], &report);
                    self.forward(p as PeerId, &released, &[]);
                }
            }
        }
        self.progress.update(self.now, self.delivered_fraction());
        let next = self.now + self.scenario.mesh.heartbeat_ms * 1_000;
        self.schedule(next, Event::Heartbeat { round: round + 1 });
        Ok(false)
    }

    fn delivered_fraction(&self) -> f64 {
        let total = self.tracked.blocks.len() as f64 * self.peers.len() as f64;
        if total == 0.0 {
            return 0.0;
        }
        self.peers.iter().map(|p| f64::from(p.count)).sum::<f64>() / total
    }

    /// Whether a partition separates `a` and `b` now.
    pub(crate) fn partitioned(&self, a: PeerId, b: PeerId) -> bool {
        let n = self.peers.len() as u64;
        self.partitions.iter().any(|&groups| {
            let g = groups as u64;
            u64::from(a) * g / n != u64::from(b) * g / n
        })
    }

    /// Sends `wire` from `from` to `to` over their link: queued behind earlier messages when
    /// bandwidth is limited, then delayed by the latency, possibly lost, duplicated or held
    /// back.
    pub(crate) fn send(&mut self, from: PeerId, to: PeerId, wire: Wire) {
        let (f, t) = (from as usize, to as usize);
        if !self.peers[f].online || self.peers[f].banned.contains(&to) {
            return;
        }
        let Ok(link) = self.peers[f].neighbours.binary_search(&to) else {
            return;
        };
        let parts = wire.bytes_by_kind();
        let bytes = parts.total() as usize;
        self.peers[f].sent_messages += 1;
        self.peers[f].sent_bytes += parts;
        if self.partitioned(from, to) {
            self.counters.dropped_partition += 1;
            return;
        }
        let network = self.scenario.network;
        if network.loss > 0.0 && self.rng.gen_bool(network.loss) {
            self.counters.lost += 1;
            return;
        }
        let depart = self.now.max(self.peers[f].link_free[link]);
        let sent = depart + network.transmit_us(bytes);
        self.peers[f].link_free[link] = sent;
        let mut at = sent + network.latency.sample_us(&mut self.rng);
        if network.reorder > 0.0 && self.rng.gen_bool(network.reorder) {
            at += self.rng.gen_range(0..=network.reorder_ms * 1_000);
        }
        let epochs = (self.peers[t].epoch, self.peers[f].epoch);
        if network.duplicate > 0.0 && self.rng.gen_bool(network.duplicate) {
            let again = at + network.latency.sample_us(&mut self.rng) / 2;
            self.counters.duplicated += 1;
            self.schedule(
                again,
                Event::Deliver {
                    to,
                    from,
                    epochs,
                    wire: wire.clone(),
                },
            );
        }
        self.schedule(
            at,
            Event::Deliver {
                to,
                from,
                epochs,
                wire,
            },
        );
    }

    /// Schedules a dispatch of `peer`'s inbox after the batching window.
    pub(crate) fn schedule_flush(&mut self, peer: PeerId) {
        let p = &mut self.peers[peer as usize];
        if p.flush_pending {
            return;
        }
        p.flush_pending = true;
        let epoch = p.epoch;
        let at = self.now + self.scenario.mesh.batch_ms * 1_000;
        self.schedule(at, Event::Flush { peer, epoch });
    }

    /// Schedules a sender's next block.
    pub(crate) fn schedule_create(&mut self, peer: PeerId, n: u64) {
        let at = self.now + self.scenario.workload.interval_ms * 1_000;
        self.schedule_scripted(at, Event::Create { peer, n });
    }
}
