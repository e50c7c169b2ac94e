//! The sans-IO sync machine driven by hand: a synchronous message pump between kernels, so
//! every test is deterministic and counts exactly what crossed the "network". The pump talks
//! to the machine through its one entry point, `Protocol::event`; a few tests call the older
//! wrappers (`handle_bytes`), which must keep working.

use std::collections::VecDeque;
use std::sync::Arc;

use blockend_kernel::sync::{DisconnectReason, Event, Message, Output, Protocol};
use blockend_kernel::{
    Application, Block, Context, Identity, Kernel, ManualClock, Registry, Report, Signature, Slice,
    Verdict,
};

struct Sum;
impl Slice for Sum {
    type State = u64;
    fn name(&self) -> &str {
        "sum"
    }
    fn initial(&self) -> u64 {
        0
    }
    fn filter(&self, _: &Context<'_>, _: &u64) -> Verdict {
        Verdict::Accept
    }
    fn reduce(&self, ctx: &Context<'_>, sum: &mut u64) {
        *sum += ctx.body().iter().map(|&b| u64::from(b)).sum::<u64>();
    }
    fn commutative(&self) -> bool {
        true
    }
}

struct App;
impl Application for App {
    fn register(&self, slices: &mut Registry) {
        slices.add(Sum);
    }
}

/// Kernels joined by links; messages queue in order and are delivered one at a time.
struct Net {
    kernels: Vec<Kernel>,
    sync: Vec<Protocol<usize>>,
    queue: VecDeque<(usize, usize, Vec<u8>)>,
    /// Blocks carried per (from, to), counted from the encoded messages.
    carried: Vec<Vec<u64>>,
    disconnects: Vec<(usize, usize, DisconnectReason)>,
}

impl Net {
    fn new(n: usize, clock: &ManualClock) -> Self {
        let kernels = (0..n)
            .map(|i| {
                Kernel::builder(&App)
                    .with_identity(Identity::from_secret([i as u8 + 1; 32]))
                    .with_clock(clock.clone())
                    .open()
                    .expect("open")
            })
            .collect();
        Self {
            kernels,
            sync: (0..n).map(|_| Protocol::default()).collect(),
            queue: VecDeque::new(),
            carried: vec![vec![0; n]; n],
            disconnects: Vec::new(),
        }
    }

    fn route(&mut self, from: usize, outputs: Vec<Output<usize>>) {
        for output in outputs {
            match output {
                Output::Send { to, message } => {
                    if let Message::Blocks(blocks) = &message {
                        self.carried[from][to] += blocks.len() as u64;
                    }
                    self.queue.push_back((from, to, message.encode()));
                }
                Output::Disconnect { peer, reason } => {
                    self.disconnects.push((from, peer, reason));
                    self.sync[peer].disconnect(&from);
                }
            }
        }
    }

    fn event(&mut self, at: usize, event: Event<usize>) {
        let step = self.sync[at]
            .event(&mut self.kernels[at], event)
            .expect("memory store");
        self.route(at, step.outputs);
    }

    fn connect(&mut self, a: usize, b: usize) {
        self.event(a, Event::Connected(b));
        self.event(b, Event::Connected(a));
    }

    fn disconnect(&mut self, a: usize, b: usize) {
        self.event(a, Event::Disconnected(b));
        self.event(b, Event::Disconnected(a));
        self.queue
            .retain(|(f, t, _)| !((*f == a && *t == b) || (*f == b && *t == a)));
    }

    fn create(&mut self, at: usize, body: &[u8]) -> Arc<Block> {
        let block = self.kernels[at]
            .create_block(body.to_vec())
            .expect("accepted");
        let report = Report::from_accepted(vec![block.clone()]);
        self.event(at, Event::Local(report));
        block
    }

    fn run(&mut self) {
        let mut steps = 0;
        while let Some((from, to, bytes)) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 100_000, "the protocol does not quiesce");
            self.event(to, Event::Message { from, bytes });
        }
    }

    fn converged(&self) -> bool {
        let first = (self.kernels[0].set_hash(), self.kernels[0].digests());
        self.kernels
            .iter()
            .all(|k| (k.set_hash(), k.digests()) == first)
    }
}

#[test]
fn connect_exchanges_heads_and_transfers_exactly_what_is_missing() {
    let clock = ManualClock::new(1_000_000);
    let mut net = Net::new(2, &clock);
    for i in 0..7u8 {
        net.create(0, &[i]);
        clock.advance(10);
    }
    for i in 0..3u8 {
        net.create(1, &[i]);
    }
    net.connect(0, 1);
    net.run();
    assert!(net.converged());
    assert_eq!(net.kernels[1].stats().blocks, 10);
    assert_eq!(net.carried[0][1], 7, "0 sends its 7 blocks once");
    assert_eq!(net.carried[1][0], 3, "1 sends its 3 blocks once");
}

#[test]
fn reconnect_after_partition_costs_only_the_difference() {
    let clock = ManualClock::new(1_000_000);
    let mut net = Net::new(2, &clock);
    for i in 0..20u8 {
        net.create(0, &[i]);
    }
    net.connect(0, 1);
    net.run();
    assert!(net.converged());
    net.disconnect(0, 1);
    let before = net.carried[0][1];
    clock.advance(1_000);
    for i in 0..5u8 {
        net.create(0, &[100 + i]);
        net.create(1, &[200 + i]);
    }
    net.connect(0, 1);
    net.run();
    assert!(net.converged());
    assert_eq!(net.carried[0][1] - before, 5, "only the 5 new blocks cross");
    assert_eq!(net.kernels[0].stats().blocks, 30);
}

#[test]
fn new_blocks_are_pushed_along_a_line() {
    let clock = ManualClock::new(1_000_000);
    let mut net = Net::new(4, &clock);
    net.connect(0, 1);
    net.connect(1, 2);
    net.connect(2, 3);
    net.run();
    for round in 0..10u8 {
        for peer in 0..4 {
            net.create(peer, &[round, peer as u8]);
        }
        clock.advance(7);
    }
    net.run();
    assert!(net.converged());
    assert_eq!(net.kernels[3].stats().blocks, 40);
    assert_eq!(
        net.kernels[3].stats().duplicates,
        0,
        "pushes skip peers known to hold a block"
    );
}

#[test]
fn large_catch_up_is_batched() {
    let clock = ManualClock::new(1_000_000);
    let mut net = Net::new(2, &clock);
    let max = net.sync[0].config().limits.max_blocks;
    for i in 0..(2 * max + 10) {
        net.create(0, &(i as u32).to_le_bytes());
    }
    net.connect(0, 1);
    // Every message must respect the cap; count the batches.
    let mut batches = 0;
    let mut steps = 0;
    while let Some((from, to, bytes)) = net.queue.pop_front() {
        steps += 1;
        assert!(steps < 10_000);
        if let Ok(Message::Blocks(blocks)) = Message::decode(&bytes, &Default::default()) {
            assert!(blocks.len() <= max);
            batches += 1;
        }
        let (out, _) = net.sync[to]
            .handle_bytes(&mut net.kernels[to], &from, &bytes)
            .expect("memory store");
        net.route(to, out);
    }
    assert!(net.converged());
    assert!(batches >= 3, "{batches} batches");
}

#[test]
fn a_peer_sending_invalid_blocks_is_disconnected() {
    let clock = ManualClock::new(1_000_000);
    let mut net = Net::new(2, &clock);
    net.connect(0, 1);
    net.run();
    let forger = Identity::from_secret([99; 32]);
    let budget = net.sync[1].config().max_invalid;
    let mut disconnected = false;
    for i in 0..=budget + 1 {
        let honest = Block::sign(&forger, None, 1_000 + u64::from(i), vec![i as u8]);
        let forged = Block::from_parts(
            honest.header().clone(),
            Signature([7; 64]),
            Some(vec![i as u8]),
        )
        .expect("the body matches the header");
        let bytes = Message::Blocks(vec![Arc::new(forged)]).encode();
        let (out, report) = net.sync[1]
            .handle_bytes(&mut net.kernels[1], &0, &bytes)
            .expect("memory store");
        if let Some(report) = report {
            assert_eq!(report.invalid(), 1);
        }
        if out.iter().any(|o| {
            matches!(
                o,
                Output::Disconnect {
                    peer: 0,
                    reason: DisconnectReason::TooManyInvalid
                }
            )
        }) {
            disconnected = true;
            break;
        }
    }
    assert!(disconnected, "the forger was never dropped");
    assert_eq!(
        net.kernels[1].stats().blocks,
        0,
        "nothing forged was stored"
    );
    assert_eq!(net.sync[1].peers().count(), 0);
}

#[test]
fn malformed_messages_count_against_the_sender() {
    let clock = ManualClock::new(1_000_000);
    let mut net = Net::new(2, &clock);
    net.connect(0, 1);
    net.run();
    let budget = net.sync[1].config().max_invalid;
    let mut dropped = false;
    for _ in 0..=budget {
        let (out, report) = net.sync[1]
            .handle_bytes(&mut net.kernels[1], &0, &[1, 200, 200, 200])
            .expect("memory store");
        assert!(report.is_none());
        dropped |= out.iter().any(|o| matches!(o, Output::Disconnect { .. }));
    }
    assert!(dropped);
}

#[test]
fn fork_proofs_spread_so_every_peer_freezes_alike() {
    let clock = ManualClock::new(1_000_000);
    let mut net = Net::new(3, &clock);
    let forker = Identity::from_secret([77; 32]);
    let genesis = Block::sign(&forker, None, 1_000, vec![1]);
    let parent = Some((genesis.id(), 0, 1_000));
    let a1 = Block::sign(&forker, parent, 1_001, vec![2]);
    let a2 = Block::sign(&forker, Some((a1.id(), 1, 1_001)), 1_002, vec![3]);
    let b1 = Block::sign(&forker, parent, 1_001, vec![9]);
    // Peer 0 holds one branch, peer 2 the other; peer 1 sits between them.
    net.kernels[0]
        .dispatch([genesis.clone(), a1, a2])
        .expect("memory store");
    net.kernels[2]
        .dispatch([genesis, b1])
        .expect("memory store");
    net.connect(0, 1);
    net.connect(1, 2);
    net.run();
    for kernel in &net.kernels {
        assert_eq!(kernel.frozen_feeds(), vec![(forker.public(), 1)]);
        assert_eq!(kernel.head(&forker.public()).map(|h| h.seq), Some(0));
    }
    assert!(net.converged());
}
