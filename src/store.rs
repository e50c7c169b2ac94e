//! A store directory as the CLI sees it: the RocksDB store (blocks, identity) plus the name of
//! the app it was created for, in `DIR/app`.

use std::fs;
use std::path::{Path, PathBuf};

use blockend_kernel::store::{Access, FeedLoss, RepairReport, RocksConfig, RocksStore, StoreError};
use blockend_kernel::Kernel;

use crate::app::{ReadyApp, UnknownApp};

/// The file in a store directory that names its app.
pub const APP_FILE: &str = "app";

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
    let store = RocksStore::open_read_only(dir)?;
    let kernel = Kernel::builder(&app).with_store(store).open()?;
    Ok((kernel, app))
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
    let app = if probe(dir)? {
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
    let mut kernel = Kernel::builder(&app).with_store(store).open()?;
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
