//! Ingest benchmark: how fast a fresh kernel takes in pre-signed blocks, next to raw
//! single-core `verify_strict` measured in the same run.
//!
//! ```text
//! cargo run --release -p blockend-kernel --example bench_ingest [-- --blocks N --authors A]
//! ```
//!
//! Prints one flat JSON line:
//! - `ingest_blocks_per_s`: dispatch of 32-byte-body blocks from several authors, in batches of
//!   256 (a sync message's worth), into a kernel with one slice on a `MemoryStore`;
//! - `verify_strict_per_s`: ed25519-dalek `verify_strict` over the same blocks, one core;
//! - `ratio`: the first over the second;
//! - `rocks_ingest_blocks_per_s`, `rocks_ratio`: the same ingest on a `RocksStore` (WAL on,
//!   default sync), and its ratio to `verify_strict`;
//! - `gc_blocks_per_s`: garbage collection of all of them from that store, blocks per second;
//! - `feed_overhead_bytes_per_block`: encoded feed bytes per block minus the body, 10,000 blocks;
//! - `append_blocks_per_s`, `feed_load_verify_blocks_per_s`: signing appends and decoding plus
//!   verifying that feed on one core, the figures `../shared/bench/picofeed-baseline.mjs` prints
//!   for the JS picofeed.

use std::time::Instant;

use blockend_kernel::store::{MemoryStore, RocksStore};
use blockend_kernel::{
    Application, Block, Config, Context, Feed, Identity, Kernel, ManualClock, Registry, Slice,
    Verdict,
};

/// Counts blocks and sums their first body byte: a cheap, commutative slice.
struct Tally;

impl Slice for Tally {
    type State = (u64, u64);
    fn name(&self) -> &str {
        "tally"
    }
    fn initial(&self) -> (u64, u64) {
        (0, 0)
    }
    fn filter(&self, _: &Context<'_>, _: &(u64, u64)) -> Verdict {
        Verdict::Accept
    }
    fn reduce(&self, ctx: &Context<'_>, state: &mut (u64, u64)) {
        state.0 += 1;
        state.1 += u64::from(ctx.body().first().copied().unwrap_or(0));
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

/// Tally, with every block expiring one second after its time: for the GC figure.
struct Expiring;
impl Slice for Expiring {
    type State = (u64, u64);
    fn name(&self) -> &str {
        "expiring"
    }
    fn initial(&self) -> (u64, u64) {
        (0, 0)
    }
    fn filter(&self, ctx: &Context<'_>, state: &(u64, u64)) -> Verdict {
        Tally.filter(ctx, state)
    }
    fn reduce(&self, ctx: &Context<'_>, state: &mut (u64, u64)) {
        Tally.reduce(ctx, state)
    }
    fn expires_at(&self, ctx: &Context<'_>) -> Option<u64> {
        Some(ctx.time() + 1_000)
    }
    fn commutative(&self) -> bool {
        true
    }
}

struct GcApp;
impl Application for GcApp {
    fn register(&self, slices: &mut Registry) {
        slices.add(Expiring);
    }
}

/// Dispatches `blocks` in batches of 256 into a fresh kernel for `app` on `store`; blocks/s.
fn ingest(
    app: &impl Application,
    store: impl blockend_kernel::BlockStore,
    config: Config,
    now: u64,
    blocks: &[Block],
) -> Result<(Kernel, f64), Box<dyn std::error::Error>> {
    let mut kernel = Kernel::builder(app)
        .with_store(store)
        .with_clock(ManualClock::new(now))
        .with_config(config)
        .open()?;
    let batches: Vec<Vec<Block>> = blocks.chunks(256).map(<[Block]>::to_vec).collect();
    let t = Instant::now();
    for batch in batches {
        kernel.dispatch(batch)?;
    }
    let per_s = blocks.len() as f64 / t.elapsed().as_secs_f64();
    assert_eq!(
        kernel.stats().blocks,
        blocks.len(),
        "every block must be accepted"
    );
    Ok((kernel, per_s))
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `authors` feeds of `per_author` blocks each, interleaved round-robin as a peer would send them.
fn signed_blocks(authors: usize, per_author: usize, start: u64) -> Vec<Block> {
    let mut feeds: Vec<(Identity, Feed)> = (0..authors)
        .map(|a| (Identity::from_secret([a as u8 + 1; 32]), Feed::new()))
        .collect();
    let mut out = Vec::with_capacity(authors * per_author);
    for i in 0..per_author {
        for (a, (identity, feed)) in feeds.iter_mut().enumerate() {
            let mut body = [0u8; 32];
            body[..8].copy_from_slice(&(i as u64).to_le_bytes());
            body[8] = a as u8;
            let block = feed.append(identity, body.to_vec(), start + i as u64);
            out.push(block.clone());
        }
    }
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let blocks_wanted = arg("--blocks", 20_000);
    let authors = arg("--authors", 8).max(1);
    let per_author = blocks_wanted.div_ceil(authors);
    let start = 1_700_000_000_000u64;
    let blocks = signed_blocks(authors, per_author, start);
    let n = blocks.len();

    // Reference: raw single-core verify_strict over the same signatures (keys decompressed once).
    let keys: Vec<ed25519_dalek::VerifyingKey> = blocks
        .iter()
        .map(|b| ed25519_dalek::VerifyingKey::from_bytes(b.author().as_bytes()))
        .collect::<Result<_, _>>()?;
    let t = Instant::now();
    for (block, key) in blocks.iter().zip(&keys) {
        let sig = ed25519_dalek::Signature::from_bytes(&block.signature().0);
        key.verify_strict(block.id().as_bytes(), &sig)?;
    }
    let verify_per_s = n as f64 / t.elapsed().as_secs_f64();

    // Ingest: fresh kernel, one slice, MemoryStore, batches of 256.
    let now = start + per_author as u64 + 1;
    let mut config = Config::default();
    if std::env::args().any(|a| a == "--one-core") {
        config = config.with_parallel_verify_threshold(usize::MAX);
    }
    let (kernel, ingest_per_s) = ingest(&App, MemoryStore::new(), config.clone(), now, &blocks)?;
    assert_eq!(kernel.state::<Tally>().map(|s| s.0), Some(n as u64));
    drop(kernel);

    // The same on a RocksStore (WAL on, default sync), then garbage collection of it all.
    let dir = tempfile::tempdir()?;
    let store = RocksStore::open(dir.path().join("ingest"))?;
    let (kernel, rocks_per_s) = ingest(&App, store, config.clone(), now, &blocks)?;
    drop(kernel);
    let store = RocksStore::open(dir.path().join("gc"))?;
    let (mut kernel, _) = ingest(&GcApp, store, config, now, &blocks)?;
    let t = Instant::now();
    let collected = kernel.gc(now + 1_000_000)?.collected;
    let gc_per_s = collected as f64 / t.elapsed().as_secs_f64();
    assert_eq!(collected, n, "every block expires");

    // Feed encoding overhead, 10,000 blocks of 32 bytes.
    // Also the figures the JS picofeed baseline prints: append (sign) and load (decode + verify).
    let identity = Identity::from_secret([42; 32]);
    let mut feed = Feed::new();
    let t = Instant::now();
    for i in 0..10_000u64 {
        feed.append(&identity, vec![7; 32], start + i * 1000);
    }
    let append_per_s = 10_000.0 / t.elapsed().as_secs_f64();
    let encoded = feed.encode();
    let overhead = (encoded.len() - 10_000 * 32) as f64 / 10_000.0;
    let t = Instant::now();
    let loaded = Feed::decode(&encoded)?;
    loaded.verify()?;
    let load_per_s = 10_000.0 / t.elapsed().as_secs_f64();

    println!(
        "{{\"blocks\":{n},\"authors\":{authors},\"threads\":{threads},\"ingest_blocks_per_s\":{ingest:.0},\"verify_strict_per_s\":{verify:.0},\"ratio\":{ratio:.2},\"rocks_ingest_blocks_per_s\":{rocks_per_s:.0},\"rocks_ratio\":{rocks_ratio:.2},\"gc_blocks_per_s\":{gc_per_s:.0},\"feed_overhead_bytes_per_block\":{overhead:.1},\"append_blocks_per_s\":{append_per_s:.0},\"feed_load_verify_blocks_per_s\":{load_per_s:.0}}}",
        threads = rayon::current_num_threads(),
        ingest = ingest_per_s,
        verify = verify_per_s,
        ratio = ingest_per_s / verify_per_s,
        rocks_ratio = rocks_per_s / verify_per_s,
    );
    Ok(())
}
