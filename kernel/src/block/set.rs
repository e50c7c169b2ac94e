//! A set of shared blocks looked up by id: each entry is one pointer, where a map from id to
//! block would store the 32-byte id a second time beside it. The kernel's index and the
//! in-memory store hold every block of C in one of these; at 100 simulated peers holding
//! 100,000 blocks each, the difference is about 60 bytes per block per peer.
//!
//! Maps keyed by block id hash with foldhash, seeded per process ([`IdHasher`]): ids are
//! blake3 outputs, so SipHash's strength buys nothing a keyed fast hash does not, and it cost
//! a tenth of the simulator's time.

use std::borrow::Borrow;
use std::collections::hash_set::{self, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::{Block, BlockId};

/// The hasher of every map and set keyed by block id.
pub(crate) type IdHasher = foldhash::fast::RandomState;

/// A map keyed by block id.
pub(crate) type IdMap<V> = std::collections::HashMap<BlockId, V, IdHasher>;

/// A block keyed by its id.
#[derive(Clone, Debug)]
struct ById(Arc<Block>);

impl Borrow<BlockId> for ById {
    fn borrow(&self) -> &BlockId {
        &self.0.id
    }
}

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must hash as the id does: lookups hash a `BlockId`.
        self.0.id.hash(state);
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

/// Blocks by id, one copy of each id.
#[derive(Clone, Debug, Default)]
pub(crate) struct BlockSet(HashSet<ById, IdHasher>);

impl BlockSet {
    pub(crate) fn get(&self, id: &BlockId) -> Option<&Arc<Block>> {
        self.0.get(id).map(|b| &b.0)
    }

    pub(crate) fn contains_key(&self, id: &BlockId) -> bool {
        self.0.contains(id)
    }

    /// Inserts `block`, replacing a block of the same id (a pruned or restored copy).
    pub(crate) fn insert(&mut self, block: Arc<Block>) -> Option<Arc<Block>> {
        self.0.replace(ById(block)).map(|b| b.0)
    }

    pub(crate) fn remove(&mut self, id: &BlockId) -> Option<Arc<Block>> {
        self.0.take(id).map(|b| b.0)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn values(&self) -> Values<'_> {
        Values(self.0.iter())
    }
}

impl std::ops::Index<&BlockId> for BlockSet {
    type Output = Arc<Block>;

    fn index(&self, id: &BlockId) -> &Arc<Block> {
        self.get(id).expect("block in the set")
    }
}

/// The blocks of a [`BlockSet`], in no particular order.
pub(crate) struct Values<'a>(hash_set::Iter<'a, ById>);

impl<'a> Iterator for Values<'a> {
    type Item = &'a Arc<Block>;

    fn next(&mut self) -> Option<&'a Arc<Block>> {
        self.0.next().map(|b| &b.0)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn block(body: &[u8]) -> Arc<Block> {
        Arc::new(Block::sign(
            &Identity::from_secret([7; 32]),
            None,
            1,
            body.to_vec(),
        ))
    }

    #[test]
    fn a_block_is_found_by_its_id_and_replaced_by_a_copy_of_the_same_id() {
        let mut set = BlockSet::default();
        let a = block(b"a");
        assert!(set.insert(a.clone()).is_none());
        assert!(set.contains_key(&a.id()));
        assert_eq!(set.get(&a.id()).map(|b| b.id()), Some(a.id()));
        let pruned = Arc::new(a.pruned());
        let old = set.insert(pruned.clone()).expect("replaced");
        assert!(old.body().is_some());
        assert!(set[&a.id()].body().is_none(), "the new copy is kept");
        assert_eq!(set.len(), 1);
        assert_eq!(set.remove(&a.id()).map(|b| b.id()), Some(a.id()));
        assert_eq!(set.len(), 0);
        assert!(set.get(&block(b"b").id()).is_none());
    }
}
