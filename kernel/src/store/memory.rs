//! An in-memory [`BlockStore`] for tests and the simulator. Blocks are shared (`Arc`), not
//! copied, so many simulated peers holding the same block pay for it once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{Batch, BlockStore, StoreError};
use crate::block::{Block, BlockId, BlockSet};
use crate::identity::PublicKey;

/// Blocks in a hash map; nothing survives the process.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    blocks: BlockSet,
    timers: BTreeSet<(u64, BlockId)>,
    gc_time: u64,
    tombstones: BTreeMap<PublicKey, u64>,
    arrivals: BTreeMap<PublicKey, u64>,
    follows: BTreeSet<PublicKey>,
    snapshot: Option<Vec<u8>>,
    identity: Option<[u8; 32]>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl BlockStore for MemoryStore {
    fn commit(&mut self, batch: Batch) -> Result<(), StoreError> {
        for id in &batch.delete {
            self.blocks.remove(id);
        }
        for block in batch.put {
            self.blocks.insert(block);
        }
        for timer in &batch.timers_done {
            self.timers.remove(timer);
        }
        self.timers.extend(batch.timers);
        if let Some(time) = batch.gc_time {
            self.gc_time = time;
        }
        if let Some(snapshot) = batch.snapshot {
            self.snapshot = Some(snapshot);
        }
        for (author, until) in batch.tombstones {
            match until {
                Some(until) => self.tombstones.insert(author, until),
                None => self.tombstones.remove(&author),
            };
        }
        for (author, arrival) in batch.arrivals {
            match arrival {
                Some(arrival) => self.arrivals.insert(author, arrival),
                None => self.arrivals.remove(&author),
            };
        }
        for (author, follow) in batch.follows {
            if follow {
                self.follows.insert(author);
            } else {
                self.follows.remove(&author);
            }
        }
        Ok(())
    }

    fn arrivals(&self) -> Result<Vec<(PublicKey, u64)>, StoreError> {
        Ok(self.arrivals.iter().map(|(a, n)| (*a, *n)).collect())
    }

    fn follows(&self) -> Result<Vec<PublicKey>, StoreError> {
        Ok(self.follows.iter().copied().collect())
    }

    fn snapshot(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.snapshot.clone())
    }

    fn tombstones(&self) -> Result<Vec<(PublicKey, u64)>, StoreError> {
        Ok(self.tombstones.iter().map(|(a, t)| (*a, *t)).collect())
    }

    fn timers(&self) -> Result<Vec<(u64, BlockId)>, StoreError> {
        Ok(self.timers.iter().copied().collect())
    }

    fn gc_time(&self) -> Result<u64, StoreError> {
        Ok(self.gc_time)
    }

    fn blocks(&self) -> Result<Vec<Arc<Block>>, StoreError> {
        Ok(self.blocks.values().cloned().collect())
    }

    fn get(&self, id: &BlockId) -> Result<Option<Arc<Block>>, StoreError> {
        Ok(self.blocks.get(id).cloned())
    }

    fn len(&self) -> usize {
        self.blocks.len()
    }

    fn identity(&self) -> Result<Option<[u8; 32]>, StoreError> {
        Ok(self.identity)
    }

    fn set_identity(&mut self, secret: [u8; 32]) -> Result<(), StoreError> {
        self.identity = Some(secret);
        Ok(())
    }
}
