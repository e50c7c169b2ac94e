//! Removal benchmark: what one eviction and one expiry cost a commutative kernel that retains
//! 100,000 blocks, for a feed that arrived recently (the cheap path: rewind to an arrival-order
//! checkpoint) and for one that arrived first (the path every removal took before arrival-order
//! checkpoints: a full re-fold of the store), measured in the same run.
//!
//! ```text
//! cargo run --release -p blockend-kernel --example bench_removal [-- --blocks N]
//! ```
//!
//! Prints one flat JSON line: `retained`; for each of `evict` and `expire`, `*_recent_ms` and
//! `*_recent_evaluations` (filter passes the removal cost), `*_oldest_ms` and
//! `*_oldest_evaluations` (a full re-fold, the reference), and `*_ratio` (oldest over recent
//! time). No RocksDB: the costs measured are the fold's, not the store's.

use std::time::Instant;

use blockend_kernel::store::MemoryStore;
use blockend_kernel::{
    Application, Block, Config, Context, Feed, Identity, Kernel, ManualClock, Registry, Slice,
    Verdict,
};

const T0: u64 = 1_700_000_000_000;
const TTL: u64 = 1_000;
/// Bodies that start with this byte expire `TTL` after their block's time.
const EXPIRING: u8 = 0xEE;
const BODY: usize = 32;
/// Retention weight of a block: its body plus the kernel's per-block overhead.
const WEIGHT: u64 = BODY as u64 + 160;

/// Counts blocks; blocks marked `EXPIRING` die after `TTL`.
struct Tally;

impl Slice for Tally {
    type State = u64;
    fn name(&self) -> &str {
        "tally"
    }
    fn initial(&self) -> u64 {
        0
    }
    fn filter(&self, _: &Context<'_>, _: &u64) -> Verdict {
        Verdict::Accept
    }
    fn reduce(&self, _: &Context<'_>, state: &mut u64) {
        *state += 1;
    }
    fn expires_at(&self, ctx: &Context<'_>) -> Option<u64> {
        (ctx.body().first() == Some(&EXPIRING)).then(|| ctx.time() + TTL)
    }
    fn commutative(&self) -> bool {
        true
    }
}

struct App;
impl Application for App {
    fn register(&self, slices: &mut Registry) {
        slices.add(Tally);
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A feed of `len` blocks by identity `seed`, one per ms from `start`, bodies starting `first`.
fn feed(seed: u8, len: usize, start: u64, first: u8) -> Vec<Block> {
    let identity = Identity::from_secret([seed; 32]);
    let mut feed = Feed::new();
    (0..len)
        .map(|i| {
            feed.append(&identity, vec![first; BODY], start + i as u64)
                .clone()
        })
        .collect()
}

/// `authors` long-standing feeds (genesis at `T0`) making up `n` blocks, round-robin.
fn retained(n: usize) -> Vec<Block> {
    let authors = 100.min(n.max(1));
    let per_author = n.div_ceil(authors);
    let feeds: Vec<Vec<Block>> = (0..authors)
        .map(|a| feed(a as u8 + 1, per_author, T0, 1))
        .collect();
    (0..per_author)
        .flat_map(|i| feeds.iter().filter_map(move |f| f.get(i).cloned()))
        .collect()
}

fn open(capacity: Option<u64>) -> Result<Kernel, Box<dyn std::error::Error>> {
    let mut config = Config::default();
    if let Some(bytes) = capacity {
        config = config.with_capacity_bytes(bytes);
    }
    Ok(Kernel::builder(&App)
        .with_store(MemoryStore::new())
        .with_clock(ManualClock::new(T0 + 100_000))
        .with_identity(Identity::from_secret([250; 32]))
        .with_config(config)
        .open()?)
}

fn ingest(kernel: &mut Kernel, blocks: &[Block]) -> Result<(), Box<dyn std::error::Error>> {
    for batch in blocks.chunks(512) {
        kernel.dispatch(batch.to_vec())?;
    }
    Ok(())
}

/// What one removal cost: wall time and filter passes; whether it was a full re-fold.
struct Cost {
    ms: f64,
    evaluations: u64,
    full_refold: bool,
}

fn measure(
    kernel: &mut Kernel,
    remove: impl FnOnce(&mut Kernel) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<Cost, Box<dyn std::error::Error>> {
    let before = kernel.stats();
    let t = Instant::now();
    remove(kernel)?;
    let ms = t.elapsed().as_secs_f64() * 1_000.0;
    let after = kernel.stats();
    Ok(Cost {
        ms,
        evaluations: after.evaluations - before.evaluations,
        full_refold: after.full_refolds > before.full_refolds,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n = arg("--blocks", 100_000);
    let honest = retained(n);
    let n = honest.len();

    // Eviction. `oldest` arrives first and has the youngest genesis (the lowest rank); `fresh`
    // ranks above it and pushes the store over capacity, evicting it; `flood` arrives last,
    // ranks lowest and is evicted in the dispatch that brought it.
    let oldest = feed(201, 10, T0 + 70_000, 1);
    let fresh = feed(202, 10, T0 + 60_000, 1);
    let flood = feed(203, 10, T0 + 80_000, 1);
    let capacity = (n as u64 + 10) * WEIGHT + WEIGHT / 2;
    let mut kernel = open(Some(capacity))?;
    ingest(&mut kernel, &oldest)?;
    ingest(&mut kernel, &honest)?;
    let evict_oldest = measure(&mut kernel, |k| ingest(k, &fresh))?;
    let evict_recent = measure(&mut kernel, |k| ingest(k, &flood))?;
    let stats = kernel.stats();
    assert_eq!(
        stats.evicted_feeds, 2,
        "both the oldest and the flood are evicted"
    );
    assert_eq!(
        stats.blocks,
        n + 10,
        "the honest feeds and `fresh` are kept"
    );
    assert_eq!(kernel.state::<Tally>(), Some(&(n as u64 + 10)));
    drop(kernel);

    // Expiry: one expiring block arrives first, one last; each is collected by its own gc.
    let early = feed(204, 1, T0, EXPIRING);
    let late = feed(205, 1, T0 + 10_000, EXPIRING);
    let mut kernel = open(None)?;
    ingest(&mut kernel, &early)?;
    ingest(&mut kernel, &honest)?;
    ingest(&mut kernel, &late)?;
    let expire_oldest = measure(&mut kernel, |k| {
        assert_eq!(k.gc(T0 + TTL)?.collected, 1);
        Ok(())
    })?;
    let expire_recent = measure(&mut kernel, |k| {
        assert_eq!(k.gc(T0 + 10_000 + TTL)?.collected, 1);
        Ok(())
    })?;
    assert_eq!(kernel.state::<Tally>(), Some(&(n as u64)));

    assert!(evict_oldest.full_refold && expire_oldest.full_refold);
    assert!(!evict_recent.full_refold && !expire_recent.full_refold);
    println!(
        "{{\"retained\":{n},\"evict_recent_ms\":{:.2},\"evict_recent_evaluations\":{},\"evict_oldest_ms\":{:.2},\"evict_oldest_evaluations\":{},\"evict_ratio\":{:.0},\"expire_recent_ms\":{:.2},\"expire_recent_evaluations\":{},\"expire_oldest_ms\":{:.2},\"expire_oldest_evaluations\":{},\"expire_ratio\":{:.0}}}",
        evict_recent.ms,
        evict_recent.evaluations,
        evict_oldest.ms,
        evict_oldest.evaluations,
        evict_oldest.ms / evict_recent.ms,
        expire_recent.ms,
        expire_recent.evaluations,
        expire_oldest.ms,
        expire_oldest.evaluations,
        expire_oldest.ms / expire_recent.ms,
    );
    Ok(())
}
