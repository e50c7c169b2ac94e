//! Capacity-bounded retention: over budget, the lowest-ranked feeds of other authors are
//! evicted whole and tombstoned; own feeds stay; the state is the fold of what is retained.

use blockend_kernel::{
    Application, Block, Config, Context, Feed, Identity, Kernel, ManualClock, Outcome, Registry,
    Slice, Verdict,
};

const T0: u64 = 1_700_000_000_000;
const TTL: u64 = 60_000;

struct Count;
impl Slice for Count {
    type State = std::collections::BTreeMap<[u8; 32], u64>;
    fn name(&self) -> &str {
        "count"
    }
    fn initial(&self) -> Self::State {
        Default::default()
    }
    fn filter(&self, _: &Context<'_>, _: &Self::State) -> Verdict {
        Verdict::Accept
    }
    fn reduce(&self, ctx: &Context<'_>, state: &mut Self::State) {
        *state.entry(ctx.author().0).or_default() += 1;
    }
    fn commutative(&self) -> bool {
        true
    }
}

struct App;
impl Application for App {
    fn register(&self, slices: &mut Registry) {
        slices.add(Count);
    }
}

/// A feed by identity `n` of `len` blocks of 100-byte bodies, its genesis at `start`.
fn feed(n: u8, len: usize, start: u64) -> Vec<Block> {
    let identity = Identity::from_secret([n; 32]);
    let mut feed = Feed::new();
    for i in 0..len {
        feed.append(&identity, vec![n; 100], start + i as u64);
    }
    feed.into_blocks()
}

/// Retention cost of a feed of `len` 100-byte blocks (160 bytes overhead each).
fn cost(len: usize) -> u64 {
    len as u64 * 260
}

fn kernel(clock: &ManualClock, capacity: u64) -> Kernel {
    Kernel::builder(&App)
        .with_clock(clock.clone())
        .with_identity(Identity::from_secret([200; 32]))
        .with_config(
            Config::default()
                .with_capacity_bytes(capacity)
                .with_tombstones(TTL, 16),
        )
        .open()
        .expect("memory store")
}

#[test]
fn over_budget_the_lowest_ranked_feeds_are_evicted_and_own_feeds_stay() {
    let clock = ManualClock::new(T0 + 1_000_000);
    // Room for 25 blocks of other authors.
    let mut kernel = kernel(&clock, cost(25));
    // Own feed: 40 blocks, well over the budget on its own; it does not count against it.
    for _ in 0..40 {
        kernel.create_block(vec![1; 100]).expect("accepted");
    }
    // Old and long feeds rank first; a swarm of young one-block feeds ranks last.
    let old_long = feed(1, 10, T0);
    let old_short = feed(2, 5, T0 + 10);
    let middle = feed(3, 8, T0 + 1_000);
    let young: Vec<Vec<Block>> = (10..20).map(|n| feed(n, 1, T0 + 50_000)).collect();
    for batch in [&old_long, &old_short, &middle] {
        kernel.dispatch(batch.clone()).expect("store");
    }
    let mut evicted = 0;
    for one in &young {
        let report = kernel.dispatch(one.clone()).expect("store");
        evicted += report.count(|o| *o == Outcome::Evicted);
    }
    let stats = kernel.stats();
    assert!(stats.other_bytes <= cost(25), "{stats:?}");
    assert_eq!(stats.own_bytes, cost(40));
    // Kept: the three old feeds (23 blocks) and two of the young ones, which rank by author.
    for block in old_long.iter().chain(&old_short).chain(&middle) {
        assert!(kernel.contains(&block.id()));
    }
    // Equal young feeds tie on age, length and recency; the author breaks the tie, so the
    // two with the lowest keys are the ones kept.
    let mut by_author: Vec<&Vec<Block>> = young.iter().collect();
    by_author.sort_by_key(|f| f[0].author());
    for (rank, one) in by_author.iter().enumerate() {
        assert_eq!(
            kernel.contains(&one[0].id()),
            rank < 2,
            "young feed ranked {rank}"
        );
    }
    assert!(
        evicted > 0 && evicted <= 8,
        "{evicted} arrivals evicted at once"
    );
    assert_eq!(stats.evicted_feeds, 8);
    assert_eq!(kernel.head(&kernel.author()).map(|h| h.seq), Some(39));

    // The state is the fold of what is retained.
    let mut retained: Vec<Block> = kernel
        .heads()
        .iter()
        .flat_map(|h| kernel.feed(&h.author).into_blocks())
        .collect();
    retained.sort_by_key(|b| (b.author(), b.seq()));
    let mut replay = Kernel::builder(&App)
        .with_clock(clock.clone())
        .open()
        .expect("memory");
    replay.dispatch(retained).expect("memory");
    assert_eq!(replay.digests(), kernel.digests());
    assert_eq!(replay.set_hash(), kernel.set_hash());
}

#[test]
fn an_evicted_feed_is_refused_while_its_tombstone_lives() {
    let clock = ManualClock::new(T0 + 1_000_000);
    let mut kernel = kernel(&clock, cost(10));
    let keeper = feed(1, 10, T0);
    let victim = feed(2, 5, T0 + 5_000);
    kernel.dispatch(keeper).expect("store");
    kernel.dispatch(victim.clone()).expect("store");
    assert!(!kernel.contains(&victim[0].id()));
    assert!(kernel.is_tombstoned(&victim[0].author()));

    // A peer re-sends it: refused, with the reason.
    let report = kernel.dispatch(victim.clone()).expect("store");
    let until = T0 + 1_000_000 + TTL;
    assert!(report
        .outcomes
        .iter()
        .all(|(_, o)| *o == Outcome::Tombstoned { until }));
    assert_eq!(kernel.stats().tombstoned, 5);

    // Once the tombstone expires the feed may come back (and, still over budget, go again).
    clock.set(until + 1);
    assert!(!kernel.is_tombstoned(&victim[0].author()));
    let report = kernel.dispatch(victim).expect("store");
    assert_eq!(report.count(|o| *o == Outcome::Evicted), 5);
}

#[test]
fn tombstones_survive_a_reopen() {
    let clock = ManualClock::new(T0 + 1_000_000);
    let mut kernel = kernel(&clock, cost(10));
    kernel.dispatch(feed(1, 10, T0)).expect("store");
    let victim = feed(2, 5, T0 + 5_000);
    kernel.dispatch(victim.clone()).expect("store");
    let store = kernel.close();
    let mut kernel = Kernel::builder(&App)
        .with_boxed_store(store)
        .with_clock(clock.clone())
        .with_config(Config::default().with_capacity_bytes(cost(10)))
        .open()
        .expect("reopen");
    assert!(kernel.is_tombstoned(&victim[0].author()));
    let report = kernel.dispatch(victim).expect("store");
    assert!(matches!(report.outcomes[0].1, Outcome::Tombstoned { .. }));
}

#[test]
fn tombstones_are_bounded() {
    let clock = ManualClock::new(T0 + 1_000_000);
    let mut kernel = kernel(&clock, 0);
    for n in 0..40u8 {
        kernel.dispatch(feed(n + 1, 1, T0)).expect("store");
    }
    assert_eq!(kernel.stats().evicted_feeds, 40);
    let tombstoned = (0..40u8)
        .filter(|n| kernel.is_tombstoned(&Identity::from_secret([n + 1; 32]).public()))
        .count();
    assert_eq!(tombstoned, 16, "max_tombstones is 16");
}
