//! Capacity-bounded retention under the default ranking (followed authors, then this node's
//! arrival order, then length): a full store refuses newcomers at the door, whatever their
//! blocks claim; growth pushes out the most junior feeds, whole, and tombstones them; own
//! feeds stay; the state is the fold of what is retained.

use blockend_kernel::{
    Application, Block, Config, Context, Feed, Identity, Kernel, ManualClock, OldestLongest,
    Outcome, PublicKey, Registry, Slice, Verdict,
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

fn config(capacity: u64) -> Config {
    Config::default()
        .with_capacity_bytes(capacity)
        .with_tombstones(TTL, 16)
}

fn kernel(clock: &ManualClock, capacity: u64) -> Kernel {
    Kernel::builder(&App)
        .with_clock(clock.clone())
        .with_identity(Identity::from_secret([200; 32]))
        .with_config(config(capacity))
        .open()
        .expect("memory store")
}

fn author(n: u8) -> PublicKey {
    Identity::from_secret([n; 32]).public()
}

/// The whole feed of `n` is held.
fn holds(kernel: &Kernel, blocks: &[Block]) -> bool {
    blocks.iter().all(|b| kernel.contains(&b.id()))
}

#[test]
fn a_full_store_refuses_newcomers_at_the_door_and_own_feeds_stay() {
    let clock = ManualClock::new(T0 + 1_000_000);
    // Room for 25 blocks of other authors.
    let mut kernel = kernel(&clock, cost(25));
    // Own feed: 40 blocks, well over the budget on its own; it does not count against it.
    for _ in 0..40 {
        kernel.create_block(vec![1; 100]).expect("accepted");
    }
    let first = feed(1, 10, T0 + 5_000);
    let second = feed(2, 5, T0 + 10_000);
    let third = feed(3, 8, T0 + 20_000);
    for batch in [&first, &second, &third] {
        kernel.dispatch(batch.clone()).expect("store");
    }
    // Newcomers, half of them claiming to be older than every feed held: the first two fit,
    // the rest are refused at the door, in arrival order, whatever they claim.
    let newcomers: Vec<Vec<Block>> = (10..20u8)
        .map(|n| feed(n, 1, if n % 2 == 0 { n.into() } else { T0 + 50_000 }))
        .collect();
    let mut refused = 0;
    for one in &newcomers {
        let report = kernel.dispatch(one.clone()).expect("store");
        refused += report.count(|o| *o == Outcome::OverCapacity);
        assert_eq!(report.count(|o| *o == Outcome::Evicted), 0);
    }
    let stats = kernel.stats();
    assert!(stats.other_bytes <= cost(25), "{stats:?}");
    assert_eq!(stats.own_bytes, cost(40));
    assert!(holds(&kernel, &first) && holds(&kernel, &second) && holds(&kernel, &third));
    for (i, one) in newcomers.iter().enumerate() {
        assert_eq!(kernel.contains(&one[0].id()), i < 2, "newcomer {i}");
    }
    assert_eq!(refused, 8);
    assert_eq!(stats.over_capacity, 8);
    assert_eq!(
        stats.evicted_feeds, 0,
        "nothing was admitted only to be evicted"
    );
    assert_eq!(kernel.head(&kernel.author()).map(|h| h.seq), Some(39));
    // Sync would not ask for a newcomer's feed: it would be refused.
    assert!(kernel.refuses_feed(&author(99)));
    assert!(!kernel.refuses_feed(&author(1)));
    assert!(!kernel.refuses_feed(&kernel.author()));

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
fn a_flood_of_fresh_and_backdated_feeds_never_evicts_a_senior_feed() {
    let clock = ManualClock::new(T0 + 1_000_000);
    let honest: Vec<Vec<Block>> = (1..=5u8).map(|n| feed(n, 20, T0 + u64::from(n))).collect();
    // The honest feeds fit with room for 10 more blocks.
    let mut kernel = kernel(&clock, cost(5 * 20 + 10));
    for one in &honest {
        kernel.dispatch(one.clone()).expect("store");
    }
    // 2,000 fresh identities, half backdated to 1970, some with long feeds.
    let mut stored = 0;
    for i in 0..2_000u32 {
        let identity = Identity::from_secret(blake3::hash(&i.to_be_bytes()).into());
        let start = if i % 2 == 0 {
            u64::from(i)
        } else {
            T0 + 900_000
        };
        let len = if i % 7 == 0 { 30 } else { 1 };
        let mut sybil = Feed::new();
        for j in 0..len {
            sybil.append(&identity, vec![7; 100], start + j);
        }
        let report = kernel.dispatch(sybil.into_blocks()).expect("store");
        stored += report.count(|o| *o == Outcome::Accepted);
    }
    for one in &honest {
        assert!(holds(&kernel, one), "an honest feed lost blocks");
    }
    let stats = kernel.stats();
    assert!(stats.other_bytes <= cost(110), "{stats:?}");
    assert_eq!(stats.evicted_feeds, 0);
    assert!(stored <= 10, "{stored} sybil blocks stored");
    assert!(stats.over_capacity > 1_900, "{stats:?}");
}

#[test]
fn growth_pushes_out_the_most_junior_feed_whatever_its_claimed_age() {
    let clock = ManualClock::new(T0 + 1_000_000);
    let mut kernel = kernel(&clock, cost(15));
    let senior = feed(1, 11, T0);
    // The junior claims to be far older than the senior.
    let junior = feed(2, 5, 1_000);
    kernel.dispatch(senior[..10].to_vec()).expect("store");
    kernel.dispatch(junior.clone()).expect("store");
    assert!(holds(&kernel, &junior));
    let report = kernel.dispatch(senior[10..].to_vec()).expect("store");
    assert_eq!(report.outcome(&senior[10].id()), Some(&Outcome::Accepted));
    assert!(holds(&kernel, &senior));
    assert!(!kernel.contains(&junior[0].id()));
    assert!(kernel.is_tombstoned(&author(2)));
    assert!(kernel.refuses_feed(&author(2)));
    assert_eq!(kernel.stats().evicted_feeds, 1);
}

#[test]
fn an_evicted_feed_is_refused_while_its_tombstone_lives() {
    let clock = ManualClock::new(T0 + 1_000_000);
    let mut kernel = kernel(&clock, cost(15));
    let keeper = feed(1, 11, T0);
    let victim = feed(2, 5, T0 + 5_000);
    kernel.dispatch(keeper[..10].to_vec()).expect("store");
    kernel.dispatch(victim.clone()).expect("store");
    kernel.dispatch(keeper[10..].to_vec()).expect("store");
    assert!(!kernel.contains(&victim[0].id()));
    assert!(kernel.is_tombstoned(&victim[0].author()));

    // A peer re-sends it: refused, with the reason.
    let report = kernel.dispatch(victim.clone()).expect("store");
    let until = T0 + 1_000_000 + TTL;
    assert!(report
        .outcomes()
        .iter()
        .all(|(_, o)| *o == Outcome::Tombstoned { until }));
    assert_eq!(kernel.stats().tombstoned, 5);

    // Once the tombstone expires the feed may come back, as a newcomer: what fits is taken,
    // the rest is refused at the door.
    clock.set(until + 1);
    assert!(!kernel.is_tombstoned(&victim[0].author()));
    let report = kernel.dispatch(victim).expect("store");
    assert_eq!(report.count(|o| *o == Outcome::Accepted), 4);
    assert_eq!(report.count(|o| *o == Outcome::OverCapacity), 1);
}

#[test]
fn tombstones_arrivals_and_follows_survive_a_reopen() {
    let clock = ManualClock::new(T0 + 1_000_000);
    let mut kernel = kernel(&clock, cost(15));
    let keeper = feed(1, 11, T0);
    let victim = feed(2, 5, T0 + 5_000);
    let later = feed(3, 1, 5);
    kernel.dispatch(keeper[..9].to_vec()).expect("store");
    kernel.dispatch(victim.clone()).expect("store");
    kernel.dispatch(keeper[9..10].to_vec()).expect("store");
    assert!(kernel.follow(author(4)).expect("follow"));
    let store = kernel.close();
    let mut kernel = Kernel::builder(&App)
        .with_boxed_store(store)
        .with_clock(clock.clone())
        .with_identity(Identity::from_secret([200; 32]))
        .with_config(config(cost(15)))
        .open()
        .expect("reopen");
    assert!(kernel.is_followed(&author(4)));
    // The store is full (15 blocks): a newcomer is refused, the keeper's growth pushes out the
    // victim, which arrived after it: the order survived the reopen.
    let report = kernel.dispatch(later.clone()).expect("store");
    assert_eq!(report.outcome(&later[0].id()), Some(&Outcome::OverCapacity));
    kernel.dispatch(keeper[10..].to_vec()).expect("store");
    assert!(holds(&kernel, &keeper));
    assert!(!kernel.contains(&victim[0].id()));
    let store = kernel.close();
    let mut kernel = Kernel::builder(&App)
        .with_boxed_store(store)
        .with_clock(clock.clone())
        .with_identity(Identity::from_secret([200; 32]))
        .with_config(config(cost(15)))
        .open()
        .expect("reopen");
    assert!(kernel.is_tombstoned(&victim[0].author()));
    let report = kernel.dispatch(victim).expect("store");
    assert!(matches!(report.outcomes()[0].1, Outcome::Tombstoned { .. }));
}

#[test]
fn a_followed_author_outranks_seniority_and_its_tombstone_is_lifted() {
    let clock = ManualClock::new(T0 + 1_000_000);
    let mut kernel = kernel(&clock, cost(15));
    let keeper = feed(1, 11, T0);
    let friend = feed(2, 5, T0 + 5_000);
    kernel.dispatch(keeper[..10].to_vec()).expect("store");
    kernel.dispatch(friend.clone()).expect("store");
    kernel.dispatch(keeper[10..].to_vec()).expect("store");
    assert!(kernel.is_tombstoned(&author(2)));
    // The user follows the evicted author: the tombstone goes, and its feed now outranks the
    // senior keeper, which is pushed out to make room.
    assert!(kernel.follow(author(2)).expect("follow"));
    assert!(
        !kernel.follow(author(2)).expect("follow"),
        "already followed"
    );
    assert!(!kernel.is_tombstoned(&author(2)));
    assert!(!kernel.refuses_feed(&author(2)));
    kernel.dispatch(friend.clone()).expect("store");
    assert!(holds(&kernel, &friend));
    assert!(!kernel.contains(&keeper[0].id()));
    // Filled up again by a newcomer; a followed newcomer is not refused at the door.
    let filler = feed(5, 10, T0 + 7_000);
    kernel.dispatch(filler.clone()).expect("store");
    assert!(holds(&kernel, &filler));
    assert!(kernel.follow(author(3)).expect("follow"));
    assert!(!kernel.refuses_feed(&author(3)));
    assert!(kernel.refuses_feed(&author(4)));
    assert!(kernel.unfollow(&author(3)).expect("unfollow"));
    assert!(!kernel.unfollow(&author(3)).expect("unfollow"));
    assert!(kernel.refuses_feed(&author(3)));
    assert_eq!(kernel.follows().count(), 1);
    assert_eq!(kernel.stats().other_bytes, cost(15));
}

#[test]
fn tombstones_are_bounded() {
    let clock = ManualClock::new(T0 + 1_000_000);
    // Each newcomer claims an older genesis than the last and, under the genesis-time ranking,
    // pushes it out.
    let mut kernel = Kernel::builder(&App)
        .with_clock(clock.clone())
        .with_identity(Identity::from_secret([200; 32]))
        .with_config(config(cost(1)))
        .with_retention(OldestLongest)
        .open()
        .expect("memory store");
    for n in 0..40u8 {
        kernel
            .dispatch(feed(n + 1, 1, T0 - u64::from(n)))
            .expect("store");
    }
    assert_eq!(kernel.stats().evicted_feeds, 39);
    let tombstoned = (0..40u8)
        .filter(|n| kernel.is_tombstoned(&author(n + 1)))
        .count();
    assert_eq!(tombstoned, 16, "max_tombstones is 16");
}

#[cfg(feature = "rocksdb")]
#[test]
fn arrivals_and_follows_survive_a_reopen_on_rocksdb() {
    use blockend_kernel::store::RocksStore;
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0 + 1_000_000);
    let open = || {
        Kernel::builder(&App)
            .with_store(RocksStore::open(dir.path()).expect("open"))
            .with_clock(clock.clone())
            .with_identity(Identity::from_secret([200; 32]))
            .with_config(config(cost(15)))
            .open()
            .expect("kernel")
    };
    let keeper = feed(1, 11, T0);
    let victim = feed(2, 5, 1_000);
    let mut kernel = open();
    kernel.dispatch(keeper[..10].to_vec()).expect("store");
    kernel.dispatch(victim.clone()).expect("store");
    assert!(kernel.follow(author(9)).expect("follow"));
    assert!(kernel.follow(author(8)).expect("follow"));
    assert!(kernel.unfollow(&author(8)).expect("unfollow"));
    drop(kernel.close());
    let mut kernel = open();
    assert_eq!(
        kernel.follows().copied().collect::<Vec<_>>(),
        vec![author(9)]
    );
    kernel.dispatch(keeper[10..].to_vec()).expect("store");
    assert!(holds(&kernel, &keeper), "the keeper arrived first");
    assert!(!kernel.contains(&victim[0].id()));
}

#[test]
fn the_retention_listing_shows_own_kept_frozen_and_evicted_feeds_in_rank_order() {
    use blockend_kernel::Standing;
    let clock = ManualClock::new(T0 + 1_000_000);
    let mut kernel = kernel(&clock, cost(15));
    kernel.create_block(vec![1; 100]).expect("own");
    let keeper = feed(1, 11, T0);
    let victim = feed(2, 5, T0 + 5_000);
    kernel.dispatch(keeper[..10].to_vec()).expect("store");
    kernel.dispatch(victim).expect("store");
    kernel.dispatch(keeper[10..].to_vec()).expect("store");
    // A fork at genesis: a feed frozen there, kept as its proof.
    let forker = Identity::from_secret([3; 32]);
    let a = Block::sign(&forker, None, T0 + 9, vec![1]);
    let b = Block::sign(&forker, None, T0 + 9, vec![2]);
    kernel.dispatch([a, b]).expect("store");
    assert!(kernel.follow(author(3)).expect("follow"));
    let listing = kernel.retention();
    let summary: Vec<(PublicKey, Option<u64>, Standing)> = listing
        .iter()
        .map(|f| (f.author, f.rank, f.standing))
        .collect();
    assert_eq!(
        summary,
        vec![
            (kernel.author(), Some(0), Standing::Own),
            (author(3), Some(1), Standing::Frozen { at: 0 }),
            (author(1), Some(2), Standing::Kept),
            (
                author(2),
                None,
                Standing::Evicted {
                    until: T0 + 1_000_000 + TTL
                }
            ),
        ]
    );
    assert_eq!(listing[2].length, 11);
    assert_eq!(listing[2].bytes, cost(11));
    assert_eq!(listing[2].arrival, Some(1), "the own feed arrived first");
    assert!(listing[1].followed && !listing[2].followed);
}

#[test]
fn orphans_of_feeds_a_full_store_would_refuse_are_refused_before_the_mempool() {
    let clock = ManualClock::new(T0 + 1_000_000);
    let mut kernel = kernel(&clock, cost(10));
    kernel.dispatch(feed(1, 10, T0)).expect("store");
    // Blocks 1.. of 50 fresh feeds, their geneses withheld: each would wait for its parent.
    let mut orphans = Vec::new();
    for n in 10..60u8 {
        orphans.extend(feed(n, 3, T0).into_iter().skip(1));
    }
    let report = kernel.dispatch(orphans).expect("store");
    assert_eq!(report.count(|o| *o == Outcome::OverCapacity), 100);
    assert_eq!(report.count(|o| *o == Outcome::WaitingForParent), 0);
}

#[test]
fn a_feed_held_in_part_with_no_room_for_more_is_not_asked_for_until_room_frees() {
    let clock = ManualClock::new(T0 + 1_000_000);
    let mut kernel = kernel(&clock, cost(15));
    let senior = feed(1, 10, T0);
    let partial = feed(2, 8, T0);
    kernel.dispatch(senior.clone()).expect("store");
    let report = kernel.dispatch(partial.clone()).expect("store");
    assert_eq!(report.count(|o| *o == Outcome::Accepted), 5);
    assert_eq!(report.count(|o| *o == Outcome::OverCapacity), 3);
    // Held in part; its next block has no room: sync need not ask for the rest.
    assert!(kernel.contains(&partial[4].id()));
    assert!(kernel.refuses_feed(&author(2)));
    assert!(
        !kernel.refuses_feed(&author(1)),
        "the senior may still grow"
    );
    // Following the author clears the refusal: its feed now outranks the senior.
    assert!(kernel.follow(author(2)).expect("follow"));
    assert!(!kernel.refuses_feed(&author(2)));
    kernel.dispatch(partial[5..].to_vec()).expect("store");
    assert!(holds(&kernel, &partial));
}

#[test]
fn an_unsigned_block_naming_a_held_author_never_switches_off_sync_for_its_feed() {
    use blockend_kernel::Signature;
    let clock = ManualClock::new(T0 + 1_000_000);
    let mut kernel = kernel(&clock, cost(15));
    let senior = feed(1, 10, T0);
    let junior = feed(2, 5, T0 + 1);
    kernel.dispatch(senior.clone()).expect("store");
    kernel.dispatch(junior.clone()).expect("store");
    // A forger names each author on a large block with a signature that does not verify.
    for (n, head) in [(1u8, &senior[9]), (2, &junior[4])] {
        let honest = Block::sign(
            &Identity::from_secret([n; 32]),
            Some((head.id(), head.seq(), head.time())),
            head.time() + 1,
            vec![n; 60_000],
        );
        let forged = Block::from_parts(
            honest.header().clone(),
            Signature([7; 64]),
            honest.body().map(<[u8]>::to_vec),
        )
        .expect("the body matches");
        let report = kernel.dispatch([forged]).expect("store");
        assert!(
            matches!(report.outcomes()[0].1, Outcome::Invalid(_)),
            "{report:?}"
        );
    }
    assert!(!kernel.refuses_feed(&author(1)));
    assert!(!kernel.refuses_feed(&author(2)));
}

#[test]
fn a_fork_of_a_junior_feed_in_a_full_store_is_proven_not_refused() {
    let clock = ManualClock::new(T0 + 1_000_000);
    let mut kernel = kernel(&clock, cost(15));
    kernel.dispatch(feed(1, 10, T0)).expect("store");
    let junior = feed(2, 5, T0 + 1);
    kernel.dispatch(junior.clone()).expect("store");
    // The junior's author signs a second block at seq 3: a fork, which shrinks the feed.
    let identity = Identity::from_secret([2; 32]);
    let parent = &junior[2];
    let twin = Block::sign(
        &identity,
        Some((parent.id(), parent.seq(), parent.time())),
        parent.time() + 1,
        vec![9; 100],
    );
    let report = kernel.dispatch([twin.clone()]).expect("store");
    assert_eq!(report.outcome(&twin.id()), Some(&Outcome::Fork { seq: 3 }));
    assert!(kernel.fork_proof(&author(2)).is_some());
}
