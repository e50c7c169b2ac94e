//! Determinism (DESIGN.md "Determinism"): any delivery order of the same blocks gives the same
//! digests and `set_hash` on every kernel, for a commutative slice and for an order-sensitive
//! one; and arbitrary bytes never panic a decoder.

use std::sync::OnceLock;

use blockend_kernel::sync::{Limits, Message};
use blockend_kernel::{
    Application, Block, Config, Context, Feed, Identity, Kernel, ManualClock, Registry, Slice,
    Verdict,
};
use proptest::prelude::*;

/// Commutative: per-author sum of body bytes.
struct Sums;
impl Slice for Sums {
    type State = std::collections::BTreeMap<[u8; 32], u64>;
    fn name(&self) -> &str {
        "sums"
    }
    fn initial(&self) -> Self::State {
        Default::default()
    }
    fn filter(&self, _: &Context<'_>, _: &Self::State) -> Verdict {
        Verdict::Accept
    }
    fn reduce(&self, ctx: &Context<'_>, state: &mut Self::State) {
        *state.entry(ctx.author().0).or_default() +=
            ctx.body().iter().map(|&b| u64::from(b)).sum::<u64>();
    }
    fn commutative(&self) -> bool {
        true
    }
}

/// Order-sensitive: a hash chain over the ids in fold order, and a filter whose verdict
/// depends on the state (a body equal to the previous accepted one is rejected).
struct Chain;
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct ChainState {
    hash: [u8; 32],
    last_body: Vec<u8>,
    accepted: u64,
}
impl Slice for Chain {
    type State = ChainState;
    fn name(&self) -> &str {
        "chain"
    }
    fn initial(&self) -> ChainState {
        ChainState {
            hash: [0; 32],
            last_body: Vec::new(),
            accepted: 0,
        }
    }
    fn filter(&self, ctx: &Context<'_>, state: &ChainState) -> Verdict {
        if ctx.body() == state.last_body.as_slice() {
            Verdict::Reject("same body as the previous block".into())
        } else {
            Verdict::Accept
        }
    }
    fn reduce(&self, ctx: &Context<'_>, state: &mut ChainState) {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&state.hash);
        hasher.update(ctx.block().id().as_bytes());
        state.hash = *hasher.finalize().as_bytes();
        state.last_body = ctx.body().to_vec();
        state.accepted += 1;
    }
}

struct Commutative;
impl Application for Commutative {
    fn register(&self, slices: &mut Registry) {
        slices.add(Sums);
    }
}

struct Canonical;
impl Application for Canonical {
    fn register(&self, slices: &mut Registry) {
        slices.add(Sums).add(Chain);
    }
}

const AUTHORS: usize = 4;
const PER_AUTHOR: usize = 6;
const START: u64 = 1_000_000;

/// A fixed pool of blocks: 4 authors x 6 blocks, with clashing times across authors and
/// bodies chosen so that the order-sensitive filter's verdicts depend on the fold order.
fn pool() -> &'static [Block] {
    static POOL: OnceLock<Vec<Block>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut blocks = Vec::new();
        for a in 0..AUTHORS {
            let identity = Identity::from_secret([a as u8 + 10; 32]);
            let mut feed = Feed::new();
            for i in 0..PER_AUTHOR {
                let time = START + (i as u64) * 10 + (a as u64 % 2) * 5;
                feed.append(&identity, vec![(i % 3) as u8, (a % 2) as u8], time);
            }
            blocks.extend(feed.into_blocks());
        }
        blocks
    })
}

fn open(app: &impl Application, config: Config) -> Kernel {
    Kernel::builder(app)
        .with_clock(ManualClock::new(START + 10_000))
        .with_config(config)
        .open()
        .expect("memory store")
}

/// Delivers `order` (indices into the pool) in chunks of the given sizes.
fn deliver(kernel: &mut Kernel, order: &[usize], chunks: &[usize]) {
    let blocks = pool();
    let mut rest = order;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        let (now, later) = rest.split_at(n);
        kernel
            .dispatch(now.iter().map(|&i| blocks[i].clone()))
            .expect("memory store");
        rest = later;
    }
}

fn reference(app: &impl Application) -> Kernel {
    let mut kernel = open(app, Config::default());
    let mut all: Vec<Block> = pool().to_vec();
    all.sort_by_key(|b| (b.time(), b.author(), b.seq()));
    kernel.dispatch(all).expect("memory store");
    kernel
}

fn arrival() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    let n = AUTHORS * PER_AUTHOR;
    (
        Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
        proptest::collection::vec(1usize..6, 1..8),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_delivery_order_gives_the_same_digests_for_a_commutative_slice((order, chunks) in arrival()) {
        let expected = reference(&Commutative);
        let mut kernel = open(&Commutative, Config::default());
        deliver(&mut kernel, &order, &chunks);
        prop_assert_eq!(kernel.stats().blocks, AUTHORS * PER_AUTHOR);
        prop_assert_eq!(kernel.set_hash(), expected.set_hash());
        prop_assert_eq!(kernel.digests(), expected.digests());
    }

    #[test]
    fn any_delivery_order_gives_the_same_digests_for_an_order_sensitive_slice((order, chunks) in arrival()) {
        let expected = reference(&Canonical);
        // Tight checkpoints force rewinds, replays and full re-folds.
        for config in [Config::default(), Config::default().with_checkpoints(2, 3)] {
            let mut kernel = open(&Canonical, config);
            deliver(&mut kernel, &order, &chunks);
            prop_assert_eq!(kernel.stats().blocks, AUTHORS * PER_AUTHOR);
            prop_assert_eq!(kernel.set_hash(), expected.set_hash());
            prop_assert_eq!(kernel.digests(), expected.digests());
            prop_assert_eq!(kernel.heads(), expected.heads());
        }
    }

    #[test]
    fn a_duplicate_never_reaches_a_reducer_twice((order, chunks) in arrival()) {
        let mut kernel = open(&Commutative, Config::default());
        deliver(&mut kernel, &order, &chunks);
        let reductions = kernel.stats().reductions;
        deliver(&mut kernel, &order, &chunks);
        prop_assert_eq!(kernel.stats().reductions, reductions);
        prop_assert_eq!(kernel.stats().duplicates, (AUTHORS * PER_AUTHOR) as u64);
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Block::decode(&bytes);
        let _ = Feed::decode(&bytes);
        let _ = Message::decode(&bytes, &Limits::default());
        let mut versioned = bytes.clone();
        versioned.insert(0, 1);
        let _ = Block::decode(&versioned);
        let _ = Feed::decode(&versioned);
        let _ = Message::decode(&versioned, &Limits::default());
    }

    #[test]
    fn mutated_encodings_never_panic_and_never_pass_as_the_original(
        which in 0usize..AUTHORS * PER_AUTHOR,
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let original = &pool()[which];
        let mut bytes = original.encode();
        let i = at.index(bytes.len());
        bytes[i] ^= byte | 1;
        if let Ok(block) = Block::decode(&bytes) {
            // Either the mutation broke the signature, or it changed nothing signed.
            prop_assert!(block.verify().is_err() || (block.id() == original.id() && block.signature() == original.signature()));
        }
        let feed = Feed::from_blocks(pool()[..PER_AUTHOR].to_vec()).expect("links").encode();
        let _ = Feed::decode(&feed[..cut.index(feed.len())]);
        let mut flipped = feed.clone();
        flipped[at.index(feed.len())] ^= byte | 1;
        if let Ok(decoded) = Feed::decode(&flipped) {
            let _ = decoded.verify();
        }
        let message = Message::Blocks(pool()[..3].iter().cloned().map(std::sync::Arc::new).collect()).encode();
        let _ = Message::decode(&message[..cut.index(message.len())], &Limits::default());
    }

    #[test]
    fn encodings_round_trip(body in proptest::collection::vec(any::<u8>(), 0..300), time in 0u64..u64::MAX / 2, pruned in any::<bool>()) {
        let identity = Identity::from_secret([1; 32]);
        let mut feed = Feed::new();
        feed.append(&identity, body.clone(), time);
        feed.append(&Identity::from_secret([2; 32]), body, time + 1);
        let block = if pruned { feed.blocks()[1].pruned() } else { feed.blocks()[1].clone() };
        prop_assert_eq!(Block::decode(&block.encode()), Ok(block.clone()));
        prop_assert_eq!(Feed::decode(&feed.encode()), Ok(feed.clone()));
        let heads = Message::Heads(vec![blockend_kernel::Head { author: block.author(), seq: block.seq(), id: block.id() }]);
        prop_assert_eq!(Message::decode(&heads.encode(), &Limits::default()), Ok(heads));
        let want = Message::Want(vec![blockend_kernel::sync::Want { author: block.author(), from_seq: time }]);
        prop_assert_eq!(Message::decode(&want.encode(), &Limits::default()), Ok(want));
        let blocks = Message::Blocks(vec![std::sync::Arc::new(block)]);
        prop_assert_eq!(Message::decode(&blocks.encode(), &Limits::default()), Ok(blocks));
    }
}

#[test]
fn a_block_before_the_oldest_checkpoint_forces_a_counted_full_refold() {
    let expected = reference(&Canonical);
    let mut kernel = open(&Canonical, Config::default().with_checkpoints(2, 2));
    // Everything but author 0's feed, then author 0's feed, whose genesis sorts first.
    let blocks = pool();
    let late: Vec<usize> = (0..PER_AUTHOR).collect();
    let early: Vec<usize> = (PER_AUTHOR..blocks.len()).collect();
    deliver(&mut kernel, &early, &[1]);
    let before = kernel.stats().full_refolds;
    deliver(&mut kernel, &late, &[PER_AUTHOR]);
    assert!(kernel.stats().full_refolds > before);
    assert_eq!(kernel.digests(), expected.digests());
}

#[test]
fn the_order_sensitive_filter_really_depends_on_order() {
    // Guards the property above against a slice that is accidentally commutative: folding the
    // same blocks in another order (ignoring canonical order) would give another verdict set.
    let expected = reference(&Canonical);
    let state = expected.state::<Chain>().expect("registered");
    assert!(state.accepted > 0);
    assert!(
        (state.accepted as usize) < AUTHORS * PER_AUTHOR,
        "some blocks must be state-rejected, or the filter tests nothing"
    );
}
