//! Shared blocks and shared signature verdicts: what the simulator relies on to run thousands
//! of kernels in one process.

use std::sync::Arc;

use blockend_kernel::kernel::VerdictCache;
use blockend_kernel::{
    Application, Block, Context, Identity, Kernel, ManualClock, Outcome, Registry, Signature,
    Slice, Verdict,
};

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
        *n += 1
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

fn kernel(cache: Option<&VerdictCache>) -> Kernel {
    let builder = Kernel::builder(&App).with_clock(ManualClock::new(10_000));
    match cache {
        Some(cache) => builder.with_verdict_cache(cache.clone()),
        None => builder,
    }
    .open()
    .expect("memory store")
}

fn chain(secret: u8, n: usize) -> Vec<Arc<Block>> {
    let identity = Identity::from_secret([secret; 32]);
    let mut out: Vec<Arc<Block>> = Vec::new();
    for i in 0..n {
        let parent = out.last().map(|b| (b.id(), b.seq(), b.time()));
        out.push(Arc::new(Block::sign(
            &identity,
            parent,
            1_000 + i as u64,
            vec![i as u8],
        )));
    }
    out
}

fn forged(block: &Block) -> Arc<Block> {
    let mut signature = block.signature().0;
    signature[0] ^= 1;
    Arc::new(
        Block::from_parts(
            block.header().clone(),
            Signature(signature),
            block.body().map(<[u8]>::to_vec),
        )
        .expect("body matches"),
    )
}

#[test]
fn dispatch_shared_keeps_the_given_copy() {
    let blocks = chain(1, 3);
    let mut k = kernel(None);
    let report = k.dispatch_shared(blocks.iter().cloned()).expect("store");
    assert_eq!(report.count(|o| *o == Outcome::Accepted), 3);
    for block in &blocks {
        let held = k.block(&block.id()).expect("held");
        assert!(
            Arc::ptr_eq(&held, block),
            "the kernel copied a shared block"
        );
    }
    assert_eq!(k.state::<Count>(), Some(&3));
}

#[test]
fn dispatch_shared_and_dispatch_agree() {
    let blocks = chain(2, 4);
    let mut shared = kernel(None);
    let mut owned = kernel(None);
    // Out of order, so the mempool (which now holds shared blocks) stitches them in.
    let order = [3, 1, 0, 2];
    shared
        .dispatch_shared(order.iter().map(|&i| blocks[i].clone()))
        .expect("store");
    owned
        .dispatch(order.iter().map(|&i| (*blocks[i]).clone()))
        .expect("store");
    assert_eq!(shared.set_hash(), owned.set_hash());
    assert_eq!(shared.digests(), owned.digests());
    assert_eq!(shared.state::<Count>(), Some(&4));
}

#[test]
fn a_shared_cache_saves_the_second_kernel_its_checks() {
    let cache = VerdictCache::default();
    let blocks = chain(3, 5);
    let mut a = kernel(Some(&cache));
    let mut b = kernel(Some(&cache));
    a.dispatch_shared(blocks.iter().cloned()).expect("store");
    assert_eq!(a.stats().verified, 5);
    assert_eq!(cache.len(), 5);
    let report = b.dispatch_shared(blocks.iter().cloned()).expect("store");
    assert_eq!(report.count(|o| *o == Outcome::Accepted), 5);
    assert_eq!(b.stats().verified, 0);
    assert_eq!(b.stats().cached_verdicts, 5);
    assert_eq!(cache.hits(), 5);
    assert_eq!(a.set_hash(), b.set_hash());
}

#[test]
fn a_forged_copy_does_not_borrow_the_honest_verdict() {
    let cache = VerdictCache::default();
    let blocks = chain(4, 1);
    let mut a = kernel(Some(&cache));
    a.dispatch_shared(blocks.iter().cloned()).expect("store");
    let fake = forged(&blocks[0]);
    assert_eq!(fake.id(), blocks[0].id());
    let mut b = kernel(Some(&cache));
    let report = b.dispatch_shared([fake.clone()]).expect("store");
    assert!(matches!(
        report.outcome(&fake.id()),
        Some(Outcome::Invalid(_))
    ));
    assert!(!b.contains(&fake.id()));
    // And the forged verdict is cached for the next kernel, without shadowing the honest one.
    let mut c = kernel(Some(&cache));
    let report = c.dispatch_shared([fake.clone()]).expect("store");
    assert!(matches!(
        report.outcome(&fake.id()),
        Some(Outcome::Invalid(_))
    ));
    assert_eq!(c.stats().verified, 0);
    let report = c.dispatch_shared([blocks[0].clone()]).expect("store");
    assert_eq!(report.outcome(&blocks[0].id()), Some(&Outcome::Accepted));
}

#[test]
fn the_cache_is_bounded() {
    let cache = VerdictCache::new(2);
    let mut k = kernel(Some(&cache));
    k.dispatch_shared(chain(5, 6)).expect("store");
    assert_eq!(cache.len(), 2);
    let none = VerdictCache::new(0);
    let mut k = kernel(Some(&none));
    k.dispatch_shared(chain(6, 3)).expect("store");
    assert!(none.is_empty());
    assert_eq!(k.stats().verified, 3);
}

#[test]
fn without_a_cache_every_kernel_checks() {
    let blocks = chain(7, 3);
    let mut a = kernel(None);
    let mut b = kernel(None);
    a.dispatch_shared(blocks.iter().cloned()).expect("store");
    b.dispatch_shared(blocks.iter().cloned()).expect("store");
    assert_eq!(a.stats().verified, 3);
    assert_eq!(b.stats().verified, 3);
    assert_eq!(b.stats().cached_verdicts, 0);
}

#[test]
fn verdicts_checked_ahead_on_another_thread_spare_the_kernel_its_checks() {
    let cache = VerdictCache::default();
    let blocks = chain(5, 4);
    let fake = forged(&blocks[0]);
    let ahead = cache.clone();
    let (honest, forged_copy) = (blocks.clone(), fake.clone());
    let verdicts = std::thread::spawn(move || {
        let honest: Vec<bool> = honest.iter().map(|b| ahead.check(b).is_ok()).collect();
        (honest, ahead.check(&forged_copy).is_ok())
    })
    .join()
    .expect("checker thread");
    assert_eq!(verdicts, (vec![true; 4], false));
    assert_eq!(cache.len(), 5, "the forgery has a verdict of its own");
    let mut kernel = kernel(Some(&cache));
    let report = kernel.dispatch_shared([fake.clone()]).expect("store");
    assert!(matches!(
        report.outcome(&fake.id()),
        Some(Outcome::Invalid(_))
    ));
    let report = kernel
        .dispatch_shared(blocks.iter().cloned())
        .expect("store");
    assert_eq!(report.count(|o| *o == Outcome::Accepted), 4);
    assert_eq!(
        kernel.stats().verified,
        0,
        "every verdict came from the cache"
    );
    assert_eq!(kernel.stats().cached_verdicts, 5);
}
