//! A store directory as the CLI sees it: the RocksDB store (blocks, identity) plus the name of
//! the app it was created for, in `DIR/app`, the byte budget for other authors' feeds, in
//! `DIR/capacity` (absent: [`DEFAULT_CAPACITY_BYTES`]), and the public key of its author, in
//! `DIR/author`, so a reader that may not read the secret key still tells the own feed apart.

use std::fs;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use blockend_kernel::store::{
    Access, Batch, FeedLoss, RepairReport, RocksConfig, RocksStore, StoreError,
};
use blockend_kernel::{Block, BlockId, BlockStore, Config, Kernel, PublicKey};

use crate::app::{ReadyApp, UnknownApp};

/// The file in a store directory that names its app.
pub const APP_FILE: &str = "app";

/// The file in a store directory that holds its capacity: the byte budget for other authors'
/// feeds, as decimal text.
pub const CAPACITY_FILE: &str = "capacity";

/// The file in a store directory that holds its author's public key, as hex (written by every
/// writer; readable by whoever may read the store, unlike the secret in `DIR/identity`).
pub const AUTHOR_FILE: &str = "author";

/// The bootstrap peers `blockend node --bootstrap` was last given, one multiaddr a line.
pub const BOOTSTRAP_FILE: &str = "bootstrap";

/// The running node's address book: peers it was connected to, dialed again after a restart
/// (see `node::address_book`).
pub const PEERS_FILE: &str = "peers";

/// The capacity of a store that remembers none: 1 GiB. Bounded by default, so a node that
/// meets a flood fills a known share of the disk and no more; room for about six million
/// blocks with 20-byte bodies (180 bytes each as retention counts them), small next to
/// today's disks. Own feeds are never counted against it nor evicted.
pub const DEFAULT_CAPACITY_BYTES: u64 = 1 << 30;

/// The environment variable that sets how long a writing command waits for a store another
/// process holds, in milliseconds (default [`DEFAULT_LOCK_TIMEOUT_MS`]).
pub const LOCK_TIMEOUT_ENV: &str = "BLOCKEND_LOCK_TIMEOUT_MS";

/// How long a writing command waits for the store's lock when [`LOCK_TIMEOUT_ENV`] is unset.
pub const DEFAULT_LOCK_TIMEOUT_MS: u64 = 5000;

/// How writing commands open a store: waiting for the lock as [`LOCK_TIMEOUT_ENV`] says (an
/// unparsable value counts as unset).
pub fn rocks_config() -> RocksConfig {
    let ms = std::env::var(LOCK_TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_LOCK_TIMEOUT_MS);
    RocksConfig::default().with_lock_timeout(std::time::Duration::from_millis(ms))
}

/// Opens the kernel of the existing store in `dir` read-only: no lock is taken (a node or a
/// writing command may hold the store), nothing is written, and no secret key is needed.
/// The kernel refuses every dispatch that would write.
///
/// # Errors
/// [`Error::Missing`], [`Error::App`], or the kernel's error: a damaged store, or a
/// [`StoreError::PermissionDenied`] naming the file this user may not read.
pub fn open_read_only(dir: &Path) -> Result<(Kernel, ReadyApp), Error> {
    let app = app_of(dir)?;
    let capacity = capacity_of(dir)?.unwrap_or(DEFAULT_CAPACITY_BYTES);
    let store = RocksStore::open_read_only(dir)?;
    let kernel = Kernel::builder(&app)
        .with_store(store)
        .with_config(kernel_config(capacity))
        .open()?;
    Ok((kernel, app))
}

/// Opens the existing store in `dir` as [`open_read_only`] does, and shows it as of now:
/// blocks whose time-to-live has passed are collected (bodies dropped, contributions
/// re-folded), as a running node would have done, in memory only. Nothing is written: the
/// kernel's writes go nowhere ([`ViewStore`]), so what the read verbs (`state`, `cat`, `head`,
/// `get`, `export`) show without a node matches what a node shows, while the store stays as
/// it was. The view has no capacity (it evicts nothing), so drop it rather than close it,
/// and do not read capacity figures or counters from it (`stats` and `feeds` use
/// [`open_read_only`]).
///
/// # Errors
/// As [`open_read_only`].
pub fn open_view(dir: &Path) -> Result<(Kernel, ReadyApp), Error> {
    let app = app_of(dir)?;
    let capacity = capacity_of(dir)?;
    let store = ViewStore(RocksStore::open_read_only(dir)?);
    // No capacity: a view never evicts. A reader that may not read the secret key opens with
    // a throwaway one, so the own feed would rank as another author's and could be evicted
    // from the view; and what is evicted is the node's to decide, not a reader's.
    let _ = capacity;
    let mut kernel = Kernel::builder(&app)
        .with_store(store)
        .with_config(kernel_config(u64::MAX))
        .open()?;
    let now = kernel.now();
    kernel.gc(now)?;
    Ok((kernel, app))
}

/// A read-only store whose commits are accepted and dropped: the store of a kernel that only
/// shows a view ([`open_view`]). Reads go to the store; no write reaches it. Never hand it a
/// kernel whose writes should last: they vanish without an error.
pub struct ViewStore(pub RocksStore);

impl BlockStore for ViewStore {
    fn commit(&mut self, _: Batch) -> Result<(), StoreError> {
        Ok(())
    }
    fn blocks(&self) -> Result<Vec<Arc<Block>>, StoreError> {
        self.0.blocks()
    }
    fn get(&self, id: &BlockId) -> Result<Option<Arc<Block>>, StoreError> {
        self.0.get(id)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn timers(&self) -> Result<Vec<(u64, BlockId)>, StoreError> {
        self.0.timers()
    }
    fn gc_time(&self) -> Result<u64, StoreError> {
        self.0.gc_time()
    }
    fn tombstones(&self) -> Result<Vec<(PublicKey, u64)>, StoreError> {
        self.0.tombstones()
    }
    fn arrivals(&self) -> Result<Vec<(PublicKey, u64)>, StoreError> {
        self.0.arrivals()
    }
    fn follows(&self) -> Result<Vec<PublicKey>, StoreError> {
        self.0.follows()
    }
    fn snapshot(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.snapshot()
    }
    fn identity(&self) -> Result<Option<[u8; 32]>, StoreError> {
        self.0.identity()
    }
    fn set_identity(&mut self, secret: [u8; 32]) -> Result<(), StoreError> {
        self.0.set_identity(secret)
    }
}

/// The kernel configuration for a store of `capacity` bytes: the defaults, with that budget
/// for other authors' feeds.
pub fn kernel_config(capacity: u64) -> Config {
    Config::default().with_capacity_bytes(capacity)
}

/// Why a store directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// There is no store in the directory.
    #[error("no store at {} (create one with `blockend init --store {}`)", path.display(), path.display())]
    Missing {
        /// The directory.
        path: PathBuf,
    },
    /// The store was created for another app.
    #[error("the store at {} runs app {stored:?}, not {given:?}", path.display())]
    AppMismatch {
        /// The directory.
        path: PathBuf,
        /// The app the store remembers.
        stored: String,
        /// The app asked for.
        given: String,
    },
    /// The store names an app this binary does not know.
    #[error("the store at {}: {source}", path.display())]
    App {
        /// The directory.
        path: PathBuf,
        /// The unknown name.
        source: UnknownApp,
    },
    /// The capacity file does not hold a byte count: fix or delete it (the store then has
    /// [`DEFAULT_CAPACITY_BYTES`]), or give the writer a capacity, which replaces it.
    #[error("{} holds {text:?}, not a byte count: give `--capacity SIZE` to replace it, or delete the file for the default", path.display())]
    BadCapacity {
        /// The capacity file.
        path: PathBuf,
        /// What it holds.
        text: String,
    },
    /// A `--bootstrap` address the node cannot dial (nothing is remembered).
    #[error("{0}")]
    BadBootstrap(String),
    /// The kernel or its RocksDB store failed to open (locked, foreign, corrupt).
    #[error(transparent)]
    Kernel(#[from] blockend_kernel::Error),
    /// A file operation failed (one the operating system refused is a
    /// [`StoreError::PermissionDenied`], in [`Error::Kernel`]).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        Self::Kernel(error.into())
    }
}

/// The failure to `access` `path`: a [`StoreError::PermissionDenied`] when the operating
/// system refused it, else [`Error::Io`].
fn io(path: PathBuf, access: Access, source: std::io::Error) -> Error {
    match StoreError::io(path, access, source) {
        StoreError::Io { path, source } => Error::Io { path, source },
        other => other.into(),
    }
}

/// Whether `dir` holds a store (false also when this user may not look inside `dir`: see
/// [`probe`]).
pub fn exists(dir: &Path) -> bool {
    dir.join(APP_FILE).is_file()
}

/// Whether `dir` holds a store, or why that cannot be told.
///
/// # Errors
/// A [`StoreError::PermissionDenied`] when this user may not look inside `dir` (any other
/// failure to look counts as no store).
pub fn probe(dir: &Path) -> Result<bool, Error> {
    let path = dir.join(APP_FILE);
    match fs::metadata(&path) {
        Ok(metadata) => Ok(metadata.is_file()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(io(path, Access::Read, e))
        }
        // Missing, or a path through a file: no store.
        Err(_) => Ok(false),
    }
}

/// The app a store was created for.
///
/// # Errors
/// [`Error::Missing`] when there is no store, [`Error::App`] for an unknown name, a
/// [`StoreError::PermissionDenied`] when this user may not read the app file.
pub fn app_of(dir: &Path) -> Result<ReadyApp, Error> {
    let path = dir.join(APP_FILE);
    let name = match fs::read_to_string(&path) {
        Ok(name) => name,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Missing {
                path: dir.to_owned(),
            })
        }
        Err(source) => return Err(io(path, Access::Read, source)),
    };
    ReadyApp::from_name(name.trim()).map_err(|source| Error::App {
        path: dir.to_owned(),
        source,
    })
}

/// The capacity the store in `dir` remembers, in bytes; `None` when it remembers none (it
/// then has [`DEFAULT_CAPACITY_BYTES`]).
///
/// # Errors
/// [`Error::BadCapacity`] when the file holds something else, a
/// [`StoreError::PermissionDenied`] when this user may not read it.
pub fn capacity_of(dir: &Path) -> Result<Option<u64>, Error> {
    let path = dir.join(CAPACITY_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io(path, Access::Read, source)),
    };
    match text.trim().parse() {
        Ok(bytes) => Ok(Some(bytes)),
        Err(_) => Err(Error::BadCapacity {
            path,
            text: text.trim().to_owned(),
        }),
    }
}

/// Records `bytes` as the capacity of the store in `dir`. The file is replaced whole (written
/// aside, then renamed), so a reader beside the writer sees the old value or the new one.
fn remember_capacity(dir: &Path, bytes: u64) -> Result<(), Error> {
    let path = dir.join(CAPACITY_FILE);
    let aside = dir.join(format!("{CAPACITY_FILE}.new"));
    fs::write(&aside, format!("{bytes}\n"))
        .map_err(|source| io(aside.clone(), Access::Write, source))?;
    fs::rename(&aside, &path).map_err(|source| io(path, Access::Write, source))
}

/// The bootstrap peers of the store in `dir`: `given` when there are any (they replace the
/// remembered ones, which are written down, replaced whole like the capacity), else the ones
/// remembered. A line of the file that is not a multiaddr is skipped with a warning.
///
/// # Errors
/// A [`StoreError::PermissionDenied`] or other I/O error reading or writing the file.
pub fn bootstrap_peers(
    dir: &Path,
    given: &[libp2p::Multiaddr],
) -> Result<Vec<libp2p::Multiaddr>, Error> {
    let path = dir.join(BOOTSTRAP_FILE);
    let dialable = |addr: &libp2p::Multiaddr| {
        crate::node::check_dialable(crate::node::Transport::Ip, addr)
            .map_err(|e| Error::BadBootstrap(e.to_string().replacen("--peer", "--bootstrap", 1)))
    };
    if !given.is_empty() {
        // Checked before it is remembered: a bad address must not stop every later start.
        for addr in given {
            dialable(addr)?;
        }
        let mut text = String::new();
        for addr in given {
            text.push_str(&format!("{addr}\n"));
        }
        let aside = dir.join(format!("{BOOTSTRAP_FILE}.new"));
        fs::write(&aside, text).map_err(|source| io(aside.clone(), Access::Write, source))?;
        fs::rename(&aside, &path).map_err(|source| io(path, Access::Write, source))?;
        return Ok(given.to_vec());
    }
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(io(path, Access::Read, source)),
    };
    let mut peers = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match line.parse::<libp2p::Multiaddr>() {
            Ok(addr) => match dialable(&addr) {
                Ok(()) => peers.push(addr),
                Err(e) => tracing::warn!("{} line {}: {e}; skipped", path.display(), n + 1),
            },
            Err(e) => tracing::warn!(
                "{} line {}: not a multiaddr ({e}), skipped",
                path.display(),
                n + 1
            ),
        }
    }
    Ok(peers)
}

/// The store's own author: the one `DIR/author` names, else the kernel's. A kernel opened
/// read-only by a user who may not read the secret key signs with a throwaway key, so its
/// [`Kernel::author`] is not the store's; the own feed is then told apart by this.
pub fn own_author(dir: &Path, kernel: &Kernel) -> PublicKey {
    recorded_author(dir)
        .ok()
        .flatten()
        .unwrap_or_else(|| kernel.author())
}

/// The author `DIR/author` records, read without opening the store (no lock, no secret);
/// `None` when the file is missing or does not hold a key (a store from before the file).
///
/// # Errors
/// [`Error::Missing`] when `dir` holds no store, a [`StoreError::PermissionDenied`] when this
/// user may not read the file.
pub fn recorded_author(dir: &Path) -> Result<Option<PublicKey>, Error> {
    if !probe(dir)? {
        return Err(Error::Missing {
            path: dir.to_owned(),
        });
    }
    let path = dir.join(AUTHOR_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io(path, Access::Read, source)),
    };
    Ok(crate::api::parse_author(text.trim()).ok())
}

/// Records the store's author in `DIR/author` when it does not name it yet.
fn remember_author(dir: &Path, kernel: &Kernel) -> Result<(), Error> {
    let author = kernel.author();
    let path = dir.join(AUTHOR_FILE);
    if fs::read_to_string(&path).is_ok_and(|text| text.trim() == author.to_hex()) {
        return Ok(());
    }
    let aside = dir.join(format!("{AUTHOR_FILE}.new"));
    fs::write(&aside, format!("{}\n", author.to_hex()))
        .map_err(|source| io(aside.clone(), Access::Write, source))?;
    fs::rename(&aside, &path).map_err(|source| io(path, Access::Write, source))
}

/// Opens the kernel of the store in `dir`. With `create`, a missing store is created for
/// `app` (default `counter`); otherwise it must exist. A given `app` must match the store's.
///
/// # Errors
/// [`Error::Missing`], [`Error::AppMismatch`], or the kernel's error (a locked store: a node
/// is running on it; a [`StoreError::PermissionDenied`] naming what this user may not read
/// or write).
pub fn open(dir: &Path, app: Option<ReadyApp>, create: bool) -> Result<(Kernel, ReadyApp), Error> {
    open_checked(dir, app, create).map(|(kernel, app, _)| (kernel, app))
}

/// The file that records that the own feed's recovery after the last repair is over (it
/// holds the repair's time), so later starts do not wait again.
pub const RECOVERED_FILE: &str = "repair.recovered";

/// The own feed's loss in the store's last repair, while its recovery is not over (see
/// [`mark_recovered`]) and the own feed is still short of the height it had reached before
/// the damage: the seq it must get back from peers before an append may sign a new block, or
/// a block would reuse a height the author already used. With a damaged write-ahead log the
/// damaged record itself cannot be read, so a feed of which nothing was readable after the
/// damage may have reached one block further than the report can see: the wait then asks
/// for one more.
pub fn own_feed_loss(
    dir: &Path,
    kernel: &Kernel,
    repair: Option<&RepairReport>,
) -> Option<FeedLoss> {
    let repair = repair?;
    if fs::read_to_string(dir.join(RECOVERED_FILE)).is_ok_and(|t| t.trim() == repair.at.to_string())
    {
        return None;
    }
    let mut loss = repair.feed(&kernel.author())?.clone();
    if repair.damaged_log.is_some() && loss.kept == Some(loss.before) {
        // Nothing of the feed was readable after the damage: the damaged record may have held
        // its next block.
        loss.before += 1;
    }
    let have = kernel.head(&kernel.author()).map(|h| h.seq);
    (have < Some(loss.before)).then_some(loss)
}

/// Records that the own feed's recovery after `repair` is over (the feed came back, or the
/// wait for it passed).
///
/// # Errors
/// [`Error::Io`], or a [`StoreError::PermissionDenied`].
pub fn mark_recovered(dir: &Path, repair: &RepairReport) -> Result<(), Error> {
    let path = dir.join(RECOVERED_FILE);
    fs::write(&path, format!("{}\n", repair.at)).map_err(|source| io(path, Access::Write, source))
}

/// [`open`], with the store's last repair record, if it was repaired (see
/// [`own_feed_loss`]).
///
/// # Errors
/// As [`open`].
pub fn open_checked(
    dir: &Path,
    app: Option<ReadyApp>,
    create: bool,
) -> Result<(Kernel, ReadyApp, Option<RepairReport>), Error> {
    open_with_capacity(dir, app, None, create)
}

/// [`open_checked`], with the kernel bounded by `capacity` bytes of other authors' feeds:
/// a given capacity is remembered in `DIR/capacity` (replacing what the store remembered,
/// which is logged), and `None` takes the remembered one, or [`DEFAULT_CAPACITY_BYTES`].
///
/// # Errors
/// As [`open`]; [`Error::BadCapacity`] when no capacity is given and the store's file holds
/// no byte count.
pub fn open_with_capacity(
    dir: &Path,
    app: Option<ReadyApp>,
    capacity: Option<u64>,
    create: bool,
) -> Result<(Kernel, ReadyApp, Option<RepairReport>), Error> {
    let existed = probe(dir)?;
    let app = if existed {
        let stored = app_of(dir)?;
        if let Some(given) = app.filter(|given| *given != stored) {
            return Err(Error::AppMismatch {
                path: dir.to_owned(),
                stored: stored.as_str().to_owned(),
                given: given.as_str().to_owned(),
            });
        }
        stored
    } else if create {
        app.unwrap_or(ReadyApp::Counter)
    } else {
        return Err(Error::Missing {
            path: dir.to_owned(),
        });
    };
    let store = RocksStore::open_with(dir, rocks_config())?;
    let repair = store.last_repair()?;
    if !probe(dir)? {
        // Written after RocksDB made the directory a store, so a crash in between leaves a
        // store without an app file, which `init` or `node --app` completes.
        let path = dir.join(APP_FILE);
        fs::write(&path, format!("{}\n", app.as_str()))
            .map_err(|source| io(path, Access::Write, source))?;
    }
    // Read and written under the store's lock, so two writers cannot interleave.
    let capacity = match capacity {
        Some(given) => {
            // A file that holds no byte count is what `--capacity` repairs.
            let remembered = capacity_of(dir).ok().flatten();
            if remembered != Some(given) {
                remember_capacity(dir, given)?;
                let was = match remembered {
                    Some(bytes) => bytes.to_string(),
                    None => format!("{DEFAULT_CAPACITY_BYTES}, the default"),
                };
                if existed && remembered.unwrap_or(DEFAULT_CAPACITY_BYTES) != given {
                    tracing::info!(
                        "the capacity of the store at {} is now {given} bytes (it was {was})",
                        dir.display()
                    );
                }
            }
            given
        }
        None => capacity_of(dir)?.unwrap_or(DEFAULT_CAPACITY_BYTES),
    };
    let mut kernel = Kernel::builder(&app)
        .with_store(store)
        .with_config(kernel_config(capacity))
        .open()?;
    let held = kernel.stats().other_bytes;
    if let Some(held) = upgraded_capacity(existed, capacity_of(dir)?, held, capacity) {
        remember_capacity(dir, held)?;
        kernel.set_capacity_bytes(Some(held));
        tracing::warn!(
            "the store at {} holds {held} bytes of other authors' feeds, more than the default capacity of {DEFAULT_CAPACITY_BYTES}: its capacity is now {held} bytes (give --capacity to lower it, which evicts the most junior feeds)",
            dir.display()
        );
    }
    remember_author(dir, &kernel)?;
    if let Some(report) = &repair {
        // The readable blocks the repair set aside (written after the damage, or cut off by
        // it) go through the kernel again: it verifies and links them like any peer's, and
        // those whose parents are back count again.
        if let Ok(lost) = report.lost_blocks() {
            if !lost.is_empty() {
                kernel.dispatch(lost)?;
            }
        }
    }
    Ok((kernel, app, repair))
}

/// The capacity a store opened with `capacity` must take instead, if any: a store from before
/// capacities existed (it existed and remembers none) holding more than `capacity` keeps
/// what it holds, `held` bytes (nothing is evicted by an upgrade), and remembers that.
fn upgraded_capacity(
    existed: bool,
    remembered: Option<u64>,
    held: u64,
    capacity: u64,
) -> Option<u64> {
    (existed && remembered.is_none() && held > capacity).then_some(held)
}

/// Why a capacity as written is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SizeError {
    /// No number before the unit, or a number that is not decimal digits with at most one
    /// point (`1`, `1.5`).
    #[error("{text:?} is not a number of bytes (e.g. 500MB, 1.5GiB, 1048576)")]
    NotANumber {
        /// The number as written.
        text: String,
    },
    /// A unit that is none of B, KB, MB, GB, TB, KiB, MiB, GiB, TiB.
    #[error("unknown unit {unit:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
    },
    /// More bytes than a u64 counts.
    #[error(
        "{text:?} is more bytes than can be counted (at most {} bytes)",
        u64::MAX
    )]
    TooLarge {
        /// The size as written.
        text: String,
    },
}

/// Parses a capacity as a person writes it: a plain number is bytes; `B`, `KB`, `MB`, `GB`,
/// `TB` are powers of 1000 and `KiB`, `MiB`, `GiB`, `TiB` powers of 1024, in any case, with or
/// without a space before them. Decimals are allowed (`1.5GiB`) and rounded down to a whole
/// byte.
///
/// # Errors
/// A [`SizeError`] saying what is wrong.
pub fn parse_capacity(text: &str) -> Result<u64, SizeError> {
    // More decimals than this cannot change the whole bytes, and keep the sums in a u128.
    const MAX_DECIMALS: usize = 24;
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() {
        return Err(SizeError::NotANumber {
            text: trimmed.to_owned(),
        });
    }
    let multiplier: u128 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(SizeError::UnknownUnit {
                unit: unit.trim_start().to_owned(),
            })
        }
    };
    let not_a_number = || SizeError::NotANumber {
        text: number.to_owned(),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (number.contains('.') && !digits(fraction)) {
        return Err(not_a_number());
    }
    let too_large = || SizeError::TooLarge {
        text: trimmed.to_owned(),
    };
    let whole: u128 = whole.parse::<u64>().map_err(|_| too_large())?.into();
    let fraction = &fraction[..fraction.len().min(MAX_DECIMALS)];
    let part = if fraction.is_empty() {
        0
    } else {
        let numerator: u128 = fraction.parse().map_err(|_| not_a_number())?;
        numerator * multiplier / 10u128.pow(fraction.len() as u32)
    };
    u64::try_from(whole * multiplier + part).map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::{parse_capacity, upgraded_capacity, SizeError, DEFAULT_CAPACITY_BYTES};

    #[test]
    fn an_upgraded_store_over_the_default_keeps_what_it_holds() {
        let over = DEFAULT_CAPACITY_BYTES + 1;
        let default = DEFAULT_CAPACITY_BYTES;
        // An old store (it existed, remembers no capacity) over the default keeps its bytes.
        assert_eq!(upgraded_capacity(true, None, over, default), Some(over));
        // Under the default, or a new store, or one that remembers a capacity (given by
        // `--capacity`, which may evict): nothing changes.
        assert_eq!(upgraded_capacity(true, None, default, default), None);
        assert_eq!(upgraded_capacity(false, None, over, default), None);
        assert_eq!(upgraded_capacity(true, Some(1_000), over, 1_000), None);
    }

    #[test]
    fn capacities_parse_in_both_unit_systems() {
        for (text, bytes) in [
            ("0", 0),
            ("1048576", 1_048_576),
            ("12B", 12),
            ("500MB", 500_000_000),
            ("500 mb", 500_000_000),
            ("2kb", 2_000),
            ("1GB", 1_000_000_000),
            ("3TB", 3_000_000_000_000),
            ("1KiB", 1024),
            ("1.5GiB", 1_610_612_736),
            ("1.5 gib", 1_610_612_736),
            ("0.5MiB", 524_288),
            ("2TiB", 2 << 40),
            ("1.0009KB", 1_000),
            ("  7 KiB  ", 7 * 1024),
            ("18446744073709551615", u64::MAX),
        ] {
            assert_eq!(parse_capacity(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn bad_capacities_say_what_is_wrong() {
        assert!(matches!(
            parse_capacity("12XB"),
            Err(SizeError::UnknownUnit { unit }) if unit == "XB"
        ));
        for text in ["", "GiB", ".5GiB", "1.GiB", "1.2.3MB", "-1KB", "1e3"] {
            assert!(parse_capacity(text).is_err(), "{text:?} parsed");
        }
        assert!(matches!(
            parse_capacity("18446744073709551616"),
            Err(SizeError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_capacity("20000000TB"),
            Err(SizeError::TooLarge { .. })
        ));
    }
}
