//! One conformance suite, generic over `BlockStore`, run against every backend; and the kernel
//! on each backend across a close and reopen.

use std::sync::Arc;

use blockend_kernel::store::{Batch, BlockStore, MemoryStore};
use blockend_kernel::{
    Application, Block, BlockId, Context, Feed, Identity, Kernel, ManualClock, Registry, Slice,
    Verdict,
};

const T0: u64 = 1_700_000_000_000;

fn chain(n: usize) -> Vec<Arc<Block>> {
    let identity = Identity::from_secret([4; 32]);
    let mut feed = Feed::new();
    for i in 0..n {
        feed.append(&identity, vec![i as u8; 3], T0 + i as u64);
    }
    feed.into_blocks().into_iter().map(Arc::new).collect()
}

/// What every backend must do, observed through the trait alone.
fn conformance(mut open: impl FnMut() -> Box<dyn BlockStore>) {
    let blocks = chain(4);
    {
        let mut store = open();
        assert!(store.is_empty());
        assert!(store.blocks().expect("read").is_empty());
        assert_eq!(store.identity().expect("read"), None);
        assert_eq!(store.timers().expect("read"), vec![]);
        assert_eq!(store.gc_time().expect("read"), 0);

        store
            .commit(Batch {
                put: blocks.clone(),
                timers: vec![(T0 + 50, blocks[1].id()), (T0 + 10, blocks[2].id())],
                gc_time: Some(T0),
                ..Batch::default()
            })
            .expect("commit");
        assert_eq!(store.len(), 4);
        assert_eq!(
            store.get(&blocks[2].id()).expect("read"),
            Some(blocks[2].clone())
        );
        assert_eq!(store.get(&BlockId([9; 32])).expect("read"), None);
        let mut ids: Vec<BlockId> = store
            .blocks()
            .expect("read")
            .iter()
            .map(|b| b.id())
            .collect();
        ids.sort();
        let mut expected: Vec<BlockId> = blocks.iter().map(|b| b.id()).collect();
        expected.sort();
        assert_eq!(ids, expected);
        // Timers come back ordered by time.
        assert_eq!(
            store.timers().expect("read"),
            vec![(T0 + 10, blocks[2].id()), (T0 + 50, blocks[1].id())]
        );

        // Overwriting with the pruned block (garbage collection) keeps the count.
        let pruned = Arc::new(blocks[1].pruned());
        store
            .commit(Batch {
                put: vec![pruned.clone()],
                delete: vec![blocks[3].id()],
                timers_done: vec![(T0 + 50, blocks[1].id())],
                gc_time: Some(T0 + 60),
                ..Batch::default()
            })
            .expect("commit");
        assert_eq!(store.len(), 3);
        assert_eq!(store.get(&blocks[1].id()).expect("read"), Some(pruned));
        assert_eq!(store.get(&blocks[3].id()).expect("read"), None);
        assert_eq!(
            store.timers().expect("read"),
            vec![(T0 + 10, blocks[2].id())]
        );
        assert_eq!(store.gc_time().expect("read"), T0 + 60);

        store.set_identity([7; 32]).expect("write");
        assert_eq!(store.identity().expect("read"), Some([7; 32]));
        // An empty batch is fine.
        store.commit(Batch::default()).expect("commit");
    }
}

#[test]
fn memory_store_conforms() {
    conformance(|| Box::new(MemoryStore::new()));
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocks_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n = 0;
    conformance(|| {
        n += 1;
        let path = dir.path().join(format!("store-{n}"));
        Box::new(blockend_kernel::store::RocksStore::open(path).expect("open"))
    });
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocks_store_keeps_everything_across_reopen() {
    use blockend_kernel::store::RocksStore;
    let dir = tempfile::tempdir().expect("tempdir");
    let blocks = chain(3);
    {
        let mut store = RocksStore::open(dir.path()).expect("open");
        store
            .commit(Batch {
                put: blocks.clone(),
                timers: vec![(T0 + 5, blocks[0].id())],
                gc_time: Some(T0 + 1),
                ..Batch::default()
            })
            .expect("commit");
        store.set_identity([3; 32]).expect("write");
    }
    let store = RocksStore::open(dir.path()).expect("reopen");
    assert_eq!(store.len(), 3);
    assert_eq!(
        store.get(&blocks[2].id()).expect("read"),
        Some(blocks[2].clone())
    );
    assert_eq!(
        store.timers().expect("read"),
        vec![(T0 + 5, blocks[0].id())]
    );
    assert_eq!(store.gc_time().expect("read"), T0 + 1);
    assert_eq!(store.identity().expect("read"), Some([3; 32]));
}

/// Per-author totals (commutative), and a note that expires 30 s after its block.
struct Notes;
impl Slice for Notes {
    type State = std::collections::BTreeMap<[u8; 32], u64>;
    fn name(&self) -> &str {
        "notes"
    }
    fn initial(&self) -> Self::State {
        Default::default()
    }
    fn filter(&self, _: &Context<'_>, _: &Self::State) -> Verdict {
        Verdict::Accept
    }
    fn reduce(&self, ctx: &Context<'_>, state: &mut Self::State) {
        *state.entry(ctx.author().0).or_default() += u64::from(ctx.body()[0]);
    }
    fn expires_at(&self, ctx: &Context<'_>) -> Option<u64> {
        (ctx.body()[0] == 1).then(|| ctx.time() + 30_000)
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

/// A kernel on `store`: writes, collects, closes, reopens; everything matches.
fn kernel_survives_reopen(
    store: Box<dyn BlockStore>,
    reopen: impl FnOnce(Box<dyn BlockStore>) -> Box<dyn BlockStore>,
) {
    let clock = ManualClock::new(T0);
    let mut kernel = Kernel::builder(&App)
        .with_boxed_store(store)
        .with_clock(clock.clone())
        .open()
        .expect("open");
    let mut expiring = Vec::new();
    for body in [2u8, 1, 3] {
        let block = kernel.create_block(vec![body]).expect("accepted");
        if body == 1 {
            expiring.push(block.id());
        }
        clock.advance(1_000);
    }
    let peer = Identity::from_secret([9; 32]);
    let mut feed = Feed::new();
    feed.append(&peer, vec![1], T0 + 100);
    feed.append(&peer, vec![5], T0 + 200);
    expiring.push(feed.blocks()[0].id());
    kernel.dispatch(feed.into_blocks()).expect("store");
    let collected = kernel.gc(T0 + 31_500).expect("store");
    assert_eq!(collected.collected, 2);
    let (author, heads, digests, set_hash) = (
        kernel.author(),
        kernel.heads(),
        kernel.digests(),
        kernel.set_hash(),
    );

    let store = reopen(kernel.close());
    let reopened = Kernel::builder(&App)
        .with_boxed_store(store)
        .with_clock(clock)
        .open()
        .expect("reopen");
    assert!(
        reopened.stats().restored_from_snapshot,
        "close writes a snapshot"
    );
    assert_eq!(reopened.author(), author);
    assert_eq!(reopened.heads(), heads);
    assert_eq!(reopened.digests(), digests);
    assert_eq!(reopened.set_hash(), set_hash);
    assert_eq!(reopened.gc_time(), T0 + 31_500);
    assert_eq!(reopened.stats().blocks, 5);
    // What was collected stays collected.
    for id in expiring {
        let block = reopened.block(&id).expect("the header stays");
        assert_eq!(block.body(), None);
    }
}

#[test]
fn kernel_on_a_memory_store_survives_reopen() {
    kernel_survives_reopen(Box::new(MemoryStore::new()), |store| store);
}

#[cfg(feature = "rocksdb")]
#[test]
fn kernel_on_a_rocks_store_survives_reopen() {
    use blockend_kernel::store::RocksStore;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let store = RocksStore::open(&path).expect("open");
    kernel_survives_reopen(Box::new(store), |store| {
        drop(store);
        Box::new(RocksStore::open(&path).expect("reopen"))
    });
}

/// Order-sensitive, with state-dependent rejections: a body equal to the last accepted one is
/// rejected, so a snapshot must carry statuses, not only states.
struct NoRepeat;
impl Slice for NoRepeat {
    type State = Vec<u8>;
    fn name(&self) -> &str {
        "no-repeat"
    }
    fn initial(&self) -> Vec<u8> {
        Vec::new()
    }
    fn filter(&self, ctx: &Context<'_>, state: &Vec<u8>) -> Verdict {
        if state.last() == ctx.body().first() {
            Verdict::Reject("repeat".into())
        } else {
            Verdict::Accept
        }
    }
    fn reduce(&self, ctx: &Context<'_>, state: &mut Vec<u8>) {
        state.push(ctx.body()[0]);
    }
}

struct Strict;
impl Application for Strict {
    fn register(&self, slices: &mut Registry) {
        slices.add(NoRepeat);
    }
}

fn strict_blocks() -> Vec<Block> {
    let mut blocks = Vec::new();
    for n in 0..3u8 {
        let identity = Identity::from_secret([n + 20; 32]);
        let mut feed = Feed::new();
        for i in 0..6u64 {
            feed.append(&identity, vec![(i % 2) as u8], T0 + i * 10 + u64::from(n));
        }
        blocks.extend(feed.into_blocks());
    }
    blocks
}

#[test]
fn a_snapshot_restores_states_and_statuses_without_replay() {
    let clock = ManualClock::new(T0 + 1_000);
    let mut kernel = Kernel::builder(&Strict)
        .with_clock(clock.clone())
        .open()
        .expect("open");
    let blocks = strict_blocks();
    kernel.dispatch(blocks.clone()).expect("store");
    let counted: Vec<bool> = blocks.iter().map(|b| kernel.counts(&b.id())).collect();
    assert!(counted.iter().any(|c| !c), "some blocks must be rejected");
    let (digests, heads) = (kernel.digests(), kernel.heads());
    let reopened = Kernel::builder(&Strict)
        .with_boxed_store(kernel.close())
        .with_clock(clock)
        .open()
        .expect("reopen");
    assert!(reopened.stats().restored_from_snapshot);
    assert_eq!(reopened.stats().evaluations, 0, "nothing was replayed");
    assert_eq!(reopened.digests(), digests);
    assert_eq!(reopened.heads(), heads);
    let again: Vec<bool> = blocks.iter().map(|b| reopened.counts(&b.id())).collect();
    assert_eq!(again, counted);
}

#[cfg(feature = "rocksdb")]
#[test]
fn a_stale_snapshot_falls_back_to_a_full_replay() {
    use blockend_kernel::store::RocksStore;
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0 + 1_000);
    let blocks = strict_blocks();
    let (digests, set_hash) = {
        let mut kernel = Kernel::builder(&Strict)
            .with_store(RocksStore::open(dir.path()).expect("open"))
            .with_clock(clock.clone())
            .open()
            .expect("open");
        kernel.dispatch(blocks[..6].to_vec()).expect("store");
        kernel.checkpoint().expect("store");
        kernel.dispatch(blocks[6..].to_vec()).expect("store");
        // Dropped without close, as a crash would: the snapshot is older than the blocks.
        (kernel.digests(), kernel.set_hash())
    };
    let reopened = Kernel::builder(&Strict)
        .with_store(RocksStore::open(dir.path()).expect("reopen"))
        .with_clock(clock)
        .open()
        .expect("reopen");
    assert!(!reopened.stats().restored_from_snapshot);
    assert_eq!(reopened.digests(), digests);
    assert_eq!(reopened.set_hash(), set_hash);
}
