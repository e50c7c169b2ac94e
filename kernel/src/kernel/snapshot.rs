//! Persisted state snapshots, so a reopen need not replay every block.
//!
//! A snapshot holds every slice's state (postcard), the statuses of the blocks that do not
//! count (most blocks count, so this list is short), and the `set_hash` of the candidate set it
//! was taken of. It is written in the same atomic batch as the blocks, every
//! [`crate::Config::snapshot_interval`] changes and by [`Kernel::checkpoint`] /
//! [`Kernel::close`], so it is never ahead of or behind the blocks it describes. On open, a
//! snapshot whose `set_hash` equals that of the stored blocks is restored as is; otherwise
//! (more blocks were committed after it, then the process died) the kernel replays every
//! block. Either way the state equals the fold of the stored blocks.

use serde::{Deserialize, Serialize};

use super::fold::Status;
use super::{Error, Kernel};
use crate::block::{BlockId, IdMap};
use crate::store::Batch;

#[derive(Serialize, Deserialize)]
struct Repr {
    /// The set it was taken of: ids and whether each body was held (see `Kernel::set_hash`),
    /// so a snapshot taken before a collection or a body restore is never taken for after.
    set_hash: [u8; 32],
    /// (slice name, slice version, state).
    states: Vec<(String, u32, Vec<u8>)>,
    /// (block, status code, slice index, reason) for every block that does not count.
    uncounted: Vec<([u8; 32], u8, u32, String)>,
}

const IGNORED: u8 = 1;
const REJECTED: u8 = 2;
const COLLECTED: u8 = 4;

impl Kernel {
    pub(super) fn encode_snapshot(&self) -> Vec<u8> {
        let uncounted = self
            .fold
            .statuses()
            .filter_map(|(id, status)| {
                let (code, slice, reason) = match status {
                    Status::Counted => return None,
                    Status::Ignored => (IGNORED, 0, String::new()),
                    Status::Rejected { slice, reason } => {
                        (REJECTED, *slice as u32, reason.to_string())
                    }
                    Status::Collected => (COLLECTED, 0, String::new()),
                };
                Some((id.0, code, slice, reason))
            })
            .collect();
        let repr = Repr {
            set_hash: self.set_hash().0,
            states: self
                .fold
                .slices
                .iter()
                .map(|s| (s.name().to_owned(), s.version(), s.state_bytes()))
                .collect(),
            uncounted,
        };
        postcard::to_allocvec(&repr).expect("serializing to a Vec cannot fail")
    }

    /// Restores the fold from `bytes` if the snapshot describes exactly the blocks in the
    /// index. Returns whether it did; on `false` nothing was changed.
    pub(super) fn restore_snapshot(&mut self, bytes: &[u8]) -> bool {
        let Ok(repr) = postcard::from_bytes::<Repr>(bytes) else {
            return false;
        };
        if repr.set_hash != self.set_hash().0 || repr.states.len() != self.fold.slices.len() {
            return false;
        }
        let names_match = repr
            .states
            .iter()
            .zip(&self.fold.slices)
            .all(|((name, version, _), slice)| name == slice.name() && *version == slice.version());
        if !names_match {
            return false;
        }
        let mut status: IdMap<Status> =
            IdMap::with_capacity_and_hasher(self.index.blocks.len(), Default::default());
        for (id, code, slice, reason) in repr.uncounted {
            let decoded = match code {
                IGNORED => Status::Ignored,
                REJECTED if (slice as usize) < self.fold.slices.len() => Status::Rejected {
                    slice: slice as usize,
                    reason: reason.into(),
                },
                COLLECTED => Status::Collected,
                _ => return false,
            };
            status.insert(BlockId(id), decoded);
        }
        // Decode every state before touching any slice, so a bad one changes nothing.
        let mut snapshots = Vec::with_capacity(repr.states.len());
        for ((_, _, bytes), slice) in repr.states.iter().zip(&self.fold.slices) {
            match slice.decode_state(bytes) {
                Some(state) => snapshots.push(state),
                None => return false,
            }
        }
        for (slice, state) in self.fold.slices.iter_mut().zip(&snapshots) {
            slice.restore(state.as_ref());
        }
        for block in self.index.blocks.values() {
            status.entry(block.id()).or_insert(Status::Counted);
        }
        self.fold.resume(&self.index, status);
        true
    }

    /// Writes a snapshot of the state now, so the next open restores it instead of replaying.
    ///
    /// # Errors
    /// Only [`Error::Store`].
    pub fn checkpoint(&mut self) -> Result<(), Error> {
        let batch = Batch {
            snapshot: Some(self.encode_snapshot()),
            ..Batch::default()
        };
        self.store.commit(batch)?;
        self.since_snapshot = 0;
        Ok(())
    }
}
