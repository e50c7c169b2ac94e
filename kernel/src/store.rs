//! Where retained blocks live between runs.
//!
//! The kernel keeps its index (feeds, order, statuses) in memory and writes through to a
//! [`BlockStore`]: every dispatch ends in one [`Batch`], committed atomically. [`MemoryStore`]
//! serves tests and the simulator; the durable RocksDB backend implements the same trait, and
//! refuses to open damaged files ([`StoreError::Damaged`]) until a repair says what was lost.

mod memory;
#[cfg(feature = "rocksdb")]
mod rocks;

use std::path::PathBuf;
use std::sync::Arc;

pub use memory::MemoryStore;
#[cfg(feature = "rocksdb")]
pub use rocks::{FeedLoss, RepairReport, RocksConfig, RocksStore};

use crate::block::{Block, BlockId};
use crate::identity::PublicKey;

/// The writes of one dispatch, applied all or nothing.
///
/// The kernel names each block, timer and tombstone at most once per batch (as the end state of
/// its dispatch), so a backend may apply the parts in any order.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Blocks to store (new members of the candidate set, and fork proofs).
    pub put: Vec<Arc<Block>>,
    /// Ids of blocks to delete.
    pub delete: Vec<BlockId>,
    /// Expiry timers to set: (time, block).
    pub timers: Vec<(u64, BlockId)>,
    /// Expiry timers that fired or whose block left.
    pub timers_done: Vec<(u64, BlockId)>,
    /// The time of the last garbage collection, when it moved.
    pub gc_time: Option<u64>,
    /// The newest block of each feed this batch changed (`None`: the feed is gone).
    pub heads: Vec<(PublicKey, Option<(u64, BlockId)>)>,
    /// Tombstones of evicted feeds: refused until the given time (`None`: lifted).
    pub tombstones: Vec<(PublicKey, Option<u64>)>,
    /// A new state snapshot, replacing the previous one.
    pub snapshot: Option<Vec<u8>>,
    /// Each feed's arrival number, the order in which the kernel first stored it (`None`:
    /// the feed is gone, its number with it).
    pub arrivals: Vec<(PublicKey, Option<u64>)>,
    /// Authors the user follows (`true`) or no longer follows (`false`).
    pub follows: Vec<(PublicKey, bool)>,
}

impl Batch {
    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.put.is_empty()
            && self.delete.is_empty()
            && self.timers.is_empty()
            && self.timers_done.is_empty()
            && self.gc_time.is_none()
            && self.heads.is_empty()
            && self.tombstones.is_empty()
            && self.snapshot.is_none()
            && self.arrivals.is_empty()
            && self.follows.is_empty()
    }
}

/// A storage failure. The kernel's in-memory view is unchanged by a failed commit's caller
/// only as far as documented on the calling method.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed (IO, corruption). The message comes from the backend.
    #[error("store backend: {0}")]
    Backend(String),
    /// The directory holds something other than a blockend store; nothing was written.
    #[error("{}: not a blockend store (the directory is not empty and has no blockend.store marker)", path.display())]
    Foreign {
        /// The directory.
        path: PathBuf,
    },
    /// Another process has the store open for writing (a running node owns its store) and
    /// did not let go within the lock timeout; nothing was written. Retry later, stop the
    /// other process, or read through a read-only open, which takes no lock.
    #[error("the store at {} is locked by another process (a running node or another blockend command); waited {} ms", path.display(), waited.as_millis())]
    Locked {
        /// The directory.
        path: PathBuf,
        /// How long the open waited for the lock.
        waited: std::time::Duration,
    },
    /// The store was opened read-only, so it refuses every write; nothing was written. Open
    /// it for writing (which waits for the writer's lock) to change it.
    #[error("the store at {} is open read-only and refuses writes", path.display())]
    ReadOnly {
        /// The directory.
        path: PathBuf,
    },
    /// The store holds blocks but its identity file is missing or does not decode, so it was
    /// not opened for writing: a new key would sign blocks as a new author. Restore the file
    /// (reading works without it).
    #[error("the store at {} holds blocks but its identity file is missing or damaged: restore {}; refusing to sign with a new key", path.display(), file.display())]
    IdentityLost {
        /// The directory.
        path: PathBuf,
        /// The identity file.
        file: PathBuf,
    },
    /// The operating system refused this user access to a file or directory of the store
    /// (it belongs to another user, or its mode forbids the access); nothing was changed.
    /// Run as the store's owner, or grant this user access: reading needs read access only,
    /// writing needs write access to the whole store directory.
    #[error("cannot {access} {}: permission denied ({})", path.display(), access.hint())]
    PermissionDenied {
        /// The file or directory that could not be read or written.
        path: PathBuf,
        /// What was refused.
        access: Access,
    },
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Bytes in the store do not decode.
    #[error("corrupt record {key}: {reason}")]
    Corrupt {
        /// Which record.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store's database files are damaged (a corrupt write-ahead log or table file), so
    /// the store was not opened (or the read failed) and nothing was changed. Nothing is
    /// dropped silently: `RocksStore::repair` keeps what is intact and reports what was lost,
    /// which peers may still hold.
    #[error("{}", damaged(path, file, *offset, detail, *lost))]
    Damaged {
        /// The store's directory.
        path: PathBuf,
        /// The damaged file, or the database directory when the backend does not say which.
        file: PathBuf,
        /// Where in `file` the damage starts, when known.
        offset: Option<u64>,
        /// What is wrong, in the backend's words.
        detail: String,
        /// How many readable blocks were written after the damage (a repair cannot keep
        /// them), when counted.
        lost: Option<usize>,
    },
}

impl StoreError {
    /// The error for `source`, a failure to `access` `path`:
    /// [`StoreError::PermissionDenied`] when the operating system refused the access,
    /// [`StoreError::Io`] otherwise.
    pub fn io(path: impl Into<PathBuf>, access: Access, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            Self::PermissionDenied { path, access }
        } else {
            Self::Io { path, source }
        }
    }
}

/// What a [`StoreError::PermissionDenied`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// Reading a file, or listing or entering a directory.
    Read,
    /// Creating, changing or locking a file.
    Write,
}

impl Access {
    /// What the person can do about it.
    fn hint(self) -> &'static str {
        match self {
            Self::Read => "the store belongs to another user or is not readable by this one: run as its owner or grant read access",
            Self::Write => "the store belongs to another user or is read-only for this one: run as its owner to write; cat, state and stats need read access only",
        }
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Read => "read",
            Self::Write => "write",
        })
    }
}

fn damaged(
    path: &std::path::Path,
    file: &std::path::Path,
    offset: Option<u64>,
    detail: &str,
    lost: Option<usize>,
) -> String {
    let at = offset.map_or(String::new(), |offset| format!(" at byte {offset}"));
    let lost = match lost {
        Some(lost) => format!("; {lost} readable blocks were written after the damage"),
        None => String::new(),
    };
    format!(
        "{}: damaged store: {} is corrupt{at} ({detail}){lost}; run `blockend repair --store {}` to keep what is intact",
        path.display(),
        file.display(),
        path.display()
    )
}

/// A block store backend.
pub trait BlockStore: Send + 'static {
    /// Applies `batch` atomically.
    ///
    /// # Errors
    /// [`StoreError`] if the backend fails; nothing of the batch is then visible.
    fn commit(&mut self, batch: Batch) -> Result<(), StoreError>;

    /// Every stored block, in no particular order.
    ///
    /// # Errors
    /// [`StoreError`] if the backend fails or a record is corrupt.
    fn blocks(&self) -> Result<Vec<Arc<Block>>, StoreError>;

    /// One block by id.
    ///
    /// # Errors
    /// [`StoreError`] if the backend fails or the record is corrupt.
    fn get(&self, id: &BlockId) -> Result<Option<Arc<Block>>, StoreError>;

    /// The number of stored blocks.
    fn len(&self) -> usize;

    /// Whether no block is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every pending expiry timer: (time, block). A record for inspection: the kernel derives
    /// its timers from the blocks on open (a timer a damaged store lost would otherwise leave
    /// its block unexpired), so a store may lose these without harm.
    ///
    /// # Errors
    /// [`StoreError`] if the backend fails or a record is corrupt.
    fn timers(&self) -> Result<Vec<(u64, BlockId)>, StoreError>;

    /// The time of the last garbage collection (0 if none ran).
    ///
    /// # Errors
    /// [`StoreError`] if the backend fails or the record is corrupt.
    fn gc_time(&self) -> Result<u64, StoreError>;

    /// Every tombstone: (author, refused until).
    ///
    /// # Errors
    /// [`StoreError`] if the backend fails or a record is corrupt.
    fn tombstones(&self) -> Result<Vec<(PublicKey, u64)>, StoreError>;

    /// Every feed's arrival number: (author, number). See [`Batch::arrivals`].
    ///
    /// # Errors
    /// [`StoreError`] if the backend fails or a record is corrupt.
    fn arrivals(&self) -> Result<Vec<(PublicKey, u64)>, StoreError>;

    /// The authors the user follows.
    ///
    /// # Errors
    /// [`StoreError`] if the backend fails or a record is corrupt.
    fn follows(&self) -> Result<Vec<PublicKey>, StoreError>;

    /// The latest state snapshot, if one was written.
    ///
    /// # Errors
    /// [`StoreError`] if the backend fails.
    fn snapshot(&self) -> Result<Option<Vec<u8>>, StoreError>;

    /// The stored identity's secret, if one was saved.
    ///
    /// # Errors
    /// [`StoreError`] if the backend fails.
    fn identity(&self) -> Result<Option<[u8; 32]>, StoreError>;

    /// Saves the identity's secret.
    ///
    /// # Errors
    /// [`StoreError`] if the backend fails.
    fn set_identity(&mut self, secret: [u8; 32]) -> Result<(), StoreError>;
}
