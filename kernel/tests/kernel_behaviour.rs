//! The kernel engine's promises: subscriptions, duplicates, rejections, held blocks, the
//! bounded mempool and its stitching, invalid blocks, size limits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use blockend_kernel::{
    Application, Block, BlockError, Config, Context, Error, Feed, Identity, Kernel, ManualClock,
    Outcome, Registry, Slice, Verdict,
};
use futures::FutureExt;
use futures::StreamExt;

const NOW: u64 = 1_700_000_000_000;

/// Sums one-byte bodies; rejects 0, ignores longer bodies; counts its reducer calls.
struct Sum {
    calls: Arc<AtomicUsize>,
}

impl Slice for Sum {
    type State = u64;
    fn name(&self) -> &str {
        "sum"
    }
    fn initial(&self) -> u64 {
        0
    }
    fn filter(&self, ctx: &Context<'_>, _: &u64) -> Verdict {
        match ctx.body() {
            [0] => Verdict::Reject("zero adds nothing".into()),
            [_] => Verdict::Accept,
            _ => Verdict::Ignore,
        }
    }
    fn reduce(&self, ctx: &Context<'_>, sum: &mut u64) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        *sum += u64::from(ctx.body()[0]);
    }
    fn commutative(&self) -> bool {
        true
    }
}

struct App {
    calls: Arc<AtomicUsize>,
}

impl Application for App {
    fn register(&self, slices: &mut Registry) {
        slices.add(Sum {
            calls: self.calls.clone(),
        });
    }
}

fn app() -> App {
    App {
        calls: Arc::new(AtomicUsize::new(0)),
    }
}

fn kernel_with(app: &App, clock: &ManualClock, config: Config) -> Kernel {
    Kernel::builder(app)
        .with_clock(clock.clone())
        .with_config(config)
        .open()
        .expect("memory store")
}

fn kernel(app: &App) -> Kernel {
    kernel_with(app, &ManualClock::new(NOW), Config::default())
}

/// A feed of `bodies` by identity `n`, one block a second ending before NOW.
fn feed(n: u8, bodies: &[u8]) -> Vec<Block> {
    let identity = Identity::from_secret([n; 32]);
    let mut feed = Feed::new();
    for (i, &b) in bodies.iter().enumerate() {
        feed.append(&identity, vec![b], NOW - 100_000 + i as u64 * 1000);
    }
    feed.into_blocks()
}

#[test]
fn subscribe_yields_the_initial_state_then_once_per_change() {
    let app = app();
    let mut kernel = kernel(&app);
    let mut states = kernel.subscribe::<Sum>().expect("registered");
    assert_eq!(states.next().now_or_never(), Some(Some(0)));
    assert_eq!(states.next().now_or_never(), None, "nothing changed yet");

    let blocks = feed(1, &[5, 0, 7]);
    kernel.dispatch([blocks[0].clone()]).expect("store");
    assert_eq!(states.next().now_or_never(), Some(Some(5)));
    assert_eq!(states.next().now_or_never(), None);

    // A duplicate, a rejected block and an ignored block change nothing.
    kernel.dispatch([blocks[0].clone()]).expect("store");
    kernel.dispatch([blocks[1].clone()]).expect("store");
    let other = Identity::from_secret([2; 32]);
    let ignored = Block::sign(&other, None, NOW - 5, vec![1, 2, 3]);
    let report = kernel.dispatch([ignored]).expect("store");
    assert_eq!(report.outcomes()[0].1, Outcome::Ignored);
    assert_eq!(states.next().now_or_never(), None);

    kernel.create_block(vec![9]).expect("accepted");
    assert_eq!(states.next().now_or_never(), Some(Some(14)));
    assert_eq!(states.next().now_or_never(), None);
}

#[test]
fn a_duplicate_dispatch_costs_no_reducer_call() {
    let app = app();
    let mut kernel = kernel(&app);
    let blocks = feed(1, &[1, 2, 3, 4]);
    let first = kernel.dispatch(blocks.clone()).expect("store");
    assert_eq!(first.count(|o| *o == Outcome::Accepted), 4);
    let (calls, reductions, verified) = (
        app.calls.load(Ordering::SeqCst),
        kernel.stats().reductions,
        kernel.stats().verified,
    );
    let again = kernel.dispatch(blocks).expect("store");
    assert!(again
        .outcomes()
        .iter()
        .all(|(_, o)| *o == Outcome::Duplicate));
    assert_eq!(app.calls.load(Ordering::SeqCst), calls);
    assert_eq!(kernel.stats().reductions, reductions);
    assert_eq!(
        kernel.stats().verified,
        verified,
        "a duplicate costs a lookup, not a verify"
    );
    assert_eq!(kernel.state::<Sum>(), Some(&10));
}

#[test]
fn a_rejected_create_block_leaves_state_and_store_untouched() {
    let app = app();
    let mut kernel = kernel(&app);
    kernel.create_block(vec![3]).expect("accepted");
    let (state, digest, set_hash, stored) = (
        *kernel.state::<Sum>().expect("registered"),
        kernel.digest::<Sum>(),
        kernel.set_hash(),
        kernel.store().len(),
    );
    let error = kernel.create_block(vec![0]).expect_err("zero is rejected");
    assert!(
        matches!(&error, Error::Rejected { slice, reason } if slice == "sum" && reason == "zero adds nothing"),
        "{error:?}"
    );
    assert!(matches!(
        kernel.create_block(vec![1, 1]),
        Err(Error::Ignored { .. })
    ));
    assert_eq!(kernel.state::<Sum>(), Some(&state));
    assert_eq!(kernel.digest::<Sum>(), digest);
    assert_eq!(kernel.set_hash(), set_hash);
    assert_eq!(kernel.store().len(), stored);
    // The feed continues from the last accepted block.
    let next = kernel.create_block(vec![4]).expect("accepted");
    assert_eq!(next.seq(), 1);
    assert_eq!(kernel.state::<Sum>(), Some(&7));
}

#[test]
fn a_rejected_peer_block_is_reported_and_changes_nothing() {
    let app = app();
    let mut kernel = kernel(&app);
    let blocks = feed(1, &[2, 0, 3]);
    let report = kernel.dispatch(blocks.clone()).expect("store");
    assert_eq!(report.outcome(&blocks[0].id()), Some(&Outcome::Accepted));
    assert_eq!(
        report.outcome(&blocks[1].id()),
        Some(&Outcome::Rejected {
            slice: "sum".into(),
            reason: "zero adds nothing".into()
        })
    );
    // The block after a rejected one is judged on its own: the feed stays linked.
    assert_eq!(report.outcome(&blocks[2].id()), Some(&Outcome::Accepted));
    assert_eq!(kernel.state::<Sum>(), Some(&5));
    assert_eq!(
        report.accepted.len(),
        2,
        "only counted blocks are pushed on"
    );
    // Rule 5: state-rejected blocks stay in the candidate set, and the head (what peers are
    // offered on request) covers them.
    assert!(kernel.contains(&blocks[1].id()));
    assert!(!kernel.counts(&blocks[1].id()));
    assert_eq!(kernel.head(&blocks[0].author()).map(|h| h.seq), Some(2));
}

#[test]
fn a_block_from_the_future_is_held_until_its_time() {
    let app = app();
    let clock = ManualClock::new(NOW);
    let mut kernel = kernel_with(&app, &clock, Config::default());
    let identity = Identity::from_secret([4; 32]);
    let future = Block::sign(&identity, None, NOW + 60_000, vec![8]);
    let report = kernel.dispatch([future.clone()]).expect("store");
    assert_eq!(
        report.outcomes()[0].1,
        Outcome::TimestampFromFuture {
            time: NOW + 60_000,
            now: NOW
        }
    );
    assert_eq!(kernel.state::<Sum>(), Some(&0));
    assert_eq!(
        kernel.next_wakeup(),
        Some(NOW + 60_000 - kernel.config().max_clock_skew_ms)
    );
    assert!(kernel.poll().expect("store").outcomes().is_empty());
    clock.set(NOW + 60_000);
    let report = kernel.poll().expect("store");
    assert_eq!(report.outcome(&future.id()), Some(&Outcome::Accepted));
    assert_eq!(kernel.state::<Sum>(), Some(&8));
    assert_eq!(kernel.next_wakeup(), None);
}

#[test]
fn the_mempool_is_bounded() {
    let app = app();
    let clock = ManualClock::new(NOW);
    let mut kernel = kernel_with(&app, &clock, Config::default().with_mempool(8, usize::MAX));
    // 20 feeds of two blocks; only the second block of each is offered: 20 orphans.
    let orphans: Vec<Block> = (10..30u8).map(|n| feed(n, &[1, 2])[1].clone()).collect();
    let report = kernel.dispatch(orphans).expect("store");
    assert_eq!(report.count(|o| *o == Outcome::WaitingForParent), 20);
    let stats = kernel.stats();
    assert!(stats.mempool_blocks <= 8, "{stats:?}");
    assert_eq!(stats.mempool_evicted, 12);
    assert_eq!(stats.blocks, 0);
}

#[test]
fn the_mempool_stitches_slices_delivered_in_reverse() {
    let app = app();
    let bodies: Vec<u8> = (1..=10).collect();
    let blocks = feed(1, &bodies);
    let mut in_order = kernel(&app);
    in_order.dispatch(blocks.clone()).expect("store");

    let mut reversed = kernel(&app);
    for slice in blocks.chunks(3).rev() {
        let report = reversed.dispatch(slice.to_vec()).expect("store");
        if slice[0].seq() > 0 {
            assert!(report
                .outcomes()
                .iter()
                .all(|(_, o)| *o == Outcome::WaitingForParent));
            assert_eq!(reversed.state::<Sum>(), Some(&0));
        } else {
            assert_eq!(report.count(|o| *o == Outcome::Accepted), 10);
            assert_eq!(report.accepted.len(), 10);
        }
    }
    assert_eq!(reversed.stats().mempool_blocks, 0);
    assert_eq!(reversed.state::<Sum>(), Some(&55));
    assert_eq!(reversed.digests(), in_order.digests());
    assert_eq!(reversed.set_hash(), in_order.set_hash());
}

#[test]
fn an_invalid_block_is_not_stored_and_a_resend_costs_a_lookup() {
    let app = app();
    let mut kernel = kernel(&app);
    let honest = feed(1, &[6])[0].clone();
    let mut bytes = honest.encode();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff; // the body: the id changes, the signature no longer matches
    let forged = Block::decode(&bytes).expect("still a block");
    let report = kernel.dispatch([forged.clone()]).expect("store");
    assert_eq!(
        report.outcomes()[0].1,
        Outcome::Invalid(BlockError::BadSignature)
    );
    assert_eq!(kernel.store().len(), 0);
    let verified = kernel.stats().verified;
    let again = kernel.dispatch([forged]).expect("store");
    assert_eq!(
        again.outcomes()[0].1,
        Outcome::Invalid(BlockError::BadSignature)
    );
    assert_eq!(kernel.stats().verified, verified);
    assert_eq!(kernel.stats().invalid, 2);
}

#[test]
fn an_oversized_body_is_refused() {
    let app = app();
    let clock = ManualClock::new(NOW);
    let mut kernel = kernel_with(&app, &clock, Config::default().with_max_body_bytes(16));
    let identity = Identity::from_secret([6; 32]);
    let big = Block::sign(&identity, None, NOW, vec![1; 17]);
    let report = kernel.dispatch([big]).expect("store");
    assert_eq!(
        report.outcomes()[0].1,
        Outcome::Invalid(BlockError::TooLarge { len: 17, max: 16 })
    );
    assert!(matches!(
        kernel.create_block(vec![1; 17]),
        Err(Error::Invalid(BlockError::TooLarge { len: 17, max: 16 }))
    ));
    assert_eq!(kernel.store().len(), 0);
}

#[test]
fn blocks_linking_wrongly_to_their_parent_are_invalid() {
    let app = app();
    let mut kernel = kernel(&app);
    let alice = Identity::from_secret([1; 32]);
    let bob = Identity::from_secret([2; 32]);
    let genesis = Block::sign(&alice, None, NOW - 10, vec![1]);
    kernel.dispatch([genesis.clone()]).expect("store");
    // Bob "continues" Alice's feed: one feed per author.
    let foreign = Block::sign(&bob, Some((genesis.id(), 0, NOW - 10)), NOW - 5, vec![1]);
    // A time before the parent's cannot be signed through Block::sign (it clamps); build the
    // header by hand.
    let mut header = Block::sign(&alice, Some((genesis.id(), 0, NOW - 10)), NOW - 5, vec![2])
        .header()
        .clone();
    header.time = NOW - 20;
    let id = header.id();
    let early = Block::from_parts(header, alice.sign(&id), Some(vec![2])).expect("body matches");
    let report = kernel.dispatch([foreign, early]).expect("store");
    assert_eq!(
        report.outcomes()[0].1,
        Outcome::Invalid(BlockError::ForeignParent)
    );
    assert!(matches!(
        report.outcomes()[1].1,
        Outcome::Invalid(BlockError::TimeBeforeParent { .. })
    ));
    assert_eq!(kernel.stats().blocks, 1);
}

#[test]
fn two_slices_with_one_name_are_refused() {
    struct Twice;
    impl Application for Twice {
        fn register(&self, slices: &mut Registry) {
            let calls = Arc::new(AtomicUsize::new(0));
            slices.add(Sum {
                calls: calls.clone(),
            });
            slices.add(Sum { calls });
        }
    }
    assert!(matches!(
        Kernel::builder(&Twice).open(),
        Err(Error::DuplicateSlice { name }) if name == "sum"
    ));
}

#[test]
fn a_kernel_reopened_on_its_store_has_the_same_identity_and_state() {
    let app = app();
    let store = blockend_kernel::MemoryStore::new();
    let clock = ManualClock::new(NOW);
    let mut kernel = Kernel::builder(&app)
        .with_store(store)
        .with_clock(clock.clone())
        .open()
        .expect("open");
    kernel.create_block(vec![2]).expect("accepted");
    kernel.dispatch(feed(9, &[3, 4])).expect("store");
    // Copy what the store holds into a fresh MemoryStore, as a restart would find it.
    let mut copy = blockend_kernel::MemoryStore::new();
    let secret = kernel.store().identity().expect("memory").expect("saved");
    blockend_kernel::BlockStore::set_identity(&mut copy, secret).expect("memory");
    let batch = blockend_kernel::store::Batch {
        put: kernel.store().blocks().expect("memory"),
        ..Default::default()
    };
    blockend_kernel::BlockStore::commit(&mut copy, batch).expect("memory");
    let reopened = Kernel::builder(&app)
        .with_store(copy)
        .with_clock(clock)
        .open()
        .expect("open");
    assert_eq!(reopened.author(), kernel.author());
    assert_eq!(reopened.digests(), kernel.digests());
    assert_eq!(reopened.set_hash(), kernel.set_hash());
    assert_eq!(reopened.heads(), kernel.heads());
}
