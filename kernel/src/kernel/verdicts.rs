//! A signature-verdict cache that several kernels in one process may share.
//!
//! A signature verdict depends only on the block's id (which covers the author and, through
//! the body hash, the body) and its signature, so it is the same in every kernel. Thousands of
//! simulated peers receiving one block need not check its signature thousands of times. The
//! cache is keyed by [`Block::fingerprint`] (id and signature), never by id alone, so a forged
//! copy cannot borrow the honest block's verdict. It is off by default; a node has one kernel
//! and gains nothing from it.

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt};
use std::sync::{Arc, Mutex, PoisonError};

use crate::block::{Block, BlockError};

/// Default number of verdicts kept.
pub const DEFAULT_VERDICTS: usize = 1 << 20;

struct Inner {
    verdicts: HashMap<[u8; 32], Result<(), BlockError>>,
    order: VecDeque<[u8; 32]>,
    max: usize,
    hits: u64,
}

/// Signature verdicts by [`Block::fingerprint`], bounded (oldest first out), shareable between
/// kernels: clones share one cache. Give it to [`crate::KernelBuilder::with_verdict_cache`].
#[derive(Clone)]
pub struct VerdictCache {
    inner: Arc<Mutex<Inner>>,
}

impl Default for VerdictCache {
    fn default() -> Self {
        Self::new(DEFAULT_VERDICTS)
    }
}

impl std::fmt::Debug for VerdictCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerdictCache")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl VerdictCache {
    /// A cache holding at most `max` verdicts (0 keeps none).
    pub fn new(max: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                verdicts: HashMap::new(),
                order: VecDeque::new(),
                max,
                hits: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written verdict: each insert is
        // one map operation. Keep using the cache.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Verdicts held now.
    pub fn len(&self) -> usize {
        self.lock().verdicts.len()
    }

    /// Whether no verdict is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lookups answered from the cache (cumulative, over every kernel sharing it).
    pub fn hits(&self) -> u64 {
        self.lock().hits
    }

    /// Checks `block`'s signature and records the verdict, from any thread, unless one is held.
    /// A driver that knows a block is coming (the simulator, when a peer writes one) can check
    /// it ahead on another core: a kernel that looks it up afterwards finds the verdict, one
    /// that comes first checks it itself. The verdict is the same either way.
    pub fn check(&self, block: &Block) -> Result<(), BlockError> {
        let key = block.fingerprint();
        if let Some(verdict) = self.lock().verdicts.get(&key) {
            return verdict.clone();
        }
        let verdict = block.author().verify(&block.id(), block.signature());
        let mut inner = self.lock();
        if inner.max > 0 && inner.verdicts.insert(key, verdict.clone()).is_none() {
            inner.order.push_back(key);
            while inner.order.len() > inner.max {
                if let Some(old) = inner.order.pop_front() {
                    inner.verdicts.remove(&old);
                }
            }
        }
        verdict
    }

    /// The cached verdict for each block, by position (`None` where unknown).
    pub(crate) fn get_all(&self, blocks: &[Arc<Block>]) -> Vec<Option<Result<(), BlockError>>> {
        let mut inner = self.lock();
        let found: Vec<_> = blocks
            .iter()
            .map(|b| inner.verdicts.get(&b.fingerprint()).cloned())
            .collect();
        inner.hits += found.iter().filter(|v| v.is_some()).count() as u64;
        found
    }

    /// Records verdicts.
    pub(crate) fn insert_all<'a>(
        &self,
        verdicts: impl IntoIterator<Item = (&'a Arc<Block>, &'a Result<(), BlockError>)>,
    ) {
        let mut inner = self.lock();
        if inner.max == 0 {
            return;
        }
        for (block, verdict) in verdicts {
            let key = block.fingerprint();
            if inner.verdicts.insert(key, verdict.clone()).is_none() {
                inner.order.push_back(key);
            }
        }
        while inner.order.len() > inner.max {
            if let Some(old) = inner.order.pop_front() {
                inner.verdicts.remove(&old);
            }
        }
    }
}
