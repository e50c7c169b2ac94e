//! The kernel-trust property: one random schedule mixes full and header-only copies, forged
//! copies, orphans, future-dated blocks, forks, garbage collection, capacity eviction, and
//! snapshot + kill-style reopens (drop without close), on a store that survives the kill
//! (in memory, and RocksDB). After every step: no panic; the state equals a fold from scratch of
//! exactly what is retained; equal `set_hash` => equal digests; the bytes of other authors'
//! feeds stay within the budget; a reopen gives back the state of the last commit.

mod common;

use std::sync::Arc;

use blockend_kernel::store::BlockStore;
use blockend_kernel::{
    Application, Block, Config, Context, Identity, Kernel, ManualClock, Registry, Signature, Slice,
    Verdict,
};
use common::Shared;
use proptest::prelude::*;

const NOW: u64 = 1_700_000_000_000;
const EXPIRING: u8 = 0xEE;
const TTL: u64 = 500;
const AUTHORS: usize = 4;
const LEN: usize = 6;
const BUDGET: u64 = 2 * 5 * (160 + 40);

/// Per-author sums (commutative), with expiring and rejected bodies.
struct Sums;
impl Slice for Sums {
    type State = std::collections::BTreeMap<[u8; 32], u64>;
    fn name(&self) -> &str {
        "sums"
    }
    fn initial(&self) -> Self::State {
        Default::default()
    }
    fn filter(&self, ctx: &Context<'_>, _: &Self::State) -> Verdict {
        match ctx.body().first() {
            Some(0) => Verdict::Reject("zero".into()),
            Some(_) => Verdict::Accept,
            None => Verdict::Ignore,
        }
    }
    fn reduce(&self, ctx: &Context<'_>, state: &mut Self::State) {
        *state.entry(ctx.author().0).or_default() += u64::from(ctx.body()[0]);
    }
    fn expires_at(&self, ctx: &Context<'_>) -> Option<u64> {
        (ctx.body().first() == Some(&EXPIRING)).then(|| ctx.time() + TTL)
    }
    fn commutative(&self) -> bool {
        true
    }
}

/// An order-sensitive log of who wrote first, so canonical folding is exercised too.
struct Firsts;
impl Slice for Firsts {
    type State = Vec<[u8; 32]>;
    fn name(&self) -> &str {
        "firsts"
    }
    fn initial(&self) -> Self::State {
        Vec::new()
    }
    fn filter(&self, ctx: &Context<'_>, _: &Self::State) -> Verdict {
        if ctx.body().first() == Some(&0) {
            Verdict::Ignore
        } else {
            Verdict::Accept
        }
    }
    fn reduce(&self, ctx: &Context<'_>, state: &mut Self::State) {
        if !state.contains(&ctx.author().0) {
            state.push(ctx.author().0);
        }
    }
}

struct App {
    ordered: bool,
}
impl Application for App {
    fn register(&self, slices: &mut Registry) {
        slices.add(Sums);
        if self.ordered {
            slices.add(Firsts);
        }
    }
}

/// Every block the schedule can offer: `AUTHORS` feeds of `LEN`, a fork of feed 2 at seq 3,
/// a future-dated feed.
struct Universe {
    feeds: Vec<Vec<Arc<Block>>>,
    fork: Arc<Block>,
}

fn universe() -> Universe {
    let mut feeds = Vec::new();
    for a in 0..=AUTHORS {
        let id = Identity::from_secret([a as u8 + 1; 32]);
        // The last feed is dated a minute ahead: held until its time.
        let start = if a == AUTHORS { NOW + 60_000 } else { NOW };
        let mut feed: Vec<Arc<Block>> = Vec::new();
        for i in 0..LEN {
            let body = match (a + i) % 5 {
                0 => vec![EXPIRING; 40],
                3 => vec![0; 40],
                n => vec![n as u8; 40],
            };
            let parent = feed.last().map(|b| (b.id(), b.seq(), b.time()));
            let time = start + (i * 100 + a) as u64;
            feed.push(Arc::new(Block::sign(&id, parent, time, body)));
        }
        feeds.push(feed);
    }
    let id = Identity::from_secret([3; 32]);
    let p = &feeds[2][2];
    let fork = Arc::new(Block::sign(
        &id,
        Some((p.id(), p.seq(), p.time())),
        p.time() + 1,
        vec![9; 40],
    ));
    Universe { feeds, fork }
}

#[derive(Clone, Debug)]
enum Copy {
    Full,
    HeaderOnly,
    Forged,
}

#[derive(Clone, Debug)]
enum Op {
    /// Offer blocks (feed, seq, copy) in one dispatch.
    Offer(Vec<(usize, usize, Copy)>),
    Fork,
    /// Advance the clock, release held blocks, collect what expired.
    Advance(u64),
    /// Drop the kernel without closing it (after an optional snapshot) and reopen the store.
    Kill {
        snapshot: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let copy =
        prop_oneof![6 => Just(Copy::Full), 2 => Just(Copy::HeaderOnly), 1 => Just(Copy::Forged)];
    let offer = prop::collection::vec((0..=AUTHORS, 0..LEN, copy), 1..6).prop_map(Op::Offer);
    prop_oneof![
        8 => offer,
        2 => Just(Op::Fork),
        2 => (1u64..40_000).prop_map(Op::Advance),
        2 => any::<bool>().prop_map(|snapshot| Op::Kill { snapshot }),
    ]
}

fn copy_of(block: &Arc<Block>, copy: &Copy) -> Arc<Block> {
    match copy {
        Copy::Full => block.clone(),
        Copy::HeaderOnly => Arc::new(block.pruned()),
        Copy::Forged => Arc::new(
            Block::from_parts(
                block.header().clone(),
                Signature([7; 64]),
                block.body().map(<[u8]>::to_vec),
            )
            .expect("body matches"),
        ),
    }
}

fn open(app: &App, store: Box<dyn BlockStore>, clock: &ManualClock) -> Kernel {
    Kernel::builder(app)
        .with_boxed_store(store)
        .with_clock(clock.clone())
        .with_identity(Identity::from_secret([99; 32]))
        .with_config(
            Config::default()
                .with_capacity_bytes(BUDGET)
                .with_tombstones(2_000, 64)
                .with_snapshot_interval(5),
        )
        .open()
        .expect("open")
}

/// A fresh kernel (no budget) given exactly what `kernel` retains, as it holds it.
fn fold_from_scratch(app: &App, kernel: &Kernel, clock: &ManualClock) -> Kernel {
    let mut blocks: Vec<Arc<Block>> = Vec::new();
    for head in kernel.heads() {
        blocks.extend(
            kernel
                .feed(&head.author)
                .into_blocks()
                .into_iter()
                .map(Arc::new),
        );
    }
    for (author, _) in kernel.frozen_feeds() {
        if kernel.head(&author).is_none() {
            blocks.extend(kernel.feed(&author).into_blocks().into_iter().map(Arc::new));
        }
        let (a, b) = kernel
            .fork_proof(&author)
            .expect("frozen feeds have a proof");
        blocks.extend([a, b]);
    }
    let mut fresh = Kernel::builder(app)
        .with_clock(clock.clone())
        .with_identity(Identity::from_secret([98; 32]))
        .open()
        .expect("open");
    fresh.dispatch_shared(blocks).expect("dispatch");
    fresh
}

fn check(app: &App, kernel: &Kernel, clock: &ManualClock) -> Result<(), TestCaseError> {
    let fresh = fold_from_scratch(app, kernel, clock);
    prop_assert_eq!(fresh.set_hash(), kernel.set_hash(), "same retained set");
    prop_assert_eq!(
        fresh.digests(),
        kernel.digests(),
        "state is a fold of what is retained"
    );
    prop_assert!(
        kernel.stats().other_bytes <= BUDGET,
        "{} bytes over a budget of {}",
        kernel.stats().other_bytes,
        BUDGET
    );
    Ok(())
}

fn run(
    ordered: bool,
    ops: &[Op],
    mut reopen: impl FnMut() -> Box<dyn BlockStore>,
) -> Result<(), TestCaseError> {
    let app = App { ordered };
    let world = universe();
    let clock = ManualClock::new(NOW);
    let mut kernel = open(&app, reopen(), &clock);
    for op in ops {
        match op {
            Op::Offer(picks) => {
                let blocks = picks
                    .iter()
                    .map(|(a, i, copy)| copy_of(&world.feeds[*a][*i], copy));
                kernel.dispatch_shared(blocks).expect("dispatch");
            }
            Op::Fork => {
                kernel
                    .dispatch_shared([world.fork.clone()])
                    .expect("dispatch");
            }
            Op::Advance(ms) => {
                clock.advance(*ms);
                kernel.poll().expect("poll");
                let now = kernel.now();
                kernel.gc(now).expect("gc");
            }
            Op::Kill { snapshot } => {
                if *snapshot {
                    kernel.checkpoint().expect("snapshot");
                }
                let (set_hash, digests) = (kernel.set_hash(), kernel.digests());
                drop(kernel);
                kernel = open(&app, reopen(), &clock);
                prop_assert_eq!(kernel.set_hash(), set_hash, "a reopen keeps every commit");
                prop_assert_eq!(kernel.digests(), digests, "and the state it gave");
            }
        }
        check(&app, &kernel, &clock)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_schedule_keeps_state_a_fold_of_what_is_retained(
        ordered in any::<bool>(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let store = Shared::default();
        run(ordered, &ops, || Box::new(store.clone()))?;
    }
}

#[cfg(feature = "rocksdb")]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_schedule_keeps_state_a_fold_of_what_is_retained_on_rocksdb(
        ordered in any::<bool>(),
        ops in prop::collection::vec(op(), 1..25),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        run(ordered, &ops, || {
            Box::new(blockend_kernel::store::RocksStore::open(&path).expect("open store"))
        })?;
    }
}
