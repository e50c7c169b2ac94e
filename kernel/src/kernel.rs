//! The kernel: identity, store and slices, and the engine that admits blocks and folds them.
//!
//! An application registers its slices by implementing [`Application`] (the Rust form of
//! picostack's `class Kernel extends SimpleKernel`) and adds actions as an extension trait on
//! [`Kernel`] that call [`Kernel::create_block`].
//!
//! The kernel keeps its index in memory and writes each dispatch through to the
//! [`BlockStore`] as one atomic [`Batch`].

mod capacity;
mod fold;
mod gc;
mod index;
mod mempool;
mod query;
mod report;
mod snapshot;
mod verdicts;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use rayon::prelude::*;

pub use capacity::{FeedStanding, Standing, MAX_FOLLOWS};
pub use gc::GcReport;
pub use query::BlockStatus;
pub use report::{Outcome, Report, Source};
pub use verdicts::{VerdictCache, DEFAULT_VERDICTS};

use self::fold::{Fold, Status};
use self::index::{key_of, Index, OrderKey};
use self::mempool::{InvalidCache, Mempool};
use crate::block::{Block, BlockError, BlockId};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::identity::{self, Identity, PublicKey};
use crate::retention::{Observed, Retention};
use crate::slice::{AnySlice, Cell, Slice};
use crate::store::{Batch, BlockStore, MemoryStore, StoreError};

/// Authors whose decompressed keys are cached; the cache is cleared when it grows past this.
const MAX_CACHED_KEYS: usize = 1 << 14;

/// What an application implements: which slices its kernel folds.
///
/// ```
/// use blockend_kernel::{Application, Context, Registry, Slice, Verdict};
///
/// struct Count;
/// impl Slice for Count {
///     type State = u64;
///     fn name(&self) -> &str { "count" }
///     fn initial(&self) -> u64 { 0 }
///     fn filter(&self, _: &Context<'_>, _: &u64) -> Verdict { Verdict::Accept }
///     fn reduce(&self, _: &Context<'_>, n: &mut u64) { *n += 1 }
///     fn commutative(&self) -> bool { true }
/// }
///
/// struct App;
/// impl Application for App {
///     fn register(&self, slices: &mut Registry) {
///         slices.add(Count);
///     }
/// }
/// ```
pub trait Application {
    /// Registers the application's slices.
    fn register(&self, slices: &mut Registry);
}

/// The slices an [`Application`] registers.
#[derive(Default)]
pub struct Registry {
    slices: Vec<Box<dyn AnySlice>>,
}

impl Registry {
    /// Registers a slice. Names must be unique within a kernel (checked when it opens).
    pub fn add<S: Slice>(&mut self, slice: S) -> &mut Self {
        self.slices.push(Box::new(Cell::new(slice)));
        self
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.slices.iter().map(|s| s.name()))
            .finish()
    }
}

/// A kernel-level failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed. After a failed commit the in-memory view may be ahead of the store;
    /// reopen the kernel from the store to get back to a consistent state.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Two slices share a name.
    #[error("two slices are named {name:?}")]
    DuplicateSlice {
        /// The shared name.
        name: String,
    },
    /// No slice of that type or name is registered.
    #[error("no slice {name:?} is registered")]
    UnknownSlice {
        /// What was asked for.
        name: String,
    },
    /// The store holds another identity than the one given.
    #[error("the store belongs to identity {stored}, not {given}")]
    IdentityMismatch {
        /// The identity in the store.
        stored: PublicKey,
        /// The identity given to the builder.
        given: PublicKey,
    },
    /// A new block was rejected by a slice; the state is unchanged and nothing was stored.
    #[error("slice {slice:?} rejected the block: {reason}")]
    Rejected {
        /// The rejecting slice.
        slice: String,
        /// Its reason.
        reason: String,
    },
    /// No slice accepts the new block; nothing was stored. `expected` holds what each slice
    /// that describes its bodies ([`crate::Slice::expects`]) accepts, as `slice: shape`.
    #[error("no slice accepts the block{}", expected_text(expected))]
    Ignored {
        /// What the slices accept, one `slice: shape` each (empty when none says).
        expected: Vec<String>,
    },
    /// The new block is invalid in itself (e.g. its body is over the size limit).
    #[error("invalid block: {0}")]
    Invalid(#[from] BlockError),
    /// The own feed is frozen by a fork (the identity signed two blocks at one height).
    #[error("own feed is frozen by a fork at seq {at}")]
    FeedFrozen {
        /// The height of the fork.
        at: u64,
    },
    /// Following one more author would pass the bound on followed authors.
    #[error("already following {max} authors, the most a kernel follows; unfollow one first")]
    TooManyFollows {
        /// The bound.
        max: usize,
    },
}

/// The tail of [`Error::Ignored`]'s message: what the slices expect, if any says.
fn expected_text(expected: &[String]) -> String {
    if expected.is_empty() {
        String::new()
    } else {
        format!("; expected {}", expected.join(", or "))
    }
}

/// The newest counted block of a feed, as exchanged by the sync protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Head {
    /// The feed's author.
    pub author: PublicKey,
    /// Height of the newest counted block.
    pub seq: u64,
    /// Its id.
    pub id: BlockId,
}

/// Counters, for logs, stats and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Blocks in the candidate set.
    pub blocks: usize,
    /// Feeds in the candidate set.
    pub feeds: usize,
    /// Blocks that counted on arrival (cumulative).
    pub accepted: u64,
    /// Duplicates recognised (cumulative).
    pub duplicates: u64,
    /// Intrinsically invalid blocks refused (cumulative).
    pub invalid: u64,
    /// Blocks a slice rejected on arrival (cumulative).
    pub rejected: u64,
    /// Signatures checked (cumulative).
    pub verified: u64,
    /// Signature verdicts taken from a shared [`VerdictCache`] instead of checked (cumulative).
    pub cached_verdicts: u64,
    /// Blocks waiting in the mempool now.
    pub mempool_blocks: usize,
    /// Bytes waiting in the mempool now.
    pub mempool_bytes: usize,
    /// Mempool evictions (cumulative).
    pub mempool_evicted: u64,
    /// Forks found (cumulative).
    pub forks: u64,
    /// Full re-folds forced by a block sorting before the oldest checkpoint, or a removal in a
    /// commutative kernel (cumulative).
    pub full_refolds: u64,
    /// Filter passes, replays included (cumulative).
    pub evaluations: u64,
    /// Reducer passes, replays included (cumulative).
    pub reductions: u64,
    /// Blocks whose bodies garbage collection dropped (cumulative).
    pub collected: u64,
    /// Feeds evicted for capacity (cumulative).
    pub evicted_feeds: u64,
    /// Blocks evicted with their feeds (cumulative).
    pub evicted_blocks: u64,
    /// Blocks refused because their feed is tombstoned (cumulative).
    pub tombstoned: u64,
    /// Blocks refused at the door because the store is full and their feed ranks below
    /// every feed it would have to push out (cumulative).
    pub over_capacity: u64,
    /// Bytes of own feeds held now (as counted for retention).
    pub own_bytes: u64,
    /// Bytes of other authors' feeds held now: what the capacity budget bounds.
    pub other_bytes: u64,
    /// Whether the last open restored a persisted snapshot (else it replayed every block).
    pub restored_from_snapshot: bool,
}

/// Builds a [`Kernel`]; see [`Kernel::builder`].
pub struct KernelBuilder {
    registry: Registry,
    store: Option<Box<dyn BlockStore>>,
    clock: Option<Arc<dyn Clock>>,
    identity: Option<Identity>,
    config: Config,
    retention: Option<Box<dyn Retention>>,
    verdicts: Option<VerdictCache>,
}

impl KernelBuilder {
    /// Shares signature verdicts with other kernels through `cache` (default: none). Meant for
    /// many kernels in one process, like the simulator's peers: a verdict depends only on the
    /// block's id and signature, so it is the same everywhere. See [`VerdictCache`].
    pub fn with_verdict_cache(mut self, cache: VerdictCache) -> Self {
        self.verdicts = Some(cache);
        self
    }
    /// The ranking that decides which feeds go when over capacity (default:
    /// [`crate::Observed`]).
    pub fn with_retention(mut self, retention: impl Retention) -> Self {
        self.retention = Some(Box::new(retention));
        self
    }
    /// Registers one more slice, beside the application's.
    pub fn with_slice<S: Slice>(mut self, slice: S) -> Self {
        self.registry.add(slice);
        self
    }
    /// The store (default: a fresh [`MemoryStore`]).
    pub fn with_store(mut self, store: impl BlockStore) -> Self {
        self.store = Some(Box::new(store));
        self
    }
    /// A store already boxed, e.g. one taken back with [`Kernel::close`].
    pub fn with_boxed_store(mut self, store: Box<dyn BlockStore>) -> Self {
        self.store = Some(store);
        self
    }
    /// The clock (default: [`SystemClock`]).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }
    /// The identity (default: the store's, or a fresh one saved to the store).
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }
    /// The configuration (default: [`Config::default`]).
    pub fn with_config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Opens the kernel: restores the identity and the blocks the store holds, and folds them.
    ///
    /// # Errors
    /// [`Error::DuplicateSlice`], [`Error::IdentityMismatch`] or [`Error::Store`].
    pub fn open(self) -> Result<Kernel, Error> {
        let mut names = HashSet::new();
        for slice in &self.registry.slices {
            if !names.insert(slice.name().to_owned()) {
                return Err(Error::DuplicateSlice {
                    name: slice.name().to_owned(),
                });
            }
        }
        let mut store = self.store.unwrap_or_else(|| Box::new(MemoryStore::new()));
        let identity = match (store.identity()?, self.identity) {
            (Some(secret), Some(given)) => {
                let stored = Identity::from_secret(secret);
                if stored.public() != given.public() {
                    return Err(Error::IdentityMismatch {
                        stored: stored.public(),
                        given: given.public(),
                    });
                }
                given
            }
            (Some(secret), None) => Identity::from_secret(secret),
            (None, given) => {
                let identity = given.unwrap_or_else(Identity::generate);
                store.set_identity(identity.secret())?;
                identity
            }
        };
        let config = self.config;
        let fold = Fold::new(
            self.registry.slices,
            config.checkpoint_interval,
            config.max_checkpoints,
        );
        let mut kernel = Kernel {
            identity,
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            index: Index::new(!fold.commutative),
            fold,
            mempool: Mempool::new(config.mempool_max_blocks, config.mempool_max_bytes),
            invalid: InvalidCache::new(config.invalid_cache),
            keys: HashMap::new(),
            retention: self.retention.unwrap_or_else(|| Box::new(Observed)),
            tombstones: BTreeMap::new(),
            follows: BTreeSet::new(),
            unrecorded_arrivals: Vec::new(),
            capacity_refusals: HashMap::new(),
            expiry: BTreeSet::new(),
            since_snapshot: 0,
            releasing_deferred: false,
            refold_spent: false,
            carried: None,
            gc_time: 0,
            stats: Stats::default(),
            verdicts: self.verdicts,
            config,
            store,
        };
        kernel.restore()?;
        Ok(kernel)
    }
}

/// Blocks inserted and removed during one dispatch, and the report being written.
#[derive(Default)]
struct Run {
    inserted: Vec<BlockId>,
    earliest: Option<OrderKey>,
    removed: Vec<Arc<Block>>,
    proofs: Vec<Arc<Block>>,
    /// Blocks rewritten in place by this run: bodies dropped by garbage collection, or
    /// restored from a full copy (see `Kernel::restore_body`).
    pruned: Vec<Arc<Block>>,
    timers: Vec<(u64, BlockId)>,
    timers_done: Vec<(u64, BlockId)>,
    gc_time: Option<u64>,
    tombstones: Vec<(PublicKey, Option<u64>)>,
    /// Feeds that arrived or left: their arrival numbers are written (or deleted).
    arrivals: BTreeSet<PublicKey>,
    /// Authors followed (`true`) or unfollowed.
    follows: Vec<(PublicKey, bool)>,
    /// Positions in `report.outcomes` to fill in once the fold has run, with the author.
    pending: Vec<(usize, PublicKey)>,
    /// A peer's block in this run re-folds everything: the rest of the run rides along.
    full_refold: bool,
    report: Report,
}

impl Run {
    fn touch(&mut self, key: OrderKey) {
        self.earliest = Some(self.earliest.map_or(key, |e| e.min(key)));
    }
    fn outcome(&mut self, id: BlockId, outcome: Outcome) {
        self.report.push(id, outcome);
    }
    fn blame(&mut self, source: Option<Source>, id: BlockId) {
        if let Some(source) = source {
            self.report.blame.push((source, id));
        }
    }
}

/// The engine: owns the identity, the store and the registered slices.
pub struct Kernel {
    identity: Identity,
    clock: Arc<dyn Clock>,
    store: Box<dyn BlockStore>,
    config: Config,
    index: Index,
    fold: Fold,
    mempool: Mempool,
    invalid: InvalidCache,
    keys: HashMap<PublicKey, Result<ed25519_dalek::VerifyingKey, BlockError>>,
    retention: Box<dyn Retention>,
    /// Evicted feeds, refused until the given time.
    tombstones: BTreeMap<PublicKey, u64>,
    /// Authors the user follows: ranked first, never refused for capacity by rank alone.
    follows: BTreeSet<PublicKey>,
    /// Feeds restored from a store that had no arrival number for them (written by an
    /// earlier version): numbered on open, written with the next commit.
    unrecorded_arrivals: Vec<PublicKey>,
    /// Feeds a block of which was refused for capacity, with the bytes held then: while the
    /// store holds at least as much, sync does not ask for them again (bounded).
    capacity_refusals: HashMap<PublicKey, u64>,
    /// Changes since the last persisted snapshot.
    since_snapshot: usize,
    /// Set while [`Kernel::poll`] places deferred blocks (see [`Outcome::Deferred`]).
    releasing_deferred: bool,
    /// Whether a peer's block re-folded everything since the last poll.
    refold_spent: bool,
    /// What a refused `create_block` committed (held blocks it released first), carried into
    /// the next report so drivers still push, blame and spread it.
    carried: Option<Report>,
    /// When each block with an expiry dies: (time, block).
    expiry: BTreeSet<(u64, BlockId)>,
    /// The time of the last garbage collection: digests are defined as of it.
    gc_time: u64,
    stats: Stats,
    verdicts: Option<VerdictCache>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("author", &self.identity.public())
            .field("blocks", &self.index.blocks.len())
            .finish_non_exhaustive()
    }
}

impl Kernel {
    /// Starts building a kernel for `app`.
    pub fn builder(app: &impl Application) -> KernelBuilder {
        let mut registry = Registry::default();
        app.register(&mut registry);
        KernelBuilder {
            registry,
            store: None,
            clock: None,
            identity: None,
            config: Config::default(),
            retention: None,
            verdicts: None,
        }
    }

    /// The kernel's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
    /// The kernel's own author key.
    pub fn author(&self) -> PublicKey {
        self.identity.public()
    }
    /// The kernel clock's now.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }
    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn restore(&mut self) -> Result<(), Error> {
        self.gc_time = self.store.gc_time()?;
        self.tombstones = self.store.tombstones()?.into_iter().collect();
        self.follows = self.store.follows()?.into_iter().collect();
        let arrivals: HashMap<PublicKey, u64> = self.store.arrivals()?.into_iter().collect();
        // Feeds the store has no number for come after every numbered one, in author order.
        self.index.next_arrival = arrivals.values().max().map_or(0, |n| n + 1);
        let mut blocks = self.store.blocks()?;
        // Parents before children; the store only ever holds blocks that were verified.
        blocks.sort_by_key(|b| (b.author(), b.seq(), b.id()));
        for block in blocks {
            let author = block.author();
            let feed_len = self.index.feeds.get(&author).map_or(0, |f| f.ids.len());
            let frozen = self.index.feeds.get(&author).and_then(|f| f.frozen_at);
            if frozen.is_some_and(|at| block.seq() >= at) {
                continue;
            }
            if (block.seq() as usize) < feed_len {
                let seq = block.seq();
                let existing =
                    self.index.blocks[&self.index.feeds[&author].ids[seq as usize]].clone();
                self.index.freeze(&author, seq);
                self.index.set_proof(&author, (existing, block));
                continue;
            }
            let linked = match block.parent() {
                None => true,
                Some(p) => self.index.blocks.contains_key(&p) && block.seq() as usize == feed_len,
            };
            if linked {
                self.index.insert(block);
            }
        }
        // Stored numbers first; then the feeds without one, numbered after all of them.
        let mut next = self.index.next_arrival;
        self.index.by_arrival.clear();
        for (author, feed) in &mut self.index.feeds {
            match arrivals.get(author) {
                Some(&arrival) => feed.arrival = arrival,
                None => {
                    feed.arrival = next;
                    next += 1;
                    self.unrecorded_arrivals.push(*author);
                }
            }
            self.index.by_arrival.insert(feed.arrival, *author);
        }
        self.index.next_arrival = next;
        // Expiry timers are derived from the blocks again, not read back: a timer the store
        // lost (a repair rebuilds from damaged table files without it) would leave its block
        // unexpired for good. A block already past the last collection is collected by the
        // next `gc`, through the usual path.
        let timers: Vec<(u64, BlockId)> = self
            .index
            .blocks
            .values()
            .filter(|block| block.body().is_some())
            .filter_map(|block| Some((self.expiry_of(block)?, block.id())))
            .collect();
        self.expiry = timers.into_iter().collect();
        let restored = match self.store.snapshot()? {
            Some(bytes) => self.restore_snapshot(&bytes),
            None => false,
        };
        if !restored {
            self.fold.refold_all(&self.index);
            self.fold.full_refolds = 0;
        }
        self.stats.restored_from_snapshot = restored;
        self.fold.newly_counted.clear();
        self.publish();
        Ok(())
    }

    /// Signs a block with `body` on the own feed, applies it, and stores it.
    ///
    /// The block is dated by the kernel's clock, or at its parent's time if the clock went
    /// back; it is never held as future-dated here (its parent already counts), so an own
    /// feed stays writable after the clock steps back.
    ///
    /// # Errors
    /// [`Error::Rejected`] or [`Error::Ignored`] when no slice takes the block (state and
    /// store are then unchanged), [`Error::Invalid`] for a body over the size limit,
    /// [`Error::FeedFrozen`], or [`Error::Store`].
    pub fn create_block(&mut self, body: impl Into<Vec<u8>>) -> Result<Arc<Block>, Error> {
        self.create_block_reported(body).map(|(block, _)| block)
    }

    /// [`Kernel::create_block`], with the report of everything the call changed: the new
    /// block and any held blocks whose time came and were released first (with their blame
    /// and fork proofs), for a driver's [`crate::sync::Event::Local`]. On an error the
    /// released blocks are committed all the same and their outcomes come with the next
    /// report (of a dispatch, a poll or a create).
    ///
    /// # Errors
    /// As [`Kernel::create_block`].
    pub fn create_block_reported(
        &mut self,
        body: impl Into<Vec<u8>>,
    ) -> Result<(Arc<Block>, Report), Error> {
        let body = body.into();
        if body.len() > self.config.max_body_bytes as usize {
            return Err(Error::Invalid(BlockError::TooLarge {
                len: body.len() as u64,
                max: u64::from(self.config.max_body_bytes),
            }));
        }
        let now = self.clock.now();
        let mut run = Run::default();
        // Blocks of the own feed held as future-dated (a copy from another device with the
        // same key) are released before the parent is read.
        self.release_due(now, &mut run);
        let author = self.author();
        let feed = self.index.feeds.get(&author);
        if let Some(at) = feed.and_then(|f| f.frozen_at) {
            self.fold_run(&mut run);
            let released = self.commit_run(run)?;
            self.carry(released);
            return Err(Error::FeedFrozen { at });
        }
        let parent = feed
            .and_then(|f| f.ids.last())
            .map(|id| &self.index.blocks[id])
            .map(|b| (b.id(), b.seq(), b.time()));
        let block = Arc::new(Block::sign(&self.identity, parent, now, body));
        let id = block.id();
        // Our own signature needs no check; the block goes through the same admission path,
        // judged at its own time when the clock is behind its parent's.
        let admitted_at = now.max(block.time());
        self.admit(block, None, admitted_at, &mut run);
        self.fold_run(&mut run);
        let refusal = match self.fold.status(&id) {
            Some(Status::Counted) => None,
            Some(Status::Rejected { slice, reason }) => Some(Error::Rejected {
                slice: self.fold.slices[*slice].name().to_owned(),
                reason: reason.to_string(),
            }),
            _ => Some(Error::Ignored {
                expected: self
                    .fold
                    .slices
                    .iter()
                    .filter_map(|s| s.expects().map(|shape| format!("{}: {shape}", s.name())))
                    .collect(),
            }),
        };
        if let Some(error) = refusal {
            // It did not count, so no state depends on it: removing it needs no re-fold.
            self.index.pop(&id);
            self.fold.forget(&id);
            run.inserted.retain(|i| *i != id);
            // Nor its expiry timer, in memory or in the store.
            for timer in run.timers.iter().filter(|(_, i)| *i == id) {
                self.expiry.remove(timer);
            }
            run.timers.retain(|(_, i)| *i != id);
            let mut released = self.commit_run(run)?;
            released.forget(&id);
            self.carry(released);
            return Err(error);
        }
        let report = self.commit_run(run)?;
        Ok((self.index.blocks[&id].clone(), report))
    }

    /// Offers blocks from anywhere (a peer, a file). Each is checked (structure, size,
    /// signature with the strict rules, link to its parent), admitted to the candidate set,
    /// parked in the mempool, or refused; then the slices fold what is new, and the dispatch is
    /// committed to the store as one batch. Signatures of larger batches are checked on all
    /// cores.
    ///
    /// # Errors
    /// Only [`Error::Store`]; everything about the blocks themselves is in the [`Report`].
    pub fn dispatch(&mut self, blocks: impl IntoIterator<Item = Block>) -> Result<Report, Error> {
        self.dispatch_shared(blocks.into_iter().map(Arc::new))
    }

    /// [`Kernel::dispatch`] for blocks that are already shared: the kernel keeps the `Arc`s
    /// it is given, so many kernels in one process (the simulator's peers) hold one copy of a
    /// block. Same checks, same report.
    ///
    /// # Errors
    /// Only [`Error::Store`]; everything about the blocks themselves is in the [`Report`].
    pub fn dispatch_shared(
        &mut self,
        blocks: impl IntoIterator<Item = Arc<Block>>,
    ) -> Result<Report, Error> {
        self.dispatch_inner(None, blocks)
    }

    /// [`Kernel::dispatch_shared`] for blocks sent by `source` (a peer, as the driver numbers
    /// them). The kernel remembers the source of every block that has to wait, and
    /// [`Report::blame`] names the source of each invalid block, including waiting blocks
    /// offered earlier and found invalid now.
    ///
    /// # Errors
    /// Only [`Error::Store`]; everything about the blocks themselves is in the [`Report`].
    pub fn dispatch_from(
        &mut self,
        source: Source,
        blocks: impl IntoIterator<Item = Arc<Block>>,
    ) -> Result<Report, Error> {
        self.dispatch_inner(Some(source), blocks)
    }

    fn dispatch_inner(
        &mut self,
        source: Option<Source>,
        blocks: impl IntoIterator<Item = Arc<Block>>,
    ) -> Result<Report, Error> {
        let now = self.clock.now();
        let mut run = Run::default();
        self.release_due(now, &mut run);
        let mut seen = foldhash::HashSet::default();
        let mut unchecked = Vec::new();
        let mut known = Vec::new();
        for block in blocks {
            match self.screen(&block, now, &mut seen) {
                Screen::Done(outcome) => {
                    if outcome.is_invalid() {
                        run.blame(source, block.id());
                    }
                    run.outcome(block.id(), outcome);
                }
                Screen::Verify => unchecked.push(block),
                Screen::Verified => known.push(block),
            }
        }
        let verdicts = self.verify(&unchecked);
        for (block, verdict) in unchecked.into_iter().zip(verdicts) {
            match verdict {
                Ok(()) => self.admit(block, source, now, &mut run),
                Err(error) => self.refuse(&block, error, source, &mut run),
            }
        }
        for block in known {
            self.admit(block, source, now, &mut run);
        }
        self.fold_run(&mut run);
        self.commit_run(run)
    }

    /// Checks signatures with the strict rules, taking what a shared [`VerdictCache`] already
    /// knows and adding what it learns.
    fn verify(&mut self, blocks: &[Arc<Block>]) -> Vec<Result<(), BlockError>> {
        let Some(cache) = self.verdicts.clone() else {
            self.stats.verified += blocks.len() as u64;
            return self.verify_all(blocks);
        };
        let mut verdicts = cache.get_all(blocks);
        let missing: Vec<Arc<Block>> = blocks
            .iter()
            .zip(&verdicts)
            .filter(|(_, v)| v.is_none())
            .map(|(b, _)| b.clone())
            .collect();
        self.stats.verified += missing.len() as u64;
        self.stats.cached_verdicts += (blocks.len() - missing.len()) as u64;
        let checked = self.verify_all(&missing);
        cache.insert_all(missing.iter().zip(&checked));
        let mut checked = checked.into_iter();
        verdicts
            .iter_mut()
            .map(|v| match v.take() {
                Some(verdict) => verdict,
                None => checked.next().expect("one check per missing verdict"),
            })
            .collect()
    }

    /// Checks signatures with the strict rules, on all cores for larger batches. Authors' keys
    /// are decompressed and checked for weakness once, then cached.
    fn verify_all(&mut self, blocks: &[Arc<Block>]) -> Vec<Result<(), BlockError>> {
        if self.keys.len() > MAX_CACHED_KEYS {
            self.keys.clear();
        }
        for block in blocks {
            let author = block.author();
            self.keys
                .entry(author)
                .or_insert_with(|| author.verifying_key());
        }
        let keys = &self.keys;
        let check = |block: &Arc<Block>| {
            let key = keys[&block.author()].as_ref().map_err(Clone::clone)?;
            identity::verify_with(key, &block.id(), block.signature())
        };
        if blocks.len() >= self.config.parallel_verify_threshold {
            blocks.par_iter().map(check).collect()
        } else {
            blocks.iter().map(check).collect()
        }
    }

    /// Releases held blocks whose time has come and places the deferred ones (see
    /// [`Kernel::next_wakeup`] and [`Outcome::Deferred`]). Drivers call it on their tick.
    ///
    /// # Errors
    /// Only [`Error::Store`].
    pub fn poll(&mut self) -> Result<Report, Error> {
        let now = self.clock.now();
        let mut run = Run::default();
        self.release_due(now, &mut run);
        // Blocks deferred because each would re-fold everything: all of them at once, for
        // one re-fold.
        self.releasing_deferred = true;
        for (block, source) in self.mempool.take_deferred() {
            self.admit(block, source, now, &mut run);
        }
        self.releasing_deferred = false;
        self.refold_spent = false;
        self.fold_run(&mut run);
        self.commit_run(run)
    }

    /// When [`Kernel::poll`] has work: the time the next held block's time comes, or now
    /// when blocks wait for a poll ([`Outcome::Deferred`]); `None` if nothing waits.
    pub fn next_wakeup(&self) -> Option<u64> {
        if self.mempool.has_deferred() {
            return Some(self.clock.now());
        }
        self.mempool.next_due()
    }

    /// The cheap checks: structure, cached invalid, size, duplicate, tombstone, frozen feed.
    ///
    /// A copy of a held block (stored, waiting in the mempool, a fork proof, or earlier in this
    /// dispatch) is a duplicate only if it carries the same signature and brings nothing the
    /// held copy lacks: a full copy of a block held without its body goes on to restore the
    /// body, and a copy with another signature goes on to verification, so a forged copy is
    /// found invalid instead of passing as a duplicate.
    fn screen(
        &mut self,
        block: &Block,
        now: u64,
        seen: &mut foldhash::HashSet<([u8; 32], bool)>,
    ) -> Screen {
        let id = block.id();
        // The common case first: a copy of a block held, same signature, nothing to add. Its
        // structure and size were checked when the held copy came (decoding recomputes the id
        // and body hash, so the copy is the same block), so it costs one lookup, not a hash.
        if let Some(held) = self.index.blocks.get(&id) {
            if held.signature() == block.signature()
                && (held.body().is_some() || block.body().is_none())
            {
                self.stats.duplicates += 1;
                return Screen::Done(Outcome::Duplicate);
            }
        }
        let fingerprint = block.fingerprint();
        if let Some(error) = self.invalid.get(&fingerprint) {
            self.stats.invalid += 1;
            return Screen::Done(Outcome::Invalid(error.clone()));
        }
        let size = if block.header().body_len > self.config.max_body_bytes {
            Err(BlockError::TooLarge {
                len: u64::from(block.header().body_len),
                max: u64::from(self.config.max_body_bytes),
            })
        } else {
            Ok(())
        };
        if let Err(error) = block.check_structure().and(size) {
            self.invalid.insert(fingerprint, error.clone());
            self.stats.invalid += 1;
            return Screen::Done(Outcome::Invalid(error));
        }
        // Copies within one batch are told apart by fingerprint and body, not id: a forged copy
        // offered next to the honest block must not shadow it, nor a header-only copy the full.
        if !seen.insert((fingerprint, block.body().is_some())) {
            self.stats.duplicates += 1;
            return Screen::Done(Outcome::Duplicate);
        }
        let feed = self.index.feeds.get(&block.author());
        let proof = feed
            .and_then(|f| f.proof.as_ref())
            .and_then(|(a, b)| [a, b].into_iter().find(|p| p.id() == id));
        let held = self
            .index
            .blocks
            .get(&id)
            .or_else(|| self.mempool.get(&id))
            .or(proof);
        if let Some(held) = held {
            if held.signature() != block.signature() {
                return Screen::Verify;
            }
            let brings_body = held.body().is_none() && block.body().is_some();
            if !brings_body {
                self.stats.duplicates += 1;
                return Screen::Done(Outcome::Duplicate);
            }
            // Same id and signature as a copy already verified: no second check.
            return Screen::Verified;
        }
        if let Some(&until) = self.tombstones.get(&block.author()) {
            if until > now {
                self.stats.tombstoned += 1;
                return Screen::Done(Outcome::Tombstoned { until });
            }
        }
        if let Some(at) = feed.and_then(|f| f.frozen_at) {
            if block.seq() >= at {
                return Screen::Done(Outcome::Frozen { at });
            }
        }
        // A block of a feed not held, with no room for that feed, is refused before its
        // signature is checked: a flood of fresh feeds (or of orphans that claim to extend
        // them) into a full store costs a lookup per block, not a verification and a mempool
        // slot. Nothing is remembered of an unverified block (anyone can name any author).
        // Blocks of held feeds are ranked in `admit`, once verified; a fork never is (it
        // shrinks its feed).
        if feed.is_none() && self.no_room_for(block) {
            self.stats.over_capacity += 1;
            return Screen::Done(Outcome::OverCapacity);
        }
        Screen::Verify
    }

    fn refuse(&mut self, block: &Block, error: BlockError, source: Option<Source>, run: &mut Run) {
        self.invalid.insert(block.fingerprint(), error.clone());
        self.stats.invalid += 1;
        run.blame(source, block.id());
        run.outcome(block.id(), Outcome::Invalid(error));
    }

    fn release_due(&mut self, now: u64, run: &mut Run) {
        for (block, source) in self.mempool.take_due(now) {
            self.admit(block, source, now, run);
        }
    }

    /// Places a verified block: held, orphaned, refused for its link, a fork proof, or into C
    /// (and then stitches in the orphans that waited for it, each with its own source).
    fn admit(&mut self, block: Arc<Block>, source: Option<Source>, now: u64, run: &mut Run) {
        let mut work = vec![(block, source)];
        while let Some((block, source)) = work.pop() {
            let id = block.id();
            if self.restores_body(&block) {
                self.restore_body(block, run);
                continue;
            }
            if block.body().is_some() {
                // A full copy of a block held without its body that expired here: the body
                // stays gone, and is no longer wanted.
                self.index.missing.remove(&id);
            }
            if let Some(waiting) = self.mempool.restore_body(&block) {
                // The header-only copy waits; it now waits with its body.
                let outcome = match waiting {
                    Some(_) => Outcome::TimestampFromFuture {
                        time: block.time(),
                        now,
                    },
                    None => Outcome::WaitingForParent,
                };
                run.outcome(id, outcome);
                continue;
            }
            if self.index.blocks.contains_key(&id) || self.mempool.contains(&id) {
                // Another valid copy of the same block (same id) got here first.
                self.stats.duplicates += 1;
                run.outcome(id, Outcome::Duplicate);
                continue;
            }
            let author = block.author();
            let feed = self.index.feeds.get(&author);
            if feed
                .and_then(|f| f.proof.as_ref())
                .is_some_and(|(a, b)| a.id() == id || b.id() == id)
            {
                self.stats.duplicates += 1;
                run.outcome(id, Outcome::Duplicate);
                continue;
            }
            if let Some(at) = feed.and_then(|f| f.frozen_at) {
                if block.seq() >= at {
                    run.outcome(id, Outcome::Frozen { at });
                    continue;
                }
            }
            // The screen checks tombstones on arrival; a block that waited (an orphan, a held
            // block) is checked again here, or an evicted feed would come back through the
            // mempool the moment it was tombstoned.
            if let Some(&until) = self.tombstones.get(&author) {
                if until > now {
                    self.stats.tombstoned += 1;
                    run.outcome(id, Outcome::Tombstoned { until });
                    continue;
                }
            }
            let limit = now.saturating_add(self.config.max_clock_skew_ms);
            if block.time() > limit {
                let time = block.time();
                self.mempool
                    .hold(block, time - self.config.max_clock_skew_ms, source);
                run.outcome(id, Outcome::TimestampFromFuture { time, now });
                continue;
            }
            // Ranked before it is admitted: a block whose feed would be among the first to go
            // to make room for it is refused (an orphan too: its parent would need the room
            // first), and nothing it would have pushed out goes. A fork proof is not growth.
            let held_len = feed.map_or(0, |f| f.ids.len());
            if block.seq() as usize >= held_len && self.no_room_for(&block) {
                self.refused_for_capacity(author);
                run.outcome(id, Outcome::OverCapacity);
                continue;
            }
            if let Some(parent_id) = block.parent() {
                let Some(parent) = self.index.blocks.get(&parent_id) else {
                    self.mempool.add_orphan(block, source);
                    run.outcome(id, Outcome::WaitingForParent);
                    continue;
                };
                if let Err(error) = check_parent(parent, &block) {
                    self.refuse(&block, error, source, run);
                    continue;
                }
            }
            let seq = block.seq();
            let feed_len = feed.map_or(0, |f| f.ids.len());
            if (seq as usize) < feed_len {
                self.fork(block, run);
                continue;
            }
            // A peer's block that would re-fold every retained block of an order-sensitive
            // fold (a backdated one): the first dispatch of such blocks since the last poll
            // re-folds at once, later ones wait for the next poll, so peers sending one per
            // message buy at most two full re-folds per tick, not one per message. Local
            // dispatches (no source) are never deferred.
            if source.is_some()
                && !self.releasing_deferred
                && !run.full_refold
                && self.index.blocks.len() >= self.config.checkpoint_interval
                && self.fold.would_refold_all(key_of(&block))
            {
                if self.refold_spent {
                    self.mempool.defer(block, source);
                    run.outcome(id, Outcome::Deferred);
                    continue;
                }
                self.refold_spent = true;
                run.full_refold = true;
            }
            if self.index.is_new_feed(&author) {
                run.arrivals.insert(author);
            }
            let block = self.schedule(block, run);
            run.touch(key_of(&block));
            self.index.insert(block);
            run.inserted.push(id);
            run.pending.push((run.report.outcomes.len(), author));
            run.outcome(id, Outcome::Accepted);
            work.extend(self.mempool.take_children(&id));
        }
    }

    /// `block` proves a fork: a valid block at a height where the feed already holds another.
    /// The feed is frozen at that height, the pair is kept as proof, and a pair from a fork
    /// found higher up before is deleted (this one supersedes it).
    fn fork(&mut self, block: Arc<Block>, run: &mut Run) {
        let (author, seq, id) = (block.author(), block.seq(), block.id());
        let existing = self.index.feeds[&author].ids[seq as usize];
        let existing = self.index.blocks[&existing].clone();
        for removed in self.index.freeze(&author, seq) {
            self.fold.forget_status(&removed.id());
            run.touch(key_of(&removed));
            if removed.id() != existing.id() {
                run.removed.push(removed);
            }
        }
        let pair = (existing.clone(), block.clone());
        if let Some((a, b)) = self.index.set_proof(&author, pair) {
            run.removed.extend([a, b]);
        }
        // Both halves are stored: the existing one may have been inserted by this very
        // dispatch and so not be in the store yet.
        run.proofs.extend([existing.clone(), block.clone()]);
        run.report.proofs.extend([existing, block]);
        self.stats.forks += 1;
        run.outcome(id, Outcome::Fork { seq });
    }

    fn fold_run(&mut self, run: &mut Run) {
        self.fold.newly_counted.clear();
        self.enforce_capacity(run);
        let removed: HashSet<BlockId> = run.removed.iter().map(|b| b.id()).collect();
        if !removed.is_empty() {
            let expiry = &mut self.expiry;
            expiry.retain(|timer| {
                let gone = removed.contains(&timer.1);
                if gone {
                    run.timers_done.push(*timer);
                }
                !gone
            });
        }
        let changed: Vec<BlockId> = run
            .removed
            .iter()
            .chain(&run.pruned)
            .chain(&run.proofs)
            .map(|b| b.id())
            .collect();
        self.fold
            .update(&self.index, &run.inserted, run.earliest, &changed);
        // Later runs must not see this one's bookkeeping.
        run.earliest = None;
    }

    fn commit_run(&mut self, mut run: Run) -> Result<Report, Error> {
        for &(pos, author) in &run.pending {
            let id = run.report.outcomes[pos].0;
            let outcome = match self.fold.status(&id) {
                Some(Status::Counted) => {
                    self.stats.accepted += 1;
                    Outcome::Accepted
                }
                Some(Status::Ignored) => Outcome::Ignored,
                Some(Status::Rejected { slice, reason }) => {
                    self.stats.rejected += 1;
                    Outcome::Rejected {
                        slice: self.fold.slices[*slice].name().to_owned(),
                        reason: reason.to_string(),
                    }
                }
                Some(Status::Collected) => Outcome::Collected,
                // Inserted, then evicted for capacity in the same dispatch.
                None if self.tombstones.contains_key(&author) => Outcome::Evicted,
                // Inserted, then cut off by a fork found later in the same dispatch.
                None => Outcome::Frozen {
                    at: self
                        .index
                        .feeds
                        .get(&author)
                        .and_then(|f| f.frozen_at)
                        .unwrap_or_default(),
                },
            };
            run.report.outcomes[pos].1 = outcome;
        }
        run.report.accepted = self
            .fold
            .newly_counted
            .drain(..)
            .filter_map(|id| self.index.blocks.get(&id).cloned())
            .collect();
        self.since_snapshot += run.inserted.len() + run.removed.len() + run.pruned.len();
        let mut batch = self.batch_of(&run);
        batch.gc_time = run.gc_time;
        if self.since_snapshot >= self.config.snapshot_interval {
            batch.snapshot = Some(self.encode_snapshot());
            self.since_snapshot = 0;
        }
        let mut touched: Vec<PublicKey> = batch
            .put
            .iter()
            .map(|b| b.author())
            .chain(run.removed.iter().map(|b| b.author()))
            .collect();
        touched.sort_unstable();
        touched.dedup();
        batch.heads = touched
            .into_iter()
            .map(|author| {
                let head = self.index.feeds.get(&author).and_then(|f| {
                    let id = f.ids.last()?;
                    Some((f.ids.len() as u64 - 1, *id))
                });
                (author, head)
            })
            .collect();
        if !batch.is_empty() {
            self.store.commit(batch)?;
            self.unrecorded_arrivals.clear();
        }
        self.publish();
        let mut report = run.report;
        if let Some(carried) = self.carried.take() {
            let mut merged = carried;
            merged.append(report);
            report = merged;
        }
        Ok(report)
    }

    /// Keeps what a refused `create_block` committed for the next report.
    fn carry(&mut self, released: Report) {
        let empty = released.outcomes.is_empty()
            && released.accepted.is_empty()
            && released.proofs.is_empty()
            && released.blame.is_empty();
        if !empty {
            self.carried = Some(released);
        }
    }

    /// The writes of a run, as the end state it left: every block, timer and tombstone the run
    /// touched appears once, as what the kernel holds now (put) or as gone (delete), so a
    /// commit's effect never depends on the order of operations inside the batch (a body
    /// restored and the feed evicted in one dispatch must not re-put the evicted block).
    fn batch_of(&self, run: &Run) -> Batch {
        let mut batch = Batch::default();
        let mut touched: BTreeMap<BlockId, PublicKey> = BTreeMap::new();
        for block in run.proofs.iter().chain(&run.pruned).chain(&run.removed) {
            touched.insert(block.id(), block.author());
        }
        for id in &run.inserted {
            if let Some(block) = self.index.blocks.get(id) {
                touched.insert(*id, block.author());
            }
        }
        for (id, author) in touched {
            match self.held(&id, &author) {
                Some(block) => batch.put.push(block),
                None => batch.delete.push(id),
            }
        }
        let timers: BTreeSet<(u64, BlockId)> =
            run.timers.iter().chain(&run.timers_done).copied().collect();
        for timer in timers {
            if self.expiry.contains(&timer) {
                batch.timers.push(timer);
            } else {
                batch.timers_done.push(timer);
            }
        }
        let authors: BTreeSet<PublicKey> = run.tombstones.iter().map(|(a, _)| *a).collect();
        batch.tombstones = authors
            .into_iter()
            .map(|a| (a, self.tombstones.get(&a).copied()))
            .collect();
        batch.arrivals = run
            .arrivals
            .iter()
            .chain(&self.unrecorded_arrivals)
            .map(|a| (*a, self.index.feeds.get(a).map(|f| f.arrival)))
            .collect();
        let follows: BTreeSet<PublicKey> = run.follows.iter().map(|(a, _)| *a).collect();
        batch.follows = follows
            .into_iter()
            .map(|a| (a, self.follows.contains(&a)))
            .collect();
        batch
    }

    /// The block the kernel holds under `id` (in the candidate set or as half of a fork
    /// proof), as it should be stored.
    fn held(&self, id: &BlockId, author: &PublicKey) -> Option<Arc<Block>> {
        if let Some(block) = self.index.blocks.get(id) {
            return Some(block.clone());
        }
        let (a, b) = self.index.feeds.get(author)?.proof.as_ref()?;
        [a, b].into_iter().find(|p| p.id() == *id).cloned()
    }

    fn publish(&mut self) {
        for slice in &mut self.fold.slices {
            slice.publish();
        }
    }
}

/// What the cheap checks decided about one offered block.
enum Screen {
    /// Decided without a signature check.
    Done(Outcome),
    /// Needs a signature check.
    Verify,
    /// A copy of a block already verified (same id and signature) that may bring its body.
    Verified,
}

/// The intrinsic checks that need the parent: same author, next seq, time not before it.
fn check_parent(parent: &Block, block: &Block) -> Result<(), BlockError> {
    if parent.author() != block.author() {
        return Err(BlockError::ForeignParent);
    }
    if Some(block.seq()) != parent.seq().checked_add(1) {
        return Err(BlockError::SeqMismatch {
            seq: block.seq(),
            parent_seq: parent.seq(),
        });
    }
    if block.time() < parent.time() {
        return Err(BlockError::TimeBeforeParent {
            time: block.time(),
            parent_time: parent.time(),
        });
    }
    Ok(())
}
