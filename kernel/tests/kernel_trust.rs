//! Kernel trust: the faults an independent review found at the kernel's edges, one scenario
//! each, named after what must hold now. (The sync-side faults C, D and I have their scenarios
//! in `sync_protocol.rs`; the random mix of all of them is `kernel_trust_property.rs`.)

mod common;

use std::sync::Arc;

use blockend_kernel::store::BlockStore;
use blockend_kernel::{
    Application, Block, BlockError, BlockId, Config, Context, DecodeError, Error, Header, Identity,
    Kernel, ManualClock, MemoryStore, OldestLongest, Outcome, Registry, Slice, Source, Verdict,
};
use common::Shared;

const NOW: u64 = 1_700_000_000_000;
/// Bodies that start with this byte expire `TTL` ms after their block's time.
const EXPIRING: u8 = 0xEE;
const TTL: u64 = 1_000;

/// Sums the first byte of each body; commutative; `EXPIRING` bodies expire.
struct Sum;
impl Slice for Sum {
    type State = u64;
    fn name(&self) -> &str {
        "sum"
    }
    fn initial(&self) -> u64 {
        0
    }
    fn filter(&self, ctx: &Context<'_>, _: &u64) -> Verdict {
        match ctx.body().first() {
            Some(0) => Verdict::Reject("zero adds nothing".into()),
            Some(_) => Verdict::Accept,
            None => Verdict::Ignore,
        }
    }
    fn reduce(&self, ctx: &Context<'_>, sum: &mut u64) {
        *sum += u64::from(ctx.body()[0]);
    }
    fn expires_at(&self, ctx: &Context<'_>) -> Option<u64> {
        (ctx.body().first() == Some(&EXPIRING)).then(|| ctx.time() + TTL)
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

fn identity(n: u8) -> Identity {
    Identity::from_secret([n; 32])
}

/// A feed of `bodies` by identity `n`, one block per ms from `start`.
fn chain(n: u8, bodies: &[&[u8]], start: u64) -> Vec<Block> {
    let id = identity(n);
    let mut out: Vec<Block> = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let parent = out.last().map(|b| (b.id(), b.seq(), b.time()));
        out.push(Block::sign(&id, parent, start + i as u64, body.to_vec()));
    }
    out
}

fn kernel_on(store: impl BlockStore, clock: &ManualClock, config: Config) -> Kernel {
    Kernel::builder(&App)
        .with_store(store)
        .with_clock(clock.clone())
        .with_identity(identity(200))
        .with_config(config)
        // These scenarios rank by claimed genesis time, so a test picks which feed goes by
        // dating it; `tests/retention.rs` covers the default ranking.
        .with_retention(OldestLongest)
        .open()
        .expect("open")
}

fn kernel(clock: &ManualClock) -> Kernel {
    kernel_on(MemoryStore::new(), clock, Config::default())
}

/// A fresh kernel's fold of exactly these blocks, for comparison.
fn fold_of(blocks: &[Arc<Block>], clock: &ManualClock) -> (blockend_kernel::Digest, u64) {
    let mut fresh = kernel(clock);
    fresh
        .dispatch_shared(blocks.iter().cloned())
        .expect("dispatch");
    (fresh.set_hash(), *fresh.state::<Sum>().expect("sum"))
}

/// A signed block whose header breaks the structural rules (seq and parent disagree).
fn misshapen(n: u8, seq: u64, parent: Option<BlockId>) -> Block {
    let body = vec![7u8];
    let header = Header {
        author: identity(n).public(),
        parent,
        seq,
        time: NOW,
        body_len: 1,
        body_hash: *blake3::hash(&body).as_bytes(),
    };
    let signature = identity(n).sign(&header.id());
    Block::from_parts(header, signature, Some(body)).expect("body matches")
}

#[test]
fn a_block_that_breaks_the_structural_rules_is_invalid_on_every_path_never_a_panic() {
    let clock = ManualClock::new(NOW);
    let mut kernel = kernel(&clock);
    let genesis = chain(1, &[&[1]], NOW).remove(0);
    let no_parent = misshapen(1, 5, None);
    let genesis_with_parent = misshapen(1, 0, Some(genesis.id()));
    let expected = Outcome::Invalid(BlockError::Decode(DecodeError::ParentSeq {
        seq: 5,
        has_parent: false,
    }));
    let report = kernel
        .dispatch_from(Source(1), [Arc::new(no_parent.clone())])
        .expect("dispatch");
    assert_eq!(report.outcome(&no_parent.id()), Some(&expected));
    assert_eq!(report.blame, vec![(Source(1), no_parent.id())]);
    // With its feed already present, and mixed into a batch with good blocks.
    let report = kernel
        .dispatch([
            genesis.clone(),
            genesis_with_parent.clone(),
            no_parent.clone(),
        ])
        .expect("dispatch");
    assert_eq!(report.outcome(&genesis.id()), Some(&Outcome::Accepted));
    assert!(report
        .outcome(&genesis_with_parent.id())
        .is_some_and(Outcome::is_invalid));
    assert_eq!(report.outcome(&no_parent.id()), Some(&expected));
    assert_eq!(kernel.state::<Sum>(), Some(&1));
    assert_eq!(kernel.stats().blocks, 1);
}

#[test]
fn a_full_copy_restores_the_body_wherever_the_header_only_copy_waits() {
    let clock = ManualClock::new(NOW);
    let blocks: Vec<Arc<Block>> = chain(1, &[&[1], &[2], &[3]], NOW)
        .into_iter()
        .map(Arc::new)
        .collect();
    let bare = |b: &Arc<Block>| Arc::new(b.pruned());
    let (reference_hash, reference_sum) = fold_of(&blocks, &clock);
    assert_eq!(reference_sum, 6);

    // 1. The header-only copy waits in the mempool as an orphan.
    let mut k = kernel(&clock);
    k.dispatch_shared([bare(&blocks[2])]).expect("dispatch");
    let report = k.dispatch_shared([blocks[2].clone()]).expect("dispatch");
    assert_eq!(
        report.outcome(&blocks[2].id()),
        Some(&Outcome::WaitingForParent)
    );
    k.dispatch_shared([blocks[0].clone(), blocks[1].clone()])
        .expect("dispatch");
    assert_eq!(
        (k.set_hash(), *k.state::<Sum>().unwrap()),
        (reference_hash, 6)
    );

    // 2. The header-only copy is held as future-dated.
    let future: Vec<Arc<Block>> = chain(2, &[&[4]], NOW + 60_000)
        .into_iter()
        .map(Arc::new)
        .collect();
    let mut k = kernel(&clock);
    k.dispatch_shared([bare(&future[0])]).expect("dispatch");
    k.dispatch_shared([future[0].clone()]).expect("dispatch");
    clock.set(NOW + 60_000);
    k.poll().expect("poll");
    assert_eq!(k.state::<Sum>(), Some(&4));
    assert!(k.block(&future[0].id()).is_some_and(|b| b.body().is_some()));
    clock.set(NOW);

    // 3. Earlier in the same dispatch, in either order.
    for order in [[true, false], [false, true]] {
        let mut k = kernel(&clock);
        let mut batch = vec![blocks[0].clone(), blocks[1].clone()];
        for header_only in order {
            batch.push(if header_only {
                bare(&blocks[2])
            } else {
                blocks[2].clone()
            });
        }
        k.dispatch_shared(batch).expect("dispatch");
        assert_eq!(
            (k.set_hash(), *k.state::<Sum>().unwrap()),
            (reference_hash, 6),
            "header-only first: {}",
            order[0]
        );
        assert!(k.missing_bodies(16).is_empty());
    }

    // 4. A header-only copy alone: a different set_hash, and the body is asked for.
    let mut k = kernel(&clock);
    k.dispatch_shared([blocks[0].clone(), blocks[1].clone(), bare(&blocks[2])])
        .expect("dispatch");
    assert_ne!(k.set_hash(), reference_hash);
    assert_eq!(k.missing_bodies(16), vec![blocks[2].id()]);
}

#[test]
fn a_forged_copy_of_a_waiting_block_is_invalid_and_blamed() {
    let clock = ManualClock::new(NOW);
    let mut k = kernel(&clock);
    let blocks = chain(1, &[&[1], &[2]], NOW);
    let honest = blocks[1].clone();
    let forged = Block::from_parts(
        honest.header().clone(),
        blockend_kernel::Signature([9; 64]),
        honest.body().map(<[u8]>::to_vec),
    )
    .expect("body matches");
    k.dispatch_from(Source(1), [Arc::new(honest.clone())])
        .expect("dispatch");
    let report = k
        .dispatch_from(Source(2), [Arc::new(forged.clone())])
        .expect("dispatch");
    assert_eq!(
        report.outcome(&forged.id()),
        Some(&Outcome::Invalid(BlockError::BadSignature))
    );
    assert_eq!(report.blame, vec![(Source(2), forged.id())]);
    k.dispatch([blocks[0].clone()]).expect("dispatch");
    assert_eq!(k.state::<Sum>(), Some(&3));
}

#[test]
fn invalid_orphans_are_blamed_on_their_sender_not_on_the_peer_that_sent_the_parent() {
    let clock = ManualClock::new(NOW);
    let mut k = kernel(&clock);
    let id = identity(1);
    let genesis = Block::sign(&id, None, NOW, vec![1]);
    // Signed children that claim the wrong height: intrinsically invalid, but that is only
    // known once the parent is there.
    let liars: Vec<Arc<Block>> = (0..19u8)
        .map(|i| {
            let mut header = Block::sign(&id, Some((genesis.id(), 0, NOW)), NOW, vec![i + 1])
                .header()
                .clone();
            header.seq = 2 + u64::from(i);
            let signature = id.sign(&header.id());
            Arc::new(Block::from_parts(header, signature, Some(vec![i + 1])).expect("body"))
        })
        .collect();
    let report = k
        .dispatch_from(Source(66), liars.clone())
        .expect("dispatch");
    assert_eq!(report.count(|o| *o == Outcome::WaitingForParent), 19);
    assert!(report.blame.is_empty());
    let report = k
        .dispatch_from(Source(7), [Arc::new(genesis)])
        .expect("dispatch");
    assert_eq!(report.invalid(), 19);
    assert_eq!(report.invalid_from(Source(7)), 0, "the honest forwarder");
    assert_eq!(
        report.invalid_from(Source(66)),
        19,
        "the peer that sent them"
    );
}

/// Snapshot, then a change the snapshot's ids do not show (a collection, a body restored),
/// then a kill: the reopen must not restore the stale state. `open` opens the store afresh
/// (the kernel using it before has been dropped).
fn stale_snapshot_is_not_restored(open: &dyn Fn() -> Box<dyn BlockStore>) {
    let clock = ManualClock::new(NOW);
    let boot = || kernel_on_boxed(open(), &clock, Config::default());
    let blocks = chain(1, &[&[1], &[EXPIRING], &[3]], NOW);
    let mut k = boot();
    k.dispatch(blocks[..2].iter().cloned().chain([blocks[2].pruned()]))
        .expect("dispatch");
    k.checkpoint().expect("snapshot");
    // A body restored after the snapshot, then a kill.
    k.dispatch([blocks[2].clone()]).expect("dispatch");
    assert_eq!(k.state::<Sum>(), Some(&(4 + u64::from(EXPIRING))));
    drop(k);
    let mut k = boot();
    assert!(!k.stats().restored_from_snapshot);
    assert_eq!(k.state::<Sum>(), Some(&(4 + u64::from(EXPIRING))));
    // A collection after a snapshot, then a kill.
    k.checkpoint().expect("snapshot");
    k.gc(NOW + TTL + 10).expect("gc");
    assert_eq!(k.state::<Sum>(), Some(&4));
    let (set_hash, digests) = (k.set_hash(), k.digests());
    drop(k);
    let k = boot();
    assert!(!k.stats().restored_from_snapshot);
    assert_eq!((k.set_hash(), k.digests()), (set_hash, digests));
    assert_eq!(k.state::<Sum>(), Some(&4));
    // And a snapshot that does describe the store is still restored.
    drop(k.close());
    let k = boot();
    assert!(k.stats().restored_from_snapshot);
    assert_eq!(k.state::<Sum>(), Some(&4));
}

fn kernel_on_boxed(store: Box<dyn BlockStore>, clock: &ManualClock, config: Config) -> Kernel {
    Kernel::builder(&App)
        .with_boxed_store(store)
        .with_clock(clock.clone())
        .with_identity(identity(200))
        .with_config(config)
        // These scenarios rank by claimed genesis time, so a test picks which feed goes by
        // dating it; `tests/retention.rs` covers the default ranking.
        .with_retention(OldestLongest)
        .open()
        .expect("open")
}

#[test]
fn a_snapshot_taken_before_a_collection_or_a_restore_is_not_restored_after_a_kill() {
    let store = Shared::default();
    stale_snapshot_is_not_restored(&|| Box::new(store.clone()));
}

#[cfg(feature = "rocksdb")]
#[test]
fn a_snapshot_taken_before_a_collection_or_a_restore_is_not_restored_after_a_kill_on_rocksdb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    stale_snapshot_is_not_restored(&|| {
        Box::new(blockend_kernel::store::RocksStore::open(&path).expect("open store"))
    });
}

/// Capacity for about two small feeds; the third evicts the lowest-ranked.
fn evicted_feed_stays_evicted(reopen: &mut dyn FnMut(Option<Kernel>) -> Kernel) {
    // Oldest genesis ranks first (the default ranking), so feed 3 (youngest) goes.
    let old = chain(1, &[&[1], &[1]], NOW - 3_000);
    let mid = chain(2, &[&[1], &[1]], NOW - 2_000);
    let young = chain(3, &[&[1], &[1]], NOW - 1_000);
    let mut k = reopen(None);
    k.dispatch(old.iter().chain(&mid).cloned())
        .expect("dispatch");
    k.dispatch([young[0].clone(), young[1].pruned()])
        .expect("dispatch");
    // One dispatch restores young[1]'s body and brings a feed that pushes young out.
    let big = chain(4, &[&[1; 600], &[1; 600]], NOW - 2_500);
    let report = k
        .dispatch([young[1].clone(), big[0].clone(), big[1].clone()])
        .expect("dispatch");
    assert!(k.is_tombstoned(&identity(3).public()), "{report:?}");
    assert!(!k.contains(&young[1].id()));
    let set_hash = k.set_hash();
    let k = reopen(Some(k));
    assert!(!k.contains(&young[0].id()) && !k.contains(&young[1].id()));
    assert_eq!(k.set_hash(), set_hash);
    assert!(k.store().get(&young[1].id()).expect("get").is_none());
}

fn capacity_config() -> Config {
    Config::default().with_capacity_bytes(4 * 161 + 2 * 760 + 100)
}

#[test]
fn an_evicted_feed_stays_evicted_after_reopen_when_a_body_restore_meets_its_eviction() {
    let clock = ManualClock::new(NOW);
    let store = Shared::default();
    evicted_feed_stays_evicted(&mut |old| {
        drop(old);
        kernel_on(store.clone(), &clock, capacity_config())
    });
}

#[cfg(feature = "rocksdb")]
#[test]
fn an_evicted_feed_stays_evicted_after_reopen_on_rocksdb() {
    let clock = ManualClock::new(NOW);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    evicted_feed_stays_evicted(&mut |old| {
        drop(old);
        let store = blockend_kernel::store::RocksStore::open(&path).expect("open store");
        kernel_on(store, &clock, capacity_config())
    });
}

#[test]
fn fork_proofs_count_against_capacity_and_superseded_pairs_are_deleted() {
    let clock = ManualClock::new(NOW);
    let store = Shared::default();
    let mut k = kernel_on(store.clone(), &clock, Config::default());
    let id = identity(1);
    let body: &[u8] = &[1; 100];
    let feed = chain(1, &[body; 6], NOW);
    k.dispatch(feed.clone()).expect("dispatch");
    // A fork at seq 4, then one at seq 2: the second supersedes the first.
    let at = |seq: usize| {
        let parent = &feed[seq - 1];
        Block::sign(
            &id,
            Some((parent.id(), parent.seq(), parent.time())),
            parent.time() + 1,
            vec![9; 1000],
        )
    };
    let report = k.dispatch([at(4)]).expect("dispatch");
    assert_eq!(report.outcome(&at(4).id()), Some(&Outcome::Fork { seq: 4 }));
    let with_first = k.stats().other_bytes;
    assert!(
        with_first >= 4 * 160 + 2 * 100 + 1000,
        "the proof pair counts: {with_first}"
    );
    k.dispatch([at(2)]).expect("dispatch");
    assert_eq!(k.frozen_feeds(), vec![(id.public(), 2)]);
    // Held: blocks 0 and 1, and the new pair (feed[2] and the fork at 2). Nothing else.
    let mut stored: Vec<BlockId> = store
        .blocks()
        .expect("blocks")
        .iter()
        .map(|b| b.id())
        .collect();
    stored.sort();
    let mut expected = vec![feed[0].id(), feed[1].id(), feed[2].id(), at(2).id()];
    expected.sort();
    assert_eq!(stored, expected);
    let bytes = k.stats().other_bytes;
    assert_eq!(bytes, 4 * 160 + 3 * 100 + 1000);
    drop(k);
    let k = kernel_on(store.clone(), &clock, Config::default());
    assert_eq!(
        k.stats().other_bytes,
        bytes,
        "the same count after a reopen"
    );

    // Under a budget, frozen feeds (even frozen at genesis) are evicted like any other.
    let budget = 5_000;
    let mut k = kernel_on(
        MemoryStore::new(),
        &clock,
        Config::default().with_capacity_bytes(budget),
    );
    for n in 10..30u8 {
        let who = identity(n);
        let a = Block::sign(&who, None, NOW, vec![n; 1000]);
        let b = Block::sign(&who, None, NOW, vec![n.wrapping_add(1); 1000]);
        k.dispatch([a, b]).expect("dispatch");
        assert!(k.stats().other_bytes <= budget, "{}", k.stats().other_bytes);
    }
    assert!(k.stats().evicted_feeds > 0);
}

/// Bounded by a total: order-sensitive (a block's verdict depends on the blocks before it).
struct Budget;
impl Slice for Budget {
    type State = u64;
    fn name(&self) -> &str {
        "budget"
    }
    fn initial(&self) -> u64 {
        0
    }
    fn filter(&self, ctx: &Context<'_>, spent: &u64) -> Verdict {
        match ctx.body().first() {
            Some(&n) if spent + u64::from(n) <= 10 => Verdict::Accept,
            Some(_) => Verdict::Reject("over budget".into()),
            None => Verdict::Ignore,
        }
    }
    fn reduce(&self, ctx: &Context<'_>, spent: &mut u64) {
        *spent += u64::from(ctx.body()[0]);
    }
}

struct BudgetApp;
impl Application for BudgetApp {
    fn register(&self, slices: &mut Registry) {
        slices.add(Budget);
    }
}

#[test]
fn an_own_feed_stays_writable_after_an_own_block_is_rejected() {
    let clock = ManualClock::new(NOW);
    let mut k = Kernel::builder(&BudgetApp)
        .with_clock(clock.clone())
        .open()
        .expect("open");
    let own = k.create_block(vec![5]).expect("accepted");
    // Another author's earlier block spends 8 first: the own block no longer fits.
    let other = chain(1, &[&[8]], NOW - 10);
    k.dispatch(other).expect("dispatch");
    assert!(!k.counts(&own.id()), "the own block is now rejected");
    clock.advance(1);
    let next = k.create_block(vec![1]).expect("the feed stays writable");
    assert_eq!(next.seq(), 1);
    assert!(k.counts(&next.id()));
    assert_eq!(k.state::<Budget>(), Some(&9));
    // A block the state refuses is still refused with the slice's reason.
    assert!(matches!(
        k.create_block(vec![5]),
        Err(Error::Rejected { .. })
    ));
}

/// `Sum` with new rules: counts each block as 1.
struct SumV2;
impl Slice for SumV2 {
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
    fn reduce(&self, _: &Context<'_>, sum: &mut u64) {
        *sum += 1;
    }
    fn commutative(&self) -> bool {
        true
    }
    fn version(&self) -> u32 {
        2
    }
}

struct AppV2;
impl Application for AppV2 {
    fn register(&self, slices: &mut Registry) {
        slices.add(SumV2);
    }
}

#[test]
fn a_slice_with_a_new_version_replays_instead_of_restoring_the_old_snapshot() {
    let clock = ManualClock::new(NOW);
    let store = Shared::default();
    let mut k = kernel_on(store.clone(), &clock, Config::default());
    k.dispatch(chain(1, &[&[5], &[6]], NOW)).expect("dispatch");
    drop(k.close());
    let again = kernel_on(store.clone(), &clock, Config::default());
    assert!(
        again.stats().restored_from_snapshot,
        "same version: restored"
    );
    drop(again.close());
    let upgraded = Kernel::builder(&AppV2)
        .with_store(store)
        .with_clock(clock)
        .with_identity(identity(200))
        .open()
        .expect("open");
    assert!(!upgraded.stats().restored_from_snapshot);
    assert_eq!(upgraded.state::<SumV2>(), Some(&2));
}

#[test]
fn a_feed_evicted_or_expired_soon_after_it_arrives_costs_what_arrived_after_it_not_a_refold() {
    let clock = ManualClock::new(NOW);
    let honest: Vec<Block> = (1..=10u8)
        .flat_map(|n| {
            let bodies: Vec<&[u8]> = vec![&[1]; 500];
            chain(n, &bodies, NOW - 100_000 + u64::from(n))
        })
        .collect();
    let held: u64 = 5_000 * 161;
    let mut k = kernel_on(
        MemoryStore::new(),
        &clock,
        Config::default().with_capacity_bytes(held + 3 * 161 + 100),
    );
    k.dispatch(honest.clone()).expect("dispatch");
    let before = k.stats();
    // A fresh feed (youngest genesis: lowest rank) fits, then an honest feed grows and
    // pushes it out.
    let fresh = chain(77, &[&[1], &[1], &[1]], NOW);
    let report = k.dispatch(fresh.clone()).expect("dispatch");
    assert_eq!(report.outcome(&fresh[2].id()), Some(&Outcome::Accepted));
    let last = &honest[499];
    let mut growth: Vec<Block> = Vec::new();
    for i in 0..3 {
        let parent = growth.last().unwrap_or(last);
        let parent = (parent.id(), parent.seq(), parent.time());
        growth.push(Block::sign(
            &identity(1),
            Some(parent),
            NOW + 1 + i,
            vec![1],
        ));
    }
    k.dispatch(growth).expect("dispatch");
    assert!(!k.contains(&fresh[0].id()), "the fresh feed was pushed out");
    assert!(k.is_tombstoned(&identity(77).public()));
    // A flood at the door is refused, never admitted and evicted.
    let flood = chain(78, &[&[1], &[1], &[1]], NOW);
    let report = k.dispatch(flood.clone()).expect("dispatch");
    assert_eq!(report.outcome(&flood[0].id()), Some(&Outcome::OverCapacity));
    // An expiring block that dies soon after it came.
    let short = chain(79, &[&[EXPIRING]], NOW);
    k.dispatch(short).expect("dispatch");
    k.gc(NOW + TTL + 1).expect("gc");
    let after = k.stats();
    assert_eq!(after.full_refolds, before.full_refolds, "no full re-fold");
    assert!(
        after.evaluations - before.evaluations < 1_100,
        "{} evaluations for 10 blocks over 5,000 retained",
        after.evaluations - before.evaluations
    );
    assert_eq!(k.state::<Sum>(), Some(&5_003));
}

/// Found by a hostile review: a block evicted in the dispatch that brought it must not leave a
/// stale arrival behind that a later rewind replays (it was reduced twice).
#[test]
fn a_block_evicted_in_its_own_dispatch_and_readmitted_is_not_counted_twice() {
    let clock = ManualClock::new(NOW);
    let config = Config::default()
        .with_capacity_bytes(700)
        .with_tombstones(10, 100);
    let mut k = kernel_on(MemoryStore::new(), &clock, config);
    // An old feed with one expiring block (161 bytes).
    let old = chain(1, &[&[EXPIRING]], NOW - 100_000);
    k.dispatch(old.clone()).expect("dispatch");
    // A fresh feed of three blocks (483 bytes) fits; an older feed in the same dispatch
    // (161 bytes) ranks above it and pushes it out: evicted in its own dispatch.
    let fresh = chain(77, &[&[1], &[1], &[1]], NOW - 10);
    let elder = chain(2, &[&[1]], NOW - 200_000);
    let report = k
        .dispatch(fresh.iter().chain(&elder).cloned())
        .expect("dispatch");
    assert_eq!(report.outcome(&fresh[0].id()), Some(&Outcome::Evicted));
    assert_eq!(report.outcome(&elder[0].id()), Some(&Outcome::Accepted));
    // The tombstone expires; a peer re-sends the first two blocks, which fit now.
    clock.advance(100);
    let report = k.dispatch(fresh[..2].to_vec()).expect("dispatch");
    assert_eq!(report.outcome(&fresh[1].id()), Some(&Outcome::Accepted));
    assert_eq!(k.state::<Sum>(), Some(&(u64::from(EXPIRING) + 3)));
    // The old block expires: a removal that rewinds past the stale arrivals.
    k.gc(NOW).expect("gc");
    // A fresh kernel with exactly these blocks.
    let mut fresh_kernel = kernel(&clock);
    let held: Vec<Arc<Block>> = std::iter::once(Arc::new(old[0].pruned()))
        .chain(elder.iter().cloned().map(Arc::new))
        .chain(fresh[..2].iter().cloned().map(Arc::new))
        .collect();
    fresh_kernel.dispatch_shared(held).expect("dispatch");
    assert_eq!(k.set_hash(), fresh_kernel.set_hash(), "same candidate set");
    assert_eq!(
        k.state::<Sum>(),
        fresh_kernel.state::<Sum>(),
        "same blocks, same state"
    );
}

/// Found by a hostile review: after the clock stepped back more than the allowed skew, the own
/// block (dated at its parent's time) was held as future-dated, the caller got `Ignored`, and
/// the block was published on the next tick all the same (or forked the feed with a retry).
#[test]
fn an_own_feed_stays_writable_after_the_clock_steps_back() {
    let clock = ManualClock::new(NOW);
    let mut k = kernel(&clock);
    let first = k.create_block(vec![3]).expect("accepted");
    clock.set(NOW - 60_000);
    let second = k.create_block(vec![4]).expect("the feed stays writable");
    let third = k.create_block(vec![5]).expect("and again");
    assert_eq!((second.seq(), third.seq()), (1, 2));
    assert_eq!(second.parent(), Some(first.id()));
    assert_eq!(third.parent(), Some(second.id()));
    assert!(second.time() >= first.time() && third.time() >= second.time());
    assert!(k.counts(&second.id()) && k.counts(&third.id()));
    assert_eq!(
        k.stats().mempool_blocks,
        0,
        "nothing of the own feed is held"
    );
    assert_eq!(k.state::<Sum>(), Some(&12));
    // A refused body while the clock is behind leaves nothing behind to publish later.
    assert!(matches!(
        k.create_block(vec![0]),
        Err(Error::Rejected { .. })
    ));
    assert_eq!(k.stats().mempool_blocks, 0);
    assert_eq!(k.poll().expect("poll").accepted.len(), 0);
    assert_eq!(k.head(&k.author()).map(|h| h.seq), Some(2));
}

/// Found by a hostile review: the tombstone was checked when a block arrived, not when a block
/// that waited (held as future-dated, or an orphan) was released. A released block of an
/// evicted feed is now refused as tombstoned, as it would be on arrival, instead of being
/// parked again (as an orphan of the evicted chain) or let in.
#[test]
fn a_tombstoned_feed_does_not_come_back_through_the_mempool() {
    let clock = ManualClock::new(NOW);
    let mut k = kernel_on(MemoryStore::new(), &clock, capacity_config());
    let old = chain(1, &[&[1], &[1]], NOW - 3_000);
    let mid = chain(2, &[&[1], &[1]], NOW - 2_000);
    k.dispatch(old.iter().chain(&mid).cloned())
        .expect("dispatch");
    // The youngest feed, with a block dated 20 s ahead: held.
    let young = chain(3, &[&[1]], NOW - 1_000);
    let id = identity(3);
    let ahead = Block::sign(
        &id,
        Some((young[0].id(), young[0].seq(), young[0].time())),
        NOW + 20_000,
        vec![1],
    );
    let report = k
        .dispatch([young[0].clone(), ahead.clone()])
        .expect("dispatch");
    assert!(matches!(
        report.outcome(&ahead.id()),
        Some(Outcome::TimestampFromFuture { .. })
    ));
    // A bigger, older feed pushes the young one out.
    let big = chain(4, &[&[1; 600], &[1; 600]], NOW - 2_500);
    k.dispatch(big).expect("dispatch");
    assert!(k.is_tombstoned(&id.public()));
    assert!(!k.contains(&young[0].id()));
    // Its held block's time comes while the tombstone lasts.
    clock.set(NOW + 20_000);
    let report = k.poll().expect("poll");
    assert!(
        matches!(
            report.outcome(&ahead.id()),
            Some(Outcome::Tombstoned { .. })
        ),
        "{report:?}"
    );
    assert!(!k.contains(&ahead.id()));
    assert!(k.head(&id.public()).is_none(), "the evicted feed stays out");
}

/// Found by a hostile review: `create_block` releases held blocks whose time came, but only
/// returned the new block, so drivers never pushed, nor blamed the senders of, what it released.
#[test]
fn create_block_reports_the_held_blocks_it_releases() {
    let clock = ManualClock::new(NOW);
    let mut k = kernel(&clock);
    let parent = chain(1, &[&[7]], NOW + 30_000).remove(0);
    // A child dated before its parent: invalid, but only once the parent is known.
    let body = vec![9u8];
    let header = Header {
        author: identity(1).public(),
        parent: Some(parent.id()),
        seq: 1,
        time: NOW + 20_000,
        body_len: 1,
        body_hash: *blake3::hash(&body).as_bytes(),
    };
    let signature = identity(1).sign(&header.id());
    let child = Block::from_parts(header, signature, Some(body)).expect("body matches");
    k.dispatch_from(Source(5), [Arc::new(parent.clone())])
        .expect("dispatch");
    k.dispatch_from(Source(6), [Arc::new(child.clone())])
        .expect("dispatch");
    assert_eq!(k.stats().mempool_blocks, 2, "both held");
    clock.set(NOW + 30_000);
    let (own, report) = k.create_block_reported(vec![1]).expect("accepted");
    let accepted: Vec<BlockId> = report.accepted.iter().map(|b| b.id()).collect();
    assert!(accepted.contains(&parent.id()), "{report:?}");
    assert!(accepted.contains(&own.id()));
    assert_eq!(report.blame, vec![(Source(6), child.id())], "{report:?}");
    assert_eq!(k.state::<Sum>(), Some(&8));
}

/// An order-sensitive slice: the state is a running hash of the bodies in canonical order.
struct Chain;
impl Slice for Chain {
    type State = u64;
    fn name(&self) -> &str {
        "chain"
    }
    fn initial(&self) -> u64 {
        0
    }
    fn filter(&self, _: &Context<'_>, _: &u64) -> Verdict {
        Verdict::Accept
    }
    fn reduce(&self, ctx: &Context<'_>, state: &mut u64) {
        *state = state
            .wrapping_mul(31)
            .wrapping_add(u64::from(ctx.body().first().copied().unwrap_or(0)));
    }
}

struct ChainApp;
impl Application for ChainApp {
    fn register(&self, slices: &mut Registry) {
        slices.add(Chain);
    }
}

fn chain_kernel(clock: &ManualClock) -> Kernel {
    Kernel::builder(&ChainApp)
        .with_clock(clock.clone())
        .with_identity(identity(200))
        .with_config(Config::default().with_checkpoints(16, 4))
        .open()
        .expect("open")
}

/// L, order-sensitive half: a block that sorts before every checkpoint (a genesis backdated to
/// 1970) re-folds every retained block. One such block per message used to buy one full
/// re-fold per message; now the first since the last poll re-folds at once and the rest wait
/// for the next poll, where they cost one re-fold together.
#[test]
fn backdated_blocks_buy_one_full_refold_per_poll_not_one_per_message() {
    let clock = ManualClock::new(NOW);
    let mut k = chain_kernel(&clock);
    let retained: Vec<Block> = (1..=10u8)
        .flat_map(|n| {
            let bodies: Vec<&[u8]> = vec![&[3]; 50];
            chain(n, &bodies, NOW - 100_000 + u64::from(n) * 1_000)
        })
        .collect();
    k.dispatch(retained.clone()).expect("dispatch");
    let before = k.stats().full_refolds;
    let peer = Source(7);
    let backdated: Vec<Block> = (50..70u8).flat_map(|n| chain(n, &[&[n]], 1)).collect();
    for (i, block) in backdated.iter().enumerate() {
        let report = k
            .dispatch_from(peer, [Arc::new(block.clone())])
            .expect("dispatch");
        let expected = if i == 0 {
            Outcome::Accepted
        } else {
            Outcome::Deferred
        };
        assert_eq!(report.outcome(&block.id()), Some(&expected), "block {i}");
        // A copy of a waiting block is a duplicate, not a second deferral.
        let again = k
            .dispatch_from(peer, [Arc::new(block.clone())])
            .expect("dispatch");
        assert_eq!(again.outcome(&block.id()), Some(&Outcome::Duplicate));
    }
    assert_eq!(
        k.stats().full_refolds,
        before + 1,
        "one re-fold, not one per message"
    );
    assert_eq!(k.next_wakeup(), Some(NOW), "the driver's next tick polls");
    let report = k.poll().expect("poll");
    assert_eq!(report.accepted.len(), backdated.len() - 1);
    assert_eq!(
        k.stats().full_refolds,
        before + 2,
        "one re-fold for all the rest"
    );
    assert_eq!(k.next_wakeup(), None);
    // The same state as a kernel that got everything at once.
    let mut fresh = chain_kernel(&clock);
    let mut all = retained;
    all.extend(backdated);
    fresh.dispatch(all).expect("dispatch");
    assert_eq!(k.set_hash(), fresh.set_hash());
    assert_eq!(k.state::<Chain>(), fresh.state::<Chain>());
}
