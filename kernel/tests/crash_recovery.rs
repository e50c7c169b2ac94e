//! Crash safety: a child process writes blocks through the kernel into a RocksStore and is
//! killed with SIGKILL at seeded random moments, 20 times. After each kill the store must open,
//! hold every block the child reported committed, show no partial dispatch, and give the
//! digests of a replay of its blocks.
#![cfg(feature = "rocksdb")]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use blockend_kernel::store::{BlockStore, RocksStore};
use blockend_kernel::{
    Application, Block, BlockId, Config, Context, Feed, Identity, Kernel, Registry, Slice, Verdict,
};

const CHILD: &str = "BLOCKEND_CRASH_CHILD_DIR";
const SEED: &str = "BLOCKEND_CRASH_CHILD_SEED";
const RUNS: u64 = 20;

/// Per-author totals, and an order-sensitive log hash, so both fold modes are exercised.
struct Totals;
impl Slice for Totals {
    type State = std::collections::BTreeMap<[u8; 32], u64>;
    fn name(&self) -> &str {
        "totals"
    }
    fn initial(&self) -> Self::State {
        Default::default()
    }
    fn filter(&self, _: &Context<'_>, _: &Self::State) -> Verdict {
        Verdict::Accept
    }
    fn reduce(&self, ctx: &Context<'_>, state: &mut Self::State) {
        *state.entry(ctx.author().0).or_default() += u64::from(ctx.body()[0]);
    }
}

struct App;
impl Application for App {
    fn register(&self, slices: &mut Registry) {
        slices.add(Totals);
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The child: writes until killed (or 2,000 rounds), reporting each commit on stdout.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD) else {
        return; // only runs as the child of `killed_writers_leave_a_consistent_store`
    };
    let seed: u64 = std::env::var(SEED)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let store = RocksStore::open(&dir).expect("child opens the store");
    // Frequent snapshots, so reopening exercises both paths: a snapshot that matches the
    // blocks, and one that is older than the last commits.
    let mut kernel = Kernel::builder(&App)
        .with_store(store)
        .with_config(Config::default().with_snapshot_interval(7))
        .open()
        .expect("child opens the kernel");
    let peers: Vec<Identity> = (0..3)
        .map(|p| Identity::from_secret([(seed as u8).wrapping_mul(3).wrapping_add(p + 1); 32]))
        .collect();
    let mut feeds: Vec<Feed> = peers.iter().map(|_| Feed::new()).collect();
    let now = kernel.now();
    for round in 0..2_000u64 {
        let batch: Vec<Block> = peers
            .iter()
            .zip(&mut feeds)
            .map(|(identity, feed)| {
                feed.append(identity, vec![(round % 250) as u8 + 1; 24], now + round)
                    .clone()
            })
            .collect();
        let ids: Vec<String> = batch.iter().map(|b| b.id().to_hex()).collect();
        println!("begin {}", ids.join(" "));
        kernel.dispatch(batch).expect("dispatch");
        println!("commit");
        let own = kernel
            .create_block(vec![(round % 7) as u8 + 1])
            .expect("own block");
        println!("own {}", own.id().to_hex());
    }
}

fn id(hex: &str) -> BlockId {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex, &mut bytes).expect("the child prints hex ids");
    BlockId(bytes)
}

#[test]
fn killed_writers_leave_a_consistent_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = Rng(0x5eed_b10c_e4d0_0001);
    let mut committed: HashSet<BlockId> = HashSet::new();
    let mut author = None;
    let mut restored = 0;
    for run in 0..RUNS {
        let kill_after = 1 + rng.next() % 40;
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, &path)
            .env(SEED, run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().expect("piped");
        let mut in_flight: Vec<BlockId> = Vec::new();
        let mut acks = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read the child");
            if let Some(rest) = line.strip_prefix("begin ") {
                in_flight = rest.split(' ').map(id).collect();
            } else if line == "commit" {
                committed.extend(in_flight.drain(..));
                acks += 1;
            } else if let Some(hex) = line.strip_prefix("own ") {
                committed.insert(id(hex));
                acks += 1;
            }
            if acks >= kill_after {
                child.kill().expect("SIGKILL");
                break;
            }
        }
        let _ = child.wait();

        // The store opens, and holds everything acknowledged.
        let store = RocksStore::open(&path)
            .unwrap_or_else(|e| panic!("run {run}: the store does not open: {e}"));
        let held: HashSet<BlockId> = store
            .blocks()
            .expect("read")
            .iter()
            .map(|b| b.id())
            .collect();
        for block in &committed {
            assert!(
                held.contains(block),
                "run {run}: acknowledged block {block} lost"
            );
        }
        // No partial dispatch: the batch in flight at the kill is all there or all absent.
        let present = in_flight.iter().filter(|b| held.contains(b)).count();
        assert!(
            present == 0 || present == in_flight.len(),
            "run {run}: {present} of {} blocks of one dispatch are visible",
            in_flight.len()
        );
        committed.extend(in_flight.iter().filter(|b| held.contains(b)));

        // The kernel reopens on it with the same identity and the digests of a replay.
        let kernel = Kernel::builder(&App)
            .with_store(store)
            .open()
            .expect("reopen");
        assert_eq!(*author.get_or_insert(kernel.author()), kernel.author());
        let mut blocks: Vec<Block> = kernel
            .store()
            .blocks()
            .expect("read")
            .iter()
            .map(|b| b.as_ref().clone())
            .collect();
        // Parents first, so the replay does not lean on the bounded mempool.
        blocks.sort_by_key(|b| (b.author(), b.seq()));
        let mut replay = Kernel::builder(&App).open().expect("memory");
        replay.dispatch(blocks).expect("memory");
        assert_eq!(replay.digests(), kernel.digests(), "run {run}");
        assert_eq!(replay.set_hash(), kernel.set_hash(), "run {run}");
        assert_eq!(kernel.stats().blocks, held.len(), "run {run}");
        restored += usize::from(kernel.stats().restored_from_snapshot);
    }
    assert!(
        committed.len() > RUNS as usize,
        "the children wrote too little"
    );
    assert!(restored > 0, "no reopen used a snapshot");
}
