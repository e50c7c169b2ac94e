//! The sync machine's one entry point, event by event: what a tick does (held blocks released,
//! expired ones collected), how blocks pushed by another channel are judged, and what a local
//! report spreads.

use std::sync::Arc;

use blockend_kernel::sync::{Config, DisconnectReason, Event, Message, Output, Protocol, Want};
use blockend_kernel::{
    Application, Block, Context, DecodeError, Identity, Kernel, ManualClock, Outcome, Registry,
    Report, Signature, Slice, Verdict,
};

/// Counts blocks; each block's contribution expires `TTL` ms after its time.
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
    fn expires_at(&self, ctx: &Context<'_>) -> Option<u64> {
        Some(ctx.block().time() + TTL)
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

const START: u64 = 1_000_000;
const TTL: u64 = 60_000;

fn kernel(clock: &ManualClock, n: u8) -> Kernel {
    Kernel::builder(&App)
        .with_identity(Identity::from_secret([n; 32]))
        .with_clock(clock.clone())
        .open()
        .expect("open")
}

/// One kernel and its machine, with peers 1 and 2 connected (their greetings discarded).
fn node(clock: &ManualClock, config: Config) -> (Kernel, Protocol<u8>) {
    let mut kernel = kernel(clock, 9);
    let mut sync = Protocol::new(config);
    for peer in [1, 2] {
        sync.event(&mut kernel, Event::Connected(peer))
            .expect("memory store");
    }
    (kernel, sync)
}

/// The blocks sent to `to` in `outputs`.
fn blocks_to(outputs: &[Output<u8>], to: u8) -> Vec<Arc<Block>> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                to: t,
                message: Message::Blocks(blocks),
            } if *t == to => Some(blocks.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn wants_to(outputs: &[Output<u8>], to: u8) -> Vec<Want> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                to: t,
                message: Message::Want(wants),
            } if *t == to => Some(wants.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn a_tick_releases_held_blocks_and_pushes_them() {
    let clock = ManualClock::new(START);
    let (mut kernel, mut sync) = node(&clock, Config::default());
    let author = Identity::from_secret([30; 32]);
    let early = Block::sign(&author, None, START + 60_000, vec![1]);
    let report = kernel.dispatch([early.clone()]).expect("memory store");
    assert!(matches!(
        report.outcome(&early.id()),
        Some(Outcome::TimestampFromFuture { .. })
    ));
    let step = sync.event(&mut kernel, Event::Tick).expect("memory store");
    assert!(step.report.is_none(), "nothing is due yet");
    assert!(blocks_to(&step.outputs, 1).is_empty());

    clock.advance(60_000);
    let step = sync.event(&mut kernel, Event::Tick).expect("memory store");
    let report = step.report.expect("the tick polled the kernel");
    assert_eq!(report.accepted.len(), 1);
    assert!(kernel.counts(&early.id()));
    for peer in [1, 2] {
        assert_eq!(blocks_to(&step.outputs, peer).len(), 1, "pushed to {peer}");
    }
}

#[test]
fn a_tick_collects_expired_blocks() {
    let clock = ManualClock::new(START);
    let (mut kernel, mut sync) = node(&clock, Config::default());
    let block = kernel.create_block(vec![1]).expect("accepted");
    assert_eq!(kernel.state::<Count>(), Some(&1));
    let step = sync.event(&mut kernel, Event::Tick).expect("memory store");
    assert_eq!(step.collected, 0);
    clock.advance(TTL + 1);
    let step = sync.event(&mut kernel, Event::Tick).expect("memory store");
    assert_eq!(step.collected, 1);
    assert_eq!(kernel.state::<Count>(), Some(&0));
    let held = kernel.block(&block.id()).expect("the header stays");
    assert!(held.body().is_none());
}

#[test]
fn pushed_blocks_are_judged_but_left_to_their_channel_and_an_orphan_asks_its_sender_on_tick() {
    let clock = ManualClock::new(START);
    let (mut kernel, mut sync) = node(&clock, Config::default());
    let author = Identity::from_secret([31; 32]);
    let genesis = Arc::new(Block::sign(&author, None, START - 10, vec![1]));
    let next = Arc::new(Block::sign(
        &author,
        Some((genesis.id(), 0, genesis.time())),
        START - 5,
        vec![2],
    ));

    let step = sync
        .event(
            &mut kernel,
            Event::Pushed {
                from: 1,
                blocks: vec![next.clone()],
            },
        )
        .expect("memory store");
    assert_eq!(step.received, vec![next.id()]);
    let report = step.report.expect("dispatched");
    assert_eq!(report.outcome(&next.id()), Some(&Outcome::WaitingForParent));
    assert!(
        wants_to(&step.outputs, 1).is_empty(),
        "the parent may still come along another path"
    );
    let step = sync.event(&mut kernel, Event::Tick).expect("memory store");
    assert_eq!(
        wants_to(&step.outputs, 1),
        vec![Want {
            author: author.public(),
            from_seq: 0
        }],
        "the relay is asked for the gap on the tick"
    );
    assert!(wants_to(&step.outputs, 2).is_empty());

    let step = sync
        .event(
            &mut kernel,
            Event::Pushed {
                from: 1,
                blocks: vec![genesis.clone()],
            },
        )
        .expect("memory store");
    let report = step.report.expect("dispatched");
    assert_eq!(
        report.accepted.len(),
        2,
        "the gap filled, the orphan stitched in"
    );
    assert!(
        blocks_to(&step.outputs, 2).is_empty(),
        "the other channel spreads pushed blocks"
    );
    assert!(step.penalties.is_empty());
}

#[test]
fn a_forged_pushed_block_is_charged_to_the_peer_that_pushed_it() {
    let clock = ManualClock::new(START);
    let config = Config::default().with_max_invalid(1);
    let (mut kernel, mut sync) = node(&clock, config);
    let author = Identity::from_secret([32; 32]);
    let forge = |n: u8| {
        let honest = Block::sign(&author, None, START + u64::from(n), vec![n]);
        let forged = Block::from_parts(honest.header().clone(), Signature([7; 64]), Some(vec![n]))
            .expect("the body matches");
        Arc::new(forged)
    };
    let step = sync
        .event(
            &mut kernel,
            Event::Pushed {
                from: 2,
                blocks: vec![forge(1)],
            },
        )
        .expect("memory store");
    assert!(matches!(
        step.report.as_ref().and_then(|r| r.outcome(&forge(1).id())),
        Some(Outcome::Invalid(_))
    ));
    assert_eq!(step.penalties, vec![(2, 1)]);
    assert!(step.outputs.is_empty());
    let step = sync
        .event(
            &mut kernel,
            Event::Pushed {
                from: 2,
                blocks: vec![forge(2)],
            },
        )
        .expect("memory store");
    assert_eq!(
        step.outputs,
        vec![Output::Disconnect {
            peer: 2,
            reason: DisconnectReason::TooManyInvalid
        }]
    );
    assert_eq!(sync.peers().copied().collect::<Vec<_>>(), vec![1]);
    assert_eq!(sync.peer_stats(&1).map(|s| s.invalid), Some(0));
}

#[test]
fn blocks_pushed_from_an_unknown_peer_are_judged_and_charge_nobody() {
    let clock = ManualClock::new(START);
    let (mut kernel, mut sync) = node(&clock, Config::default());
    let author = Identity::from_secret([33; 32]);
    let honest = Block::sign(&author, None, START, vec![1]);
    let forged = Block::from_parts(honest.header().clone(), Signature([7; 64]), Some(vec![1]))
        .expect("the body matches");
    let step = sync
        .event(
            &mut kernel,
            Event::Pushed {
                from: 7,
                blocks: vec![Arc::new(forged)],
            },
        )
        .expect("memory store");
    assert_eq!(step.report.expect("judged").invalid(), 1);
    assert!(step.penalties.is_empty() && step.outputs.is_empty());
}

#[test]
fn malformed_bytes_count_against_their_sender_and_strangers_are_ignored() {
    let clock = ManualClock::new(START);
    let (mut kernel, mut sync) = node(&clock, Config::default());
    let step = sync
        .event(
            &mut kernel,
            Event::Message {
                from: 1,
                bytes: vec![1, 200, 200],
            },
        )
        .expect("memory store");
    assert!(step.malformed.is_some());
    assert_eq!(step.penalties, vec![(1, 1)]);
    let step = sync
        .event(
            &mut kernel,
            Event::Malformed {
                from: 2,
                error: DecodeError::Empty,
            },
        )
        .expect("memory store");
    assert_eq!(step.malformed, Some(DecodeError::Empty));
    assert_eq!(sync.peer_stats(&2).map(|s| s.invalid), Some(1));
    let step = sync
        .event(
            &mut kernel,
            Event::Message {
                from: 5,
                bytes: vec![1, 200, 200],
            },
        )
        .expect("memory store");
    assert!(step.penalties.is_empty() && step.outputs.is_empty() && step.malformed.is_none());
}

#[test]
fn a_local_report_is_pushed_to_every_peer_unless_push_is_off() {
    let clock = ManualClock::new(START);
    for push in [true, false] {
        let (mut kernel, mut sync) = node(&clock, Config::default().with_push(push));
        let block = kernel.create_block(vec![1]).expect("accepted");
        let report = Report::from_accepted(vec![block]);
        let step = sync
            .event(&mut kernel, Event::Local(report))
            .expect("memory store");
        for peer in [1, 2] {
            assert_eq!(blocks_to(&step.outputs, peer).len(), usize::from(push));
        }
    }
}

#[test]
fn a_full_peer_table_turns_a_newcomer_away_and_sources_are_never_reused() {
    let clock = ManualClock::new(START);
    let (mut kernel, mut sync) = node(&clock, Config::default().with_max_peers(2));
    let step = sync
        .event(&mut kernel, Event::Connected(3))
        .expect("memory store");
    assert_eq!(
        step.outputs,
        vec![Output::Disconnect {
            peer: 3,
            reason: DisconnectReason::TooManyPeers
        }]
    );
    let first = sync.source(&1).expect("connected");
    sync.event(&mut kernel, Event::Disconnected(1))
        .expect("memory store");
    sync.event(&mut kernel, Event::Connected(1))
        .expect("memory store");
    let again = sync.source(&1).expect("connected");
    assert_ne!(first, again);
    assert!(again > sync.source(&2).expect("connected"));
}

#[test]
fn a_gap_another_delivery_filled_before_the_tick_is_not_asked_for() {
    let clock = ManualClock::new(START);
    let (mut kernel, mut sync) = node(&clock, Config::default());
    let author = Identity::from_secret([34; 32]);
    let genesis = Arc::new(Block::sign(&author, None, START - 10, vec![1]));
    let next = Arc::new(Block::sign(
        &author,
        Some((genesis.id(), 0, genesis.time())),
        START - 5,
        vec![2],
    ));
    for (from, block) in [(1, next), (2, genesis)] {
        sync.event(
            &mut kernel,
            Event::Pushed {
                from,
                blocks: vec![block],
            },
        )
        .expect("memory store");
    }
    assert_eq!(kernel.head(&author.public()).map(|h| h.seq), Some(1));
    let step = sync.event(&mut kernel, Event::Tick).expect("memory store");
    assert!(wants_to(&step.outputs, 1).is_empty());
    assert!(wants_to(&step.outputs, 2).is_empty());
}
