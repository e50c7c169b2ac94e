//! DESIGN.md "Determinism": a random candidate set, any arrival order, interleaved garbage
//! collection, eviction and reopen; the digests always equal a fold from scratch of what is
//! retained.

use std::sync::OnceLock;

use blockend_kernel::{
    Application, Block, Config, Context, Feed, Identity, Kernel, ManualClock, Registry, Slice,
    Verdict,
};
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000;

/// Order-sensitive: a hash chain of the counted ids; bodies starting with 1 expire 5 s after
/// their block, and a body equal to the last one folded is rejected.
struct Log;
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct LogState {
    hash: [u8; 32],
    last: Vec<u8>,
}
impl Slice for Log {
    type State = LogState;
    fn name(&self) -> &str {
        "log"
    }
    fn initial(&self) -> LogState {
        LogState {
            hash: [0; 32],
            last: Vec::new(),
        }
    }
    fn filter(&self, ctx: &Context<'_>, state: &LogState) -> Verdict {
        if ctx.body() == state.last.as_slice() {
            Verdict::Reject("repeat".into())
        } else {
            Verdict::Accept
        }
    }
    fn reduce(&self, ctx: &Context<'_>, state: &mut LogState) {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&state.hash);
        hasher.update(ctx.block().id().as_bytes());
        state.hash = *hasher.finalize().as_bytes();
        state.last = ctx.body().to_vec();
    }
    fn expires_at(&self, ctx: &Context<'_>) -> Option<u64> {
        (ctx.body().first() == Some(&1)).then(|| ctx.time() + 5_000)
    }
}

struct App;
impl Application for App {
    fn register(&self, slices: &mut Registry) {
        slices.add(Log);
    }
}

const AUTHORS: u8 = 4;
const PER_AUTHOR: u64 = 6;

fn pool() -> &'static [Block] {
    static POOL: OnceLock<Vec<Block>> = OnceLock::new();
    POOL.get_or_init(|| {
        (0..AUTHORS)
            .flat_map(|a| {
                let identity = Identity::from_secret([a + 50; 32]);
                let mut feed = Feed::new();
                for i in 0..PER_AUTHOR {
                    let body = vec![(i % 2) as u8, a, (i % 3) as u8];
                    feed.append(&identity, body, T0 + i * 2_000 + u64::from(a) * 100);
                }
                feed.into_blocks()
            })
            .collect()
    })
}

#[derive(Clone, Debug)]
enum Op {
    Deliver(Vec<usize>),
    Gc(u64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let n = pool().len();
    prop_oneof![
        4 => proptest::collection::vec(0..n, 1..6).prop_map(Op::Deliver),
        2 => (0u64..20_000).prop_map(|d| Op::Gc(T0 + d)),
        1 => Just(Op::Reopen),
    ]
}

fn config(capacity: Option<u64>) -> Config {
    let config = Config::default().with_checkpoints(3, 2);
    match capacity {
        Some(bytes) => config.with_capacity_bytes(bytes),
        None => config,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn interleaved_removals_and_reopens_keep_the_state_a_fold_of_what_is_retained(
        ops in proptest::collection::vec(op(), 1..14),
        capacity in prop_oneof![Just(None), (1_000u64..4_000).prop_map(Some)],
    ) {
        let clock = ManualClock::new(T0 + 100_000);
        let open = |store: Option<Box<dyn blockend_kernel::BlockStore>>| {
            let builder = Kernel::builder(&App)
                .with_clock(clock.clone())
                .with_config(config(capacity));
            match store {
                Some(store) => builder.with_boxed_store(store),
                None => builder,
            }
            .open()
            .expect("memory store")
        };
        let mut kernel = open(None);
        for op in &ops {
            match op {
                Op::Deliver(picks) => {
                    kernel
                        .dispatch(picks.iter().map(|&i| pool()[i].clone()))
                        .expect("memory store");
                }
                Op::Gc(t) => {
                    kernel.gc(*t).expect("memory store");
                }
                Op::Reopen => {
                    let store = kernel.close();
                    kernel = open(Some(store));
                }
            }
        }
        // A fold from scratch of exactly what is retained (collected blocks as headers), as of
        // the same garbage-collection time.
        let mut retained: Vec<Block> = kernel
            .heads()
            .iter()
            .map(|h| h.author)
            .chain(kernel.frozen_feeds().iter().map(|(a, _)| *a))
            .flat_map(|a| kernel.feed(&a).into_blocks())
            .collect();
        let mut all_feeds: Vec<Block> = (0..AUTHORS)
            .flat_map(|a| kernel.feed(&Identity::from_secret([a + 50; 32]).public()).into_blocks())
            .collect();
        retained.append(&mut all_feeds);
        retained.sort_by_key(|b| (b.author(), b.seq()));
        retained.dedup_by_key(|b| b.id());
        let mut fresh = Kernel::builder(&App)
            .with_clock(clock.clone())
            .open()
            .expect("memory store");
        fresh.gc(kernel.gc_time()).expect("memory store");
        fresh.dispatch(retained).expect("memory store");
        prop_assert_eq!(fresh.set_hash(), kernel.set_hash());
        prop_assert_eq!(fresh.digests(), kernel.digests());
        prop_assert_eq!(fresh.heads(), kernel.heads());
    }
}
