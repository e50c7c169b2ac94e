//! Expiry garbage collection (DESIGN.md rule 8): a block past its expiry loses its body and
//! its contribution, keeps its header so the chain stays whole, and stays collected after a
//! reopen and when a peer re-sends it.

use blockend_kernel::{
    Application, Block, Context, Feed, Identity, Kernel, ManualClock, Outcome, Registry, Slice,
    Verdict,
};

const T0: u64 = 1_700_000_000_000;
const TTL: u64 = 30_000;

/// Sums bodies; a body starting with 1 expires TTL after its block's time.
struct Notes;
impl Slice for Notes {
    type State = Vec<u8>;
    fn name(&self) -> &str {
        "notes"
    }
    fn initial(&self) -> Vec<u8> {
        Vec::new()
    }
    fn filter(&self, _: &Context<'_>, _: &Vec<u8>) -> Verdict {
        Verdict::Accept
    }
    fn reduce(&self, ctx: &Context<'_>, notes: &mut Vec<u8>) {
        notes.push(ctx.body()[1]);
        notes.sort_unstable();
    }
    fn expires_at(&self, ctx: &Context<'_>) -> Option<u64> {
        (ctx.body().first() == Some(&1)).then(|| ctx.time() + TTL)
    }
    fn commutative(&self) -> bool {
        true
    }
}

struct App;
impl Application for App {
    fn register(&self, slices: &mut Registry) {
        slices.add(Notes);
    }
}

fn open(clock: &ManualClock) -> Kernel {
    Kernel::builder(&App)
        .with_clock(clock.clone())
        .open()
        .expect("memory store")
}

/// One feed: an expiring note (7) between two lasting ones (5, 9).
fn blocks() -> Vec<Block> {
    let identity = Identity::from_secret([8; 32]);
    let mut feed = Feed::new();
    feed.append(&identity, vec![0, 5], T0);
    feed.append(&identity, vec![1, 7], T0 + 1_000);
    feed.append(&identity, vec![0, 9], T0 + 2_000);
    feed.into_blocks()
}

#[test]
fn an_expired_block_loses_its_body_and_contribution_but_keeps_its_header() {
    let clock = ManualClock::new(T0 + 5_000);
    let mut kernel = open(&clock);
    let blocks = blocks();
    kernel.dispatch(blocks.clone()).expect("store");
    assert_eq!(kernel.state::<Notes>(), Some(&vec![5, 7, 9]));
    assert_eq!(kernel.next_expiry(), Some(T0 + 1_000 + TTL));

    // Not yet due.
    assert_eq!(kernel.gc(T0 + 1_000 + TTL - 1).expect("store").collected, 0);
    assert_eq!(kernel.state::<Notes>(), Some(&vec![5, 7, 9]));

    let report = kernel.gc(T0 + 1_000 + TTL + 1_000).expect("store");
    assert_eq!(report.collected, 1);
    assert_eq!(kernel.state::<Notes>(), Some(&vec![5, 9]));
    let header = kernel.block(&blocks[1].id()).expect("the header stays");
    assert_eq!(header.body(), None);
    assert_eq!(header.header(), blocks[1].header());
    assert!(header.verify().is_ok(), "the chain stays verifiable");
    // The chain runs through the collected block: its child still counts.
    assert!(kernel.counts(&blocks[2].id()));
    assert_eq!(kernel.head(&blocks[0].author()).map(|h| h.seq), Some(2));
    assert_eq!(kernel.stats().collected, 1);
    assert_eq!(kernel.next_expiry(), None);
}

#[test]
fn what_was_collected_stays_collected_after_reopen_and_resend() {
    let clock = ManualClock::new(T0 + 5_000);
    let mut kernel = open(&clock);
    let blocks = blocks();
    kernel.dispatch(blocks.clone()).expect("store");
    kernel.gc(T0 + 1_000 + TTL + 1_000).expect("store");
    let digests = kernel.digests();
    let set_hash = kernel.set_hash();

    let store = kernel.close();
    let mut kernel = Kernel::builder(&App)
        .with_boxed_store(store)
        .with_clock(clock.clone())
        .open()
        .expect("reopen");
    assert_eq!(kernel.digests(), digests);
    assert_eq!(kernel.set_hash(), set_hash);
    assert_eq!(
        kernel
            .block(&blocks[1].id())
            .and_then(|b| b.body().map(<[u8]>::to_vec)),
        None
    );
    assert_eq!(kernel.gc_time(), T0 + 1_000 + TTL + 1_000);

    // A peer re-sends the full block: known by id, its body does not come back.
    let report = kernel.dispatch([blocks[1].clone()]).expect("store");
    assert_eq!(report.outcomes()[0].1, Outcome::Duplicate);
    assert_eq!(kernel.state::<Notes>(), Some(&vec![5, 9]));
}

#[test]
fn collecting_before_or_after_arrival_gives_the_same_digests() {
    let after = T0 + 1_000 + TTL + 1_000;
    let blocks = blocks();

    // A: receives everything, then collects.
    let clock = ManualClock::new(after);
    let mut a = open(&clock);
    a.dispatch(blocks.clone()).expect("store");
    a.gc(after).expect("store");

    // B: collects first (nothing to collect), then receives the old blocks.
    let mut b = open(&clock);
    b.gc(after).expect("store");
    let report = b.dispatch(blocks.clone()).expect("store");
    assert_eq!(report.outcome(&blocks[1].id()), Some(&Outcome::Collected));

    // C: receives the pruned header from a peer that collected it.
    let mut c = open(&clock);
    c.gc(after).expect("store");
    let pruned: Vec<Block> = blocks
        .iter()
        .map(|b| a.block(&b.id()).expect("held").as_ref().clone())
        .collect();
    c.dispatch(pruned).expect("store");

    for other in [&b, &c] {
        assert_eq!(other.digests(), a.digests());
        assert_eq!(other.set_hash(), a.set_hash());
        assert_eq!(other.state::<Notes>(), Some(&vec![5, 9]));
    }
}

#[test]
fn a_header_sent_alone_does_not_suppress_a_live_block() {
    // A peer sends only the header of a block that has not expired here (it collected it
    // early, or it wants the content gone). The block enters collected; the full copy, when it
    // comes, brings the content back.
    let clock = ManualClock::new(T0 + 5_000);
    let blocks = blocks();
    let mut honest = open(&clock);
    honest.dispatch(blocks.clone()).expect("store");

    let mut kernel = open(&clock);
    let headers: Vec<Block> = blocks.iter().map(Block::pruned).collect();
    kernel.dispatch(headers).expect("store");
    assert_eq!(kernel.state::<Notes>(), Some(&vec![]));
    let report = kernel.dispatch(blocks.clone()).expect("store");
    assert!(report
        .outcomes()
        .iter()
        .all(|(_, o)| *o == Outcome::Accepted));
    assert_eq!(kernel.state::<Notes>(), Some(&vec![5, 7, 9]));
    assert_eq!(kernel.digests(), honest.digests());
    assert_eq!(kernel.set_hash(), honest.set_hash());
    // And the restored block still expires on time.
    kernel.gc(T0 + 1_000 + TTL).expect("store");
    honest.gc(T0 + 1_000 + TTL).expect("store");
    assert_eq!(kernel.digests(), honest.digests());
    assert_eq!(kernel.state::<Notes>(), Some(&vec![5, 9]));
}
