//! Helpers shared by the kernel's scenario tests.

use std::sync::{Arc, Mutex};

use blockend_kernel::store::{Batch, BlockStore, StoreError};
use blockend_kernel::{Block, BlockId, MemoryStore, PublicKey};

/// A store that outlives the kernel using it, so dropping the kernel without `close` is a
/// kill: what was committed stays, nothing else is written.
#[derive(Clone, Default)]
pub struct Shared(pub Arc<Mutex<MemoryStore>>);
impl BlockStore for Shared {
    fn commit(&mut self, batch: Batch) -> Result<(), StoreError> {
        self.0.lock().unwrap().commit(batch)
    }
    fn blocks(&self) -> Result<Vec<Arc<Block>>, StoreError> {
        self.0.lock().unwrap().blocks()
    }
    fn get(&self, id: &BlockId) -> Result<Option<Arc<Block>>, StoreError> {
        self.0.lock().unwrap().get(id)
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn timers(&self) -> Result<Vec<(u64, BlockId)>, StoreError> {
        self.0.lock().unwrap().timers()
    }
    fn gc_time(&self) -> Result<u64, StoreError> {
        self.0.lock().unwrap().gc_time()
    }
    fn tombstones(&self) -> Result<Vec<(PublicKey, u64)>, StoreError> {
        self.0.lock().unwrap().tombstones()
    }
    fn arrivals(&self) -> Result<Vec<(PublicKey, u64)>, StoreError> {
        self.0.lock().unwrap().arrivals()
    }
    fn follows(&self) -> Result<Vec<PublicKey>, StoreError> {
        self.0.lock().unwrap().follows()
    }
    fn snapshot(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.lock().unwrap().snapshot()
    }
    fn identity(&self) -> Result<Option<[u8; 32]>, StoreError> {
        self.0.lock().unwrap().identity()
    }
    fn set_identity(&mut self, secret: [u8; 32]) -> Result<(), StoreError> {
        self.0.lock().unwrap().set_identity(secret)
    }
}
