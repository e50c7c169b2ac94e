//! The kernel: identity, store and slices, and the engine that admits blocks and folds them.
//!
//! An application registers its slices by implementing [`Application`] (the Rust form of
//! picostack's `class Kernel extends SimpleKernel`) and adds actions as an extension trait on
//! [`Kernel`] that call [`Kernel::create_block`].
//!
//! The kernel keeps its index in memory and writes each dispatch through to the
//! [`BlockStore`] as one atomic [`Batch`].

mod fold;
mod index;
mod mempool;
mod report;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use rayon::prelude::*;

pub use report::{Outcome, Report};

use self::fold::{Fold, Status};
use self::index::{key_of, Index, OrderKey};
use self::mempool::{InvalidCache, Mempool};
use crate::block::{Block, BlockError, BlockId};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::identity::{self, Identity, PublicKey};
use crate::slice::{AnySlice, Cell, Digest, Slice, Subscription};
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
    /// No slice accepts the new block; nothing was stored.
    #[error("no slice accepts the block")]
    Ignored,
    /// The new block is invalid in itself (e.g. its body is over the size limit).
    #[error("invalid block: {0}")]
    Invalid(#[from] BlockError),
    /// The own feed is frozen by a fork (the identity signed two blocks at one height).
    #[error("own feed is frozen by a fork at seq {at}")]
    FeedFrozen {
        /// The height of the fork.
        at: u64,
    },
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
}

/// What a garbage collection did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcReport {
    /// Blocks whose bodies were dropped (their headers stay, so the chains have no gap).
    pub collected: usize,
}

/// Builds a [`Kernel`]; see [`Kernel::builder`].
pub struct KernelBuilder {
    registry: Registry,
    store: Option<Box<dyn BlockStore>>,
    clock: Option<Arc<dyn Clock>>,
    identity: Option<Identity>,
    config: Config,
}

impl KernelBuilder {
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
        let mut kernel = Kernel {
            identity,
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            index: Index::default(),
            fold: Fold::new(
                self.registry.slices,
                config.checkpoint_interval,
                config.max_checkpoints,
            ),
            mempool: Mempool::new(config.mempool_max_blocks, config.mempool_max_bytes),
            invalid: InvalidCache::new(config.invalid_cache),
            keys: HashMap::new(),
            expiry: BTreeSet::new(),
            gc_time: 0,
            stats: Stats::default(),
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
    /// Blocks whose bodies were dropped by this run's garbage collection.
    pruned: Vec<Arc<Block>>,
    timers: Vec<(u64, BlockId)>,
    timers_done: Vec<(u64, BlockId)>,
    gc_time: Option<u64>,
    /// Positions in `report.outcomes` to fill in once the fold has run, with the author.
    pending: Vec<(usize, PublicKey)>,
    report: Report,
}

impl Run {
    fn touch(&mut self, key: OrderKey) {
        self.earliest = Some(self.earliest.map_or(key, |e| e.min(key)));
    }
    fn outcome(&mut self, id: BlockId, outcome: Outcome) {
        self.report.outcomes.push((id, outcome));
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
    /// When each block with an expiry dies: (time, block).
    expiry: BTreeSet<(u64, BlockId)>,
    /// The time of the last garbage collection: digests are defined as of it.
    gc_time: u64,
    stats: Stats,
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
        self.expiry = self.store.timers()?.into_iter().collect();
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
                let feed = self.index.feeds.get_mut(&author).expect("feed exists");
                feed.proof = Some((existing, block));
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
        self.fold.refold_all(&self.index);
        self.fold.full_refolds = 0;
        self.fold.newly_counted.clear();
        self.publish();
        Ok(())
    }

    /// Signs a block with `body` on the own feed, applies it, and stores it.
    ///
    /// # Errors
    /// [`Error::Rejected`] or [`Error::Ignored`] when no slice takes the block (state and
    /// store are then unchanged), [`Error::Invalid`] for a body over the size limit,
    /// [`Error::FeedFrozen`], or [`Error::Store`].
    pub fn create_block(&mut self, body: impl Into<Vec<u8>>) -> Result<Arc<Block>, Error> {
        let body = body.into();
        if body.len() > self.config.max_body_bytes as usize {
            return Err(Error::Invalid(BlockError::TooLarge {
                len: body.len() as u64,
                max: u64::from(self.config.max_body_bytes),
            }));
        }
        let author = self.author();
        let feed = self.index.feeds.get(&author);
        if let Some(at) = feed.and_then(|f| f.frozen_at) {
            return Err(Error::FeedFrozen { at });
        }
        let parent = feed
            .and_then(|f| f.ids.last())
            .map(|id| &self.index.blocks[id])
            .map(|b| (b.id(), b.seq(), b.time()));
        let now = self.clock.now();
        let block = Block::sign(&self.identity, parent, now, body);
        let id = block.id();
        let mut run = Run::default();
        self.release_due(now, &mut run);
        // Our own signature needs no check; the block goes through the same admission path.
        self.admit(block, now, &mut run);
        self.fold_run(&mut run);
        let refusal = match self.fold.status.get(&id) {
            Some(Status::Counted) => None,
            Some(Status::Rejected { slice, reason }) => Some(Error::Rejected {
                slice: self.fold.slices[*slice].name().to_owned(),
                reason: reason.to_string(),
            }),
            _ => Some(Error::Ignored),
        };
        if let Some(error) = refusal {
            // It did not count, so no state depends on it: removing it needs no re-fold.
            self.index.pop(&id);
            self.fold.status.remove(&id);
            run.inserted.retain(|i| *i != id);
            self.commit_run(run)?;
            return Err(error);
        }
        self.commit_run(run)?;
        Ok(self.index.blocks[&id].clone())
    }

    /// Offers blocks from anywhere (a peer, a file). Each is checked (size, signature with the
    /// strict rules, link to its parent), admitted to the candidate set, parked in the mempool,
    /// or refused; then the slices fold what is new, and the dispatch is committed to the store
    /// as one batch. Signatures of larger batches are checked on all cores.
    ///
    /// # Errors
    /// Only [`Error::Store`]; everything about the blocks themselves is in the [`Report`].
    pub fn dispatch(&mut self, blocks: impl IntoIterator<Item = Block>) -> Result<Report, Error> {
        let now = self.clock.now();
        let mut run = Run::default();
        self.release_due(now, &mut run);
        let mut seen = HashSet::new();
        let mut candidates = Vec::new();
        for block in blocks {
            match self.screen(&block, &mut seen) {
                Some(outcome) => run.outcome(block.id(), outcome),
                None => candidates.push(block),
            }
        }
        let verdicts = self.verify(&candidates);
        self.stats.verified += candidates.len() as u64;
        for (block, verdict) in candidates.into_iter().zip(verdicts) {
            match verdict {
                Ok(()) => self.admit(block, now, &mut run),
                Err(error) => self.refuse(&block, error, &mut run),
            }
        }
        self.fold_run(&mut run);
        self.commit_run(run)
    }

    /// Checks signatures with the strict rules, on all cores for larger batches. Authors' keys
    /// are decompressed and checked for weakness once, then cached.
    fn verify(&mut self, blocks: &[Block]) -> Vec<Result<(), BlockError>> {
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
        let check = |block: &Block| {
            let key = keys[&block.author()].as_ref().map_err(Clone::clone)?;
            identity::verify_with(key, &block.id(), block.signature())
        };
        if blocks.len() >= self.config.parallel_verify_threshold {
            blocks.par_iter().map(check).collect()
        } else {
            blocks.iter().map(check).collect()
        }
    }

    /// Releases held blocks whose time has come (see [`Kernel::next_wakeup`]).
    ///
    /// # Errors
    /// Only [`Error::Store`].
    pub fn poll(&mut self) -> Result<Report, Error> {
        self.dispatch(std::iter::empty())
    }

    /// When the next held block's time comes, if any block is held.
    pub fn next_wakeup(&self) -> Option<u64> {
        self.mempool.next_due()
    }

    /// The cheap checks: duplicate, cached invalid, size, frozen feed.
    fn screen(&mut self, block: &Block, seen: &mut HashSet<[u8; 32]>) -> Option<Outcome> {
        let id = block.id();
        // Copies within one batch are told apart by fingerprint, not id: a forged copy offered
        // next to the honest block must not shadow it. Verification sorts them out.
        if self.index.blocks.contains_key(&id)
            || self.mempool.contains(&id)
            || !seen.insert(block.fingerprint())
        {
            self.stats.duplicates += 1;
            return Some(Outcome::Duplicate);
        }
        let feed = self.index.feeds.get(&block.author());
        if let Some((a, b)) = feed.and_then(|f| f.proof.as_ref()) {
            if a.id() == id || b.id() == id {
                self.stats.duplicates += 1;
                return Some(Outcome::Duplicate);
            }
        }
        if let Some(error) = self.invalid.get(&block.fingerprint()) {
            self.stats.invalid += 1;
            return Some(Outcome::Invalid(error.clone()));
        }
        if block.header().body_len > self.config.max_body_bytes {
            let error = BlockError::TooLarge {
                len: u64::from(block.header().body_len),
                max: u64::from(self.config.max_body_bytes),
            };
            self.invalid.insert(block.fingerprint(), error.clone());
            self.stats.invalid += 1;
            return Some(Outcome::Invalid(error));
        }
        if let Some(at) = feed.and_then(|f| f.frozen_at) {
            if block.seq() >= at {
                return Some(Outcome::Frozen { at });
            }
        }
        None
    }

    fn refuse(&mut self, block: &Block, error: BlockError, run: &mut Run) {
        self.invalid.insert(block.fingerprint(), error.clone());
        self.stats.invalid += 1;
        run.outcome(block.id(), Outcome::Invalid(error));
    }

    fn release_due(&mut self, now: u64, run: &mut Run) {
        for block in self.mempool.take_due(now) {
            self.admit(block, now, run);
        }
    }

    /// Places a verified block: held, orphaned, refused for its link, a fork proof, or into C
    /// (and then stitches in the orphans that waited for it).
    fn admit(&mut self, block: Block, now: u64, run: &mut Run) {
        let mut work = vec![block];
        while let Some(block) = work.pop() {
            let id = block.id();
            if self.index.blocks.contains_key(&id) || self.mempool.contains(&id) {
                // Another valid copy of the same block (same id) got here first.
                self.stats.duplicates += 1;
                run.outcome(id, Outcome::Duplicate);
                continue;
            }
            let author = block.author();
            let feed = self.index.feeds.get(&author);
            if let Some(at) = feed.and_then(|f| f.frozen_at) {
                if block.seq() >= at {
                    run.outcome(id, Outcome::Frozen { at });
                    continue;
                }
            }
            let limit = now.saturating_add(self.config.max_clock_skew_ms);
            if block.time() > limit {
                let time = block.time();
                self.mempool
                    .hold(block, time - self.config.max_clock_skew_ms);
                run.outcome(id, Outcome::TimestampFromFuture { time, now });
                continue;
            }
            if let Some(parent_id) = block.parent() {
                let Some(parent) = self.index.blocks.get(&parent_id) else {
                    self.mempool.add_orphan(block);
                    run.outcome(id, Outcome::WaitingForParent);
                    continue;
                };
                if let Err(error) = check_parent(parent, &block) {
                    self.refuse(&block, error, run);
                    continue;
                }
            }
            let seq = block.seq();
            let feed_len = feed.map_or(0, |f| f.ids.len());
            if (seq as usize) < feed_len {
                let feed = &self.index.feeds[&author];
                let existing = self.index.blocks[&feed.ids[seq as usize]].clone();
                let proof = Arc::new(block);
                for removed in self.index.freeze(&author, seq) {
                    self.fold.status.remove(&removed.id());
                    run.touch(key_of(&removed));
                    if removed.id() != existing.id() {
                        run.removed.push(removed);
                    }
                }
                let feed = self.index.feeds.get_mut(&author).expect("feed exists");
                feed.proof = Some((existing.clone(), proof.clone()));
                // Both halves are stored: the existing one may have been inserted by this very
                // dispatch and so not be in the store yet.
                run.proofs.extend([existing.clone(), proof.clone()]);
                run.report.proofs.extend([existing, proof]);
                self.stats.forks += 1;
                run.outcome(id, Outcome::Fork { seq });
                continue;
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

    /// Computes a block's expiry (the earliest any slice gives) and sets its timer; a block
    /// that expired before the last garbage collection enters already collected, so digests
    /// stay defined as of that collection.
    fn schedule(&mut self, block: Block, run: &mut Run) -> Arc<Block> {
        if block.body().is_none() {
            return Arc::new(block);
        }
        let parent = block.parent().and_then(|p| self.index.blocks.get(&p));
        let ctx = crate::slice::Context::new(&block, parent.map(|p| &**p), &self.index);
        let expiry = self
            .fold
            .slices
            .iter()
            .filter_map(|s| s.expires_at(&ctx))
            .min();
        match expiry {
            Some(time) if time <= self.gc_time => {
                self.stats.collected += 1;
                Arc::new(block.pruned())
            }
            Some(time) => {
                self.expiry.insert((time, block.id()));
                run.timers.push((time, block.id()));
                Arc::new(block)
            }
            None => Arc::new(block),
        }
    }

    /// Garbage collection at `now`: every block whose expiry is at or before `now` loses its
    /// body and its contribution; its header stays, so its feed has no gap and stays
    /// verifiable. The state is re-folded as DESIGN.md rule 7 says, and everything is committed
    /// in one batch: what was collected stays collected after a reopen. Returns once done, so a
    /// caller (or a test) waits for it by calling it.
    ///
    /// # Errors
    /// Only [`Error::Store`].
    pub fn gc(&mut self, now: u64) -> Result<GcReport, Error> {
        let mut run = Run::default();
        let due: Vec<(u64, BlockId)> = self
            .expiry
            .range(..=(now, BlockId([0xff; 32])))
            .copied()
            .collect();
        for timer in due {
            self.expiry.remove(&timer);
            run.timers_done.push(timer);
            let Some(block) = self.index.blocks.get(&timer.1) else {
                continue;
            };
            if block.body().is_none() {
                continue;
            }
            let pruned = Arc::new(block.pruned());
            run.touch(key_of(&pruned));
            self.index.blocks.insert(timer.1, pruned.clone());
            run.pruned.push(pruned);
        }
        if now > self.gc_time {
            self.gc_time = now;
            run.gc_time = Some(now);
        }
        let collected = run.pruned.len();
        self.stats.collected += collected as u64;
        self.fold_run(&mut run);
        self.commit_run(run)?;
        Ok(GcReport { collected })
    }

    /// When the next block expires, for drivers that schedule [`Kernel::gc`].
    pub fn next_expiry(&self) -> Option<u64> {
        self.expiry.first().map(|(t, _)| *t)
    }

    /// The time of the last garbage collection (0 if none ran).
    pub fn gc_time(&self) -> u64 {
        self.gc_time
    }

    fn fold_run(&mut self, run: &mut Run) {
        self.fold.newly_counted.clear();
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
        self.fold.update(
            &self.index,
            &run.inserted,
            run.earliest,
            !run.removed.is_empty() || !run.proofs.is_empty() || !run.pruned.is_empty(),
        );
        // Later runs must not see this one's bookkeeping.
        run.earliest = None;
    }

    fn commit_run(&mut self, mut run: Run) -> Result<Report, Error> {
        for &(pos, author) in &run.pending {
            let id = run.report.outcomes[pos].0;
            let outcome = match self.fold.status.get(&id) {
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
                Some(Status::ParentNotCounted) => Outcome::ParentNotCounted,
                Some(Status::Collected) => Outcome::Collected,
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
        let mut batch = Batch::default();
        batch.put.extend(
            run.inserted
                .iter()
                .filter_map(|id| self.index.blocks.get(id).cloned()),
        );
        batch.put.extend(run.proofs);
        batch.put.extend(run.pruned);
        batch.delete.extend(run.removed.iter().map(|b| b.id()));
        batch.timers = run.timers;
        batch.timers_done = run.timers_done;
        batch.gc_time = run.gc_time;
        if !batch.is_empty() {
            self.store.commit(batch)?;
        }
        self.publish();
        Ok(run.report)
    }

    fn publish(&mut self) {
        for slice in &mut self.fold.slices {
            slice.publish();
        }
    }

    fn cell<S: Slice>(&self) -> Option<&Cell<S>> {
        self.fold
            .slices
            .iter()
            .find_map(|s| s.as_any().downcast_ref::<Cell<S>>())
    }

    /// The current state of slice `S`, or `None` if `S` is not registered.
    pub fn state<S: Slice>(&self) -> Option<&S::State> {
        self.cell::<S>().map(Cell::state)
    }

    /// A stream of slice `S`'s state: the current state at once, then the state after each
    /// change (see [`Subscription`]).
    ///
    /// # Errors
    /// [`Error::UnknownSlice`] if `S` is not registered.
    pub fn subscribe<S: Slice>(&mut self) -> Result<Subscription<S::State>, Error> {
        self.fold
            .slices
            .iter_mut()
            .find_map(|s| s.as_any_mut().downcast_mut::<Cell<S>>())
            .map(Cell::subscribe)
            .ok_or_else(|| Error::UnknownSlice {
                name: std::any::type_name::<S>().to_owned(),
            })
    }

    /// The digest of slice `S`'s state, or `None` if `S` is not registered.
    pub fn digest<S: Slice>(&self) -> Option<Digest> {
        self.cell::<S>().map(|c| c.digest())
    }

    /// The digest of the named slice's state.
    pub fn digest_of(&self, name: &str) -> Option<Digest> {
        self.fold
            .slices
            .iter()
            .find(|s| s.name() == name)
            .map(|s| s.digest())
    }

    /// Every slice's name and state digest, in registration order.
    pub fn digests(&self) -> Vec<(String, Digest)> {
        self.fold
            .slices
            .iter()
            .map(|s| (s.name().to_owned(), s.digest()))
            .collect()
    }

    /// blake3 over the sorted ids of the candidate set: peers holding the same blocks have the
    /// same `set_hash`, and then the same digests.
    pub fn set_hash(&self) -> Digest {
        let mut ids: Vec<&BlockId> = self.index.blocks.keys().collect();
        ids.sort_unstable();
        let mut hasher = blake3::Hasher::new();
        for id in ids {
            hasher.update(&id.0);
        }
        Digest(*hasher.finalize().as_bytes())
    }

    /// Number of blocks at the start of a feed that count or were collected (they form a
    /// prefix: a block counts only if its parent counts or was collected).
    fn counted_len(&self, ids: &[BlockId]) -> usize {
        ids.partition_point(|id| self.fold.links(id))
    }

    /// The newest counted (or collected) block of every feed, ordered by author.
    pub fn heads(&self) -> Vec<Head> {
        self.index
            .feeds
            .keys()
            .filter_map(|author| self.head(author))
            .collect()
    }

    /// The newest counted block of `author`'s feed.
    pub fn head(&self, author: &PublicKey) -> Option<Head> {
        let feed = self.index.feeds.get(author)?;
        let len = self.counted_len(&feed.ids);
        let id = *feed.ids.get(len.checked_sub(1)?)?;
        Some(Head {
            author: *author,
            seq: len as u64 - 1,
            id,
        })
    }

    /// Counted blocks of `author`'s feed from `from_seq` on, at most `max_blocks` of them and
    /// about `max_bytes` (at least one block is returned if any is available).
    pub fn blocks_from(
        &self,
        author: &PublicKey,
        from_seq: u64,
        max_blocks: usize,
        max_bytes: usize,
    ) -> Vec<Arc<Block>> {
        let Some(feed) = self.index.feeds.get(author) else {
            return Vec::new();
        };
        let len = self.counted_len(&feed.ids);
        let start = usize::try_from(from_seq).unwrap_or(usize::MAX).min(len);
        let mut bytes = 0;
        let mut out = Vec::new();
        for id in &feed.ids[start..len] {
            let block = &self.index.blocks[id];
            let size = block.header().body_len as usize + 160;
            if out.len() >= max_blocks || (!out.is_empty() && bytes + size > max_bytes) {
                break;
            }
            bytes += size;
            out.push(block.clone());
        }
        out
    }

    /// The two blocks proving a fork in `author`'s feed, if it is frozen.
    pub fn fork_proof(&self, author: &PublicKey) -> Option<(Arc<Block>, Arc<Block>)> {
        self.index.feeds.get(author)?.proof.clone()
    }

    /// Authors whose feeds are frozen by a fork, with the height of the fork.
    pub fn frozen_feeds(&self) -> Vec<(PublicKey, u64)> {
        self.index
            .feeds
            .iter()
            .filter_map(|(a, f)| f.frozen_at.map(|at| (*a, at)))
            .collect()
    }

    /// A block of the candidate set by id.
    pub fn block(&self, id: &BlockId) -> Option<Arc<Block>> {
        self.index.blocks.get(id).cloned()
    }

    /// Whether the block is in the candidate set.
    pub fn contains(&self, id: &BlockId) -> bool {
        self.index.blocks.contains_key(id)
    }

    /// Whether the block counts (is reduced into the state).
    pub fn counts(&self, id: &BlockId) -> bool {
        self.fold.counts(id)
    }

    /// `author`'s feed as held (counted or not), as a [`crate::Feed`].
    pub fn feed(&self, author: &PublicKey) -> crate::Feed {
        let blocks = self
            .index
            .feeds
            .get(author)
            .map(|f| {
                f.ids
                    .iter()
                    .map(|id| (*self.index.blocks[id]).clone())
                    .collect()
            })
            .unwrap_or_default();
        crate::Feed::from_blocks(blocks).expect("the kernel only links valid chains")
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        Stats {
            blocks: self.index.blocks.len(),
            feeds: self.index.feeds.len(),
            mempool_blocks: self.mempool.len(),
            mempool_bytes: self.mempool.bytes(),
            mempool_evicted: self.mempool.evicted,
            full_refolds: self.fold.full_refolds,
            evaluations: self.fold.evaluations,
            reductions: self.fold.reductions,
            ..self.stats.clone()
        }
    }

    /// The store, for inspection.
    pub fn store(&self) -> &dyn BlockStore {
        self.store.as_ref()
    }

    /// Closes the kernel and hands back its store (every dispatch is already committed), so
    /// it can be reopened with [`KernelBuilder::with_boxed_store`].
    pub fn close(self) -> Box<dyn BlockStore> {
        self.store
    }
}

/// The intrinsic checks that need the parent: same author, next seq, time not before it.
fn check_parent(parent: &Block, block: &Block) -> Result<(), BlockError> {
    if parent.author() != block.author() {
        return Err(BlockError::ForeignParent);
    }
    if block.seq() != parent.seq() + 1 {
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
