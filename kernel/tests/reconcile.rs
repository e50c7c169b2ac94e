//! Range-based reconciliation of heads (`sync::Message::Reconcile`): peers in sync exchange
//! one small message, peers that differ pay for the difference and end with the same heads,
//! feeds one side will not take are not found again every round, and what one peer can make
//! the machine answer is bounded per tick.

use blockend_kernel::sync::lockstep::Lockstep;
use blockend_kernel::sync::{
    Config, Event, Message, Output, Part, Protocol, Reconcile, BUCKETS, DECLINE_TICKS,
    RECONCILES_PER_TICK, WALKS_PER_TICK, WALK_SLACK,
};
use blockend_kernel::{
    Application, Block, Context, Feed, Identity, Kernel, ManualClock, PublicKey, Registry, Slice,
    Verdict,
};
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000;

struct Count;
impl Slice for Count {
    type State = u64;
    fn name(&self) -> &str {
        "count"
    }
    fn initial(&self) -> u64 {
        0
    }
    fn filter(&self, _: &Context<'_>, _: &u64) -> Verdict {
        Verdict::Accept
    }
    fn reduce(&self, _: &Context<'_>, n: &mut u64) {
        *n += 1;
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

fn kernel(clock: &ManualClock, me: u64, config: blockend_kernel::Config) -> Kernel {
    Kernel::builder(&App)
        .with_identity(identity(1_000_000 + me))
        .with_clock(clock.clone())
        .with_config(config)
        .open()
        .expect("memory store")
}

fn identity(n: u64) -> Identity {
    let mut secret = [7; 32];
    secret[..8].copy_from_slice(&n.to_le_bytes());
    Identity::from_secret(secret)
}

/// The first `len` blocks of author `n`'s feed.
fn feed(n: u64, len: usize) -> Vec<Block> {
    let identity = identity(n);
    let mut feed = Feed::new();
    for i in 0..len {
        feed.append(&identity, n.to_le_bytes().to_vec(), T0 + i as u64);
    }
    feed.into_blocks()
}

fn give(kernel: &mut Kernel, blocks: Vec<Block>) {
    let report = kernel.dispatch(blocks).expect("dispatch");
    assert!(report.blame.is_empty());
}

/// Two sides holding `n` one-block feeds each, side 1 with the extra feeds `extra1`, side 0
/// with `longer0` of the shared feeds one block longer.
fn pair(n: u64, extra1: u64, longer0: u64) -> Lockstep {
    let clock = ManualClock::new(T0 + 60_000);
    let mut kernels = [
        kernel(&clock, 0, Default::default()),
        kernel(&clock, 1, Default::default()),
    ];
    for a in 0..n {
        let len = if a < longer0 { 2 } else { 1 };
        let mut blocks = feed(a, len);
        give(&mut kernels[0], blocks.clone());
        blocks.truncate(1);
        give(&mut kernels[1], blocks);
    }
    for a in n..n + extra1 {
        give(&mut kernels[1], feed(a, 1));
    }
    Lockstep::connected(kernels, Config::default()).expect("connect")
}

#[test]
fn peers_in_sync_exchange_one_small_message() {
    let mut pair = pair(2_000, 0, 0);
    let traffic = pair.tick(0).expect("tick");
    assert_eq!(traffic.messages, 1, "{traffic:?}");
    assert_eq!(traffic.round_trips(), 1);
    assert!(traffic.bytes <= 1024, "{traffic:?}");
    // The same heads as a version-1 heads exchange would have sent: 65 bytes a feed.
    let full = Message::heads_pages(pair.kernels[0].heads(), &Default::default());
    assert!(full.iter().map(Message::encoded_len).sum::<usize>() > 100 * traffic.bytes as usize);
}

#[test]
fn one_difference_each_way_costs_a_few_round_trips_and_both_sides_catch_up() {
    let mut pair = pair(2_000, 1, 1);
    let traffic = pair.tick(0).expect("tick");
    assert_eq!(pair.kernels[0].heads(), pair.kernels[1].heads());
    assert!(traffic.round_trips() <= 4, "{traffic:?}");
    assert!(traffic.overhead_bytes() <= 4 * 1024, "{traffic:?}");
    // The next rounds find nothing: at most an opening each, never answered (a side that was
    // opened with since its last tick does not open at all).
    for side in [1, 0, 1, 0] {
        let again = pair.tick(side).expect("tick");
        assert!(again.messages <= 1, "{again:?}");
    }
}

#[test]
fn a_thousand_differences_cost_a_fraction_of_the_heads() {
    let mut pair = pair(4_000, 500, 500);
    let full: usize = [0, 1]
        .map(|side| {
            Message::heads_pages(pair.kernels[side].heads(), &Default::default())
                .iter()
                .map(Message::encoded_len)
                .sum::<usize>()
        })
        .iter()
        .sum();
    let traffic = pair.tick(0).expect("tick");
    assert_eq!(pair.kernels[0].heads(), pair.kernels[1].heads());
    assert!(
        (traffic.overhead_bytes() as usize) < full,
        "{traffic:?} against {full} bytes of full heads"
    );
}

#[test]
fn an_empty_peer_learns_every_feed() {
    let mut pair = pair(0, 300, 0);
    let traffic = pair.tick(0).expect("tick");
    assert_eq!(pair.kernels[0].heads().len(), 300, "{traffic:?}");
    assert_eq!(pair.kernels[0].heads(), pair.kernels[1].heads());
}

/// Side 0 holds forty one-block feeds; side 1 has room for about five.
fn crowded() -> Lockstep {
    let clock = ManualClock::new(T0 + 60_000);
    let small = blockend_kernel::Config::default().with_capacity_bytes(5 * 170);
    let mut kernels = [
        kernel(&clock, 0, Default::default()),
        kernel(&clock, 1, small),
    ];
    for a in 0..40 {
        give(&mut kernels[0], feed(a, 1));
    }
    Lockstep::connected(kernels, Config::default()).expect("connect")
}

#[test]
fn feeds_one_side_refuses_are_declined_and_not_found_again_every_round() {
    let mut pair = crowded();
    let first = pair.tick(0).expect("tick");
    let held = pair.kernels[1].heads().len();
    assert!((1..40).contains(&held), "side 1 holds {held} feeds");
    let mut later = Vec::new();
    for _ in 0..6 {
        later.push(pair.tick(0).expect("tick"));
    }
    // After a round or two both sides leave the refused feeds out: one message, no answer.
    for traffic in &later[2..] {
        assert_eq!(traffic.messages, 1, "{first:?} then {later:?}");
        assert!(traffic.bytes < 1024);
    }
    assert_eq!(
        pair.kernels[1].heads().len(),
        held,
        "nothing more was taken"
    );
}

#[test]
fn a_feed_refused_for_room_is_taken_once_room_frees_whatever_the_tick_phases() {
    let mut pair = crowded();
    for side in [0, 1, 0] {
        pair.tick(side).expect("tick");
    }
    let held = pair.kernels[1].heads().len();
    assert!(held < 40, "side 1 holds {held} feeds");
    pair.kernels[1].set_capacity_bytes(None);
    // Each side ticks on its own phase (every other call). Only the side that refuses a feed
    // renews its decline, so once side 1 has room the feeds come back in: at the latest when
    // the declines run out, sooner when side 0 shows them again.
    let mut ticks = 0;
    while pair.kernels[1].heads().len() < 40 {
        ticks += 1;
        assert!(
            ticks <= 3 * DECLINE_TICKS,
            "side 1 still holds {} feeds",
            pair.kernels[1].heads().len()
        );
        pair.tick((ticks % 2) as usize).expect("tick");
    }
    assert_eq!(pair.kernels[0].heads(), pair.kernels[1].heads());
}

#[test]
fn with_a_grace_a_young_block_is_left_to_push_and_reconciled_once_it_ages() {
    let clock = ManualClock::new(T0 + 60_000);
    let mut kernels = [
        kernel(&clock, 0, Default::default()),
        kernel(&clock, 1, Default::default()),
    ];
    for kernel in &mut kernels {
        for a in 0..100 {
            give(kernel, feed(a, 1));
        }
    }
    // A block written now on side 0 only.
    let identity = identity(500);
    let mut young = Feed::new();
    young.append(&identity, b"young".to_vec(), T0 + 60_000);
    give(&mut kernels[0], young.into_blocks());
    let config = Config::default().with_grace(2_000);
    let mut pair = Lockstep::connected(kernels, config).expect("connect");
    let quiet = pair.tick(0).expect("tick");
    assert_eq!(
        quiet.messages, 1,
        "the young block is not a difference yet: {quiet:?}"
    );
    assert_eq!(pair.kernels[1].heads().len(), 100);
    clock.advance(2_500);
    pair.tick(0).expect("tick");
    assert_eq!(pair.kernels[0].heads(), pair.kernels[1].heads());
}

/// A machine holding one block in each of `feeds` feeds, connected to peer 1.
fn probed(clock: &ManualClock, feeds: u64) -> (Kernel, Protocol<u8>) {
    let mut kernel = kernel(clock, 0, Default::default());
    for a in 0..feeds {
        give(&mut kernel, feed(a, 1));
    }
    let mut machine = Protocol::new(Config::default());
    machine
        .event(&mut kernel, Event::Connected(1u8))
        .expect("connect");
    (kernel, machine)
}

/// Sends 100 reconcile messages whose one fingerprint over every head never agrees (each
/// buys a walk, then a split into sub-ranges) and counts the answers that split.
fn splits_answered(machine: &mut Protocol<u8>, kernel: &mut Kernel) -> u32 {
    answers_where(machine, kernel, |r| r.ranges.len() == BUCKETS)
}

/// Sends the probe of [`splits_answered`] 100 times and counts the answers `counts` accepts.
fn answers_where(
    machine: &mut Protocol<u8>,
    kernel: &mut Kernel,
    counts: impl Fn(&Reconcile) -> bool,
) -> u32 {
    let probe = Message::Reconcile(Reconcile {
        open: Some(1),
        salt: 0,
        ranges: vec![(None, Part::Fingerprint([0xAB; 16]))],
        declined: Vec::new(),
    })
    .encode();
    let mut answered = 0;
    for _ in 0..100 {
        let step = machine
            .event(
                kernel,
                Event::Message {
                    from: 1,
                    bytes: probe.clone(),
                },
            )
            .expect("event");
        for output in step.outputs {
            if let Output::Send {
                message: Message::Reconcile(r),
                ..
            } = output
            {
                if counts(&r) {
                    answered += 1;
                }
            }
        }
    }
    answered
}

#[test]
fn what_one_peer_can_make_the_machine_answer_is_bounded_per_tick() {
    let clock = ManualClock::new(T0 + 60_000);
    let (mut kernel, mut machine) = probed(&clock, 100);
    assert_eq!(
        splits_answered(&mut machine, &mut kernel),
        RECONCILES_PER_TICK
    );
    machine.event(&mut kernel, Event::Tick).expect("tick");
    assert_eq!(
        splits_answered(&mut machine, &mut kernel),
        RECONCILES_PER_TICK
    );
    assert_eq!(
        machine.peer_stats(&1).map(|s| s.invalid),
        Some(0),
        "nobody is punished for asking"
    );
}

#[test]
fn a_peer_buys_a_few_walks_over_every_head_per_tick_not_one_per_message() {
    let clock = ManualClock::new(T0 + 60_000);
    let feeds = 5_000u64;
    let (mut kernel, mut machine) = probed(&clock, feeds);
    // Each probe walks every head twice (fingerprint, then split).
    let budget = WALKS_PER_TICK * feeds + WALK_SLACK;
    let affordable = budget.div_ceil(2 * feeds) as u32;
    assert!(
        affordable < RECONCILES_PER_TICK,
        "the walks bind, not the messages"
    );
    assert_eq!(splits_answered(&mut machine, &mut kernel), affordable);
    machine.event(&mut kernel, Event::Tick).expect("tick");
    assert_eq!(
        splits_answered(&mut machine, &mut kernel),
        affordable,
        "a new tick, a new budget"
    );
    assert_eq!(machine.peer_stats(&1).map(|s| s.invalid), Some(0));
}

#[test]
fn feeds_a_peer_declines_still_count_against_its_walks() {
    let clock = ManualClock::new(T0 + 60_000);
    let feeds = 5_000u64;
    let (mut kernel, mut machine) = probed(&clock, feeds);
    // The peer declines every feed we hold: our heads are all filtered out of its rounds,
    // but each walk still visits every feed.
    let authors: Vec<PublicKey> = (0..feeds).map(|a| identity(a).public()).collect();
    for page in authors.chunks(2_500) {
        let decline = Message::Reconcile(Reconcile {
            open: Some(1),
            salt: 0,
            ranges: Vec::new(),
            declined: page.to_vec(),
        })
        .encode();
        let step = machine
            .event(
                &mut kernel,
                Event::Message {
                    from: 1,
                    bytes: decline,
                },
            )
            .expect("event");
        assert!(step
            .outputs
            .iter()
            .all(|o| !matches!(o, Output::Disconnect { .. })));
    }
    assert_eq!(machine.peer_stats(&1).map(|s| s.invalid), Some(0));
    machine.event(&mut kernel, Event::Tick).expect("tick");
    let answered = answers_where(&mut machine, &mut kernel, |r| {
        r.ranges.iter().any(|(_, p)| matches!(p, Part::Ids(_)))
    });
    // Each probe walks every feed twice (its fingerprint, then the empty list of ids).
    let budget = WALKS_PER_TICK * feeds + WALK_SLACK;
    assert_eq!(u64::from(answered), budget.div_ceil(2 * feeds));
}

#[test]
fn a_malformed_reconcile_message_counts_against_its_sender() {
    let clock = ManualClock::new(T0 + 60_000);
    let mut kernel = kernel(&clock, 0, Default::default());
    let mut machine = Protocol::new(Config::default());
    machine
        .event(&mut kernel, Event::Connected(1u8))
        .expect("connect");
    let key = |b: u8| Some(PublicKey([b; 32]));
    let unordered = Message::Reconcile(Reconcile {
        open: None,
        salt: 0,
        ranges: vec![(key(9), Part::Skip), (key(2), Part::Fingerprint([0; 16]))],
        declined: Vec::new(),
    });
    let step = machine
        .event(
            &mut kernel,
            Event::Message {
                from: 1,
                bytes: unordered.encode(),
            },
        )
        .expect("event");
    assert!(step.malformed.is_some());
    assert_eq!(machine.peer_stats(&1).map(|s| s.invalid), Some(1));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever two sides hold (feeds on one side only, on both at other lengths), one round
    /// opened by either side leaves both with the same heads.
    #[test]
    fn one_round_leaves_both_sides_with_the_same_heads(
        feeds in prop::collection::vec((0usize..4, 0usize..4), 0..120),
        opener in 0usize..2,
    ) {
        let clock = ManualClock::new(T0 + 60_000);
        let mut kernels = [
            kernel(&clock, 0, Default::default()),
            kernel(&clock, 1, Default::default()),
        ];
        for (a, (len0, len1)) in feeds.iter().enumerate() {
            let blocks = feed(a as u64, (*len0).max(*len1));
            for (side, len) in [(0, *len0), (1, *len1)] {
                if len > 0 {
                    give(&mut kernels[side], blocks[..len].to_vec());
                }
            }
        }
        let mut pair = Lockstep::connected(kernels, Config::default()).expect("connect");
        let traffic = pair.tick(opener).expect("tick");
        prop_assert_eq!(pair.kernels[0].heads(), pair.kernels[1].heads(), "{:?}", traffic);
        let quiet = pair.tick(opener).expect("tick");
        prop_assert_eq!(quiet.messages, 1);
    }
}
