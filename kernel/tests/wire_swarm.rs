//! Kernels over the in-memory wire (real tokio tasks and channels, encoded messages): two
//! peers, a line of four, a late joiner, a reconnect, a lost want repaired by the tick.
//! Convergence is polled with a deadline.

use std::time::{Duration, Instant};

use blockend_kernel::wire::Peer;
use blockend_kernel::{Application, Context, Identity, Kernel, Registry, Slice, Verdict};

/// Commutative: total of body bytes.
struct Total;
impl Slice for Total {
    type State = u64;
    fn name(&self) -> &str {
        "total"
    }
    fn initial(&self) -> u64 {
        0
    }
    fn filter(&self, _: &Context<'_>, _: &u64) -> Verdict {
        Verdict::Accept
    }
    fn reduce(&self, ctx: &Context<'_>, total: &mut u64) {
        *total += ctx.body().iter().map(|&b| u64::from(b)).sum::<u64>();
    }
    fn commutative(&self) -> bool {
        true
    }
}

/// Order-sensitive: the ids in fold order, hashed into a chain.
struct Log;
impl Slice for Log {
    type State = [u8; 32];
    fn name(&self) -> &str {
        "log"
    }
    fn initial(&self) -> [u8; 32] {
        [0; 32]
    }
    fn filter(&self, _: &Context<'_>, _: &[u8; 32]) -> Verdict {
        Verdict::Accept
    }
    fn reduce(&self, ctx: &Context<'_>, state: &mut [u8; 32]) {
        let mut hasher = blake3::Hasher::new();
        hasher.update(state);
        hasher.update(ctx.block().id().as_bytes());
        *state = *hasher.finalize().as_bytes();
    }
}

struct App;
impl Application for App {
    fn register(&self, slices: &mut Registry) {
        slices.add(Total).add(Log);
    }
}

fn peer(n: u8) -> Peer {
    Peer::new(
        Kernel::builder(&App)
            .with_identity(Identity::from_secret([n; 32]))
            .open()
            .expect("memory store"),
    )
}

fn snapshot(
    peer: &Peer,
) -> (
    usize,
    blockend_kernel::Digest,
    Vec<(String, blockend_kernel::Digest)>,
) {
    peer.with(|k| (k.stats().blocks, k.set_hash(), k.digests()))
}

/// Polls every 10 ms until all peers hold `blocks` blocks with equal digests and set hashes.
async fn converge(peers: &[&Peer], blocks: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut poll = tokio::time::interval(Duration::from_millis(10));
    loop {
        poll.tick().await;
        let states: Vec<_> = peers.iter().map(|p| snapshot(p)).collect();
        if states[0].0 == blocks && states.iter().all(|s| *s == states[0]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence within 20 s: {:?}",
            states.iter().map(|s| s.0).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_kernels_over_the_wire_converge() {
    let (alice, bob) = (peer(1), peer(2));
    for i in 0..5u8 {
        alice.create_block(vec![i]).expect("accepted");
        bob.create_block(vec![i + 10]).expect("accepted");
    }
    let _wire = alice.connect(&bob);
    for i in 5..10u8 {
        alice.create_block(vec![i]).expect("accepted");
        bob.create_block(vec![i + 10]).expect("accepted");
    }
    converge(&[&alice, &bob], 20).await;
    assert_eq!(alice.dropped_messages() + bob.dropped_messages(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_kernels_in_a_line_converge() {
    let peers: Vec<Peer> = (1..=4).map(peer).collect();
    let _wires = [
        peers[0].connect(&peers[1]),
        peers[1].connect(&peers[2]),
        peers[2].connect(&peers[3]),
    ];
    for round in 0..10u8 {
        for (i, p) in peers.iter().enumerate() {
            p.create_block(vec![round, i as u8]).expect("accepted");
        }
    }
    let refs: Vec<&Peer> = peers.iter().collect();
    converge(&refs, 40).await;
    let expected: u64 = (0..10u64).map(|r| 4 * r + 6).sum();
    for p in &peers {
        assert_eq!(
            p.with(|k| *k.state::<Total>().expect("registered")),
            expected
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_catches_up() {
    let (alice, bob) = (peer(1), peer(2));
    for i in 0..50u8 {
        alice.create_block(vec![i]).expect("accepted");
    }
    let _wire = alice.connect(&bob);
    converge(&[&alice, &bob], 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_reconverge_after_a_disconnect() {
    let (alice, bob) = (peer(1), peer(2));
    let wire = alice.connect(&bob);
    alice.create_block(vec![1]).expect("accepted");
    converge(&[&alice, &bob], 1).await;
    drop(wire);
    for i in 0..5u8 {
        alice.create_block(vec![i]).expect("accepted");
        bob.create_block(vec![i]).expect("accepted");
    }
    // Disconnected: nothing crosses.
    assert_eq!(bob.with(|k| k.stats().blocks), 6);
    let _wire = alice.connect(&bob);
    converge(&[&alice, &bob], 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_want_lost_on_the_wire_is_asked_again_after_ticks() {
    let (alice, bob) = (peer(1), peer(2));
    for i in 0..20u8 {
        alice.create_block(vec![i]).expect("accepted");
    }
    // Bob's first two messages are lost, as on a full channel: his greeting and his want for
    // Alice's feed. Only the tick's time-out can ask again (Alice's heads find the want still
    // in flight).
    bob.drop_next_messages(2);
    let _wire = alice.connect(&bob);
    converge(&[&alice, &bob], 20).await;
    assert_eq!(bob.dropped_messages(), 2);
    assert_eq!(alice.dropped_messages(), 0);
    assert_eq!(
        alice.with_sync(|s| s.peers().count()),
        1,
        "the link is still up"
    );
}
