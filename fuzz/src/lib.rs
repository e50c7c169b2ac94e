//! What the stateful fuzz targets share: a pool of pre-signed blocks (so an execution spends its
//! time in the kernel and the sync machine, not in signing), kernels on a `MemoryStore`, and
//! the invariants checked after every input.
//!
//! The pool holds, for four authors, a chain of counter blocks each; a fork of author 3 at
//! seq 2; a genesis dated far in the future; a body the counter rejects; and, through
//! [`copy`], header-only and forged copies of any of them.

use std::sync::{Arc, OnceLock};

use blockend_kernel::sync::{Limits, Message, Output};
use blockend_kernel::{Block, Identity, Kernel, ManualClock, Signature};
use blockend_reducers::Counter;

/// The kernels' clock at the start of every input.
pub const T0: u64 = 1_700_000_000_000;

struct App;
impl blockend_kernel::Application for App {
    fn register(&self, slices: &mut blockend_kernel::Registry) {
        slices.add(Counter);
    }
}

fn sign(identity: &Identity, parent: Option<&Block>, time: u64, body: &str) -> Arc<Block> {
    let parent = parent.map(|p| (p.id(), p.seq(), p.time()));
    Arc::new(Block::sign(
        identity,
        parent,
        time,
        body.as_bytes().to_vec(),
    ))
}

/// The pre-signed blocks.
pub fn pool() -> &'static [Arc<Block>] {
    static POOL: OnceLock<Vec<Arc<Block>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut pool = Vec::new();
        for a in 0..4u8 {
            let identity = Identity::from_secret([a + 1; 32]);
            let mut chain: Vec<Arc<Block>> = Vec::new();
            for n in 0..8u64 {
                let block = sign(
                    &identity,
                    chain.last().map(|b| &**b),
                    T0 - 60_000 + u64::from(a) * 1_000 + n,
                    &format!(r#"{{"value":{}}}"#, n + 1),
                );
                chain.push(block);
            }
            if a == 3 {
                // A fork at seq 2, and a block after it.
                let fork = sign(&identity, Some(&chain[1]), T0 - 50_000, r#"{"value":99}"#);
                let after = sign(&identity, Some(&fork), T0 - 49_000, r#"{"value":100}"#);
                pool.extend([fork, after]);
            }
            pool.extend(chain);
        }
        let late = Identity::from_secret([9; 32]);
        pool.push(sign(&late, None, T0 + 3_600_000, r#"{"value":1}"#));
        pool.push(sign(&late, None, T0 - 1_000, r#"{"value":0}"#));
        let rejected = Identity::from_secret([10; 32]);
        let first = sign(&rejected, None, T0 - 2_000, r#"{"value":5}"#);
        let lower = sign(&rejected, Some(&first), T0 - 1_999, r#"{"value":3}"#);
        pool.extend([first, lower]);
        pool
    })
}

/// A copy of pool block `pick` (modulo the pool): `kind` 0 full, 1 header-only, 2 with a
/// corrupted signature, 3 header-only with a corrupted signature.
pub fn copy(pick: u8, kind: u8) -> Arc<Block> {
    let pool = pool();
    let block = &pool[usize::from(pick) % pool.len()];
    let base = if kind & 1 == 1 {
        Arc::new(block.pruned())
    } else {
        block.clone()
    };
    if kind & 2 == 0 {
        return base;
    }
    let mut signature = base.signature().0;
    signature[usize::from(pick) % 64] ^= 1 << (kind % 8);
    match Block::from_parts(
        base.header().clone(),
        Signature(signature),
        base.body().map(<[u8]>::to_vec),
    ) {
        Ok(forged) => Arc::new(forged),
        Err(_) => base,
    }
}

/// A kernel for the ready-made counter on a `MemoryStore`, at `clock`.
pub fn kernel(clock: &ManualClock, seed: u8) -> Kernel {
    Kernel::builder(&App)
        .with_clock(clock.clone())
        .with_identity(Identity::from_secret([200u8.wrapping_add(seed); 32]))
        .open()
        .expect("a kernel on a MemoryStore")
}

/// Every message the machine sends fits the limits and decodes to itself.
pub fn check_outputs<P>(outputs: &[Output<P>], limits: &Limits) {
    for output in outputs {
        if let Output::Send { message, .. } = output {
            let bytes = message.encode();
            assert!(
                bytes.len() <= limits.max_message_bytes,
                "a {} byte message",
                bytes.len()
            );
            assert_eq!(
                Message::decode(&bytes, limits).as_ref(),
                Ok(message),
                "an outgoing message does not decode to itself"
            );
        }
    }
}

/// The kernel's state is a fold of what it retains: a fresh kernel given exactly its retained
/// blocks holds the same set and computes the same digests.
pub fn check_fold(kernel: &Kernel, clock: &ManualClock) {
    let mut fresh = kernel_like(clock);
    let mut retained = Vec::new();
    for head in kernel.heads() {
        retained.extend(kernel.blocks_from(&head.author, 0, usize::MAX, usize::MAX));
    }
    fresh
        .dispatch_shared(retained)
        .expect("a MemoryStore does not fail");
    assert_eq!(
        fresh.set_hash(),
        kernel.set_hash(),
        "set_hash is not a fold of C"
    );
    assert_eq!(
        fresh.digests(),
        kernel.digests(),
        "state is not a fold of C"
    );
}

fn kernel_like(clock: &ManualClock) -> Kernel {
    kernel(clock, 255)
}
