//! The simulator's errors.

use std::path::PathBuf;

/// Why a simulation could not run, or why it failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The scenario file could not be read; check the path.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The scenario file is not valid TOML for a scenario.
    #[error("scenario {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A scenario value is out of range.
    #[error("invalid scenario: {reason}")]
    Invalid {
        /// Which value, and why.
        reason: String,
    },
    /// A kernel failed (its store); the run cannot go on.
    #[error("kernel failed: {0}")]
    Kernel(#[from] blockend_kernel::Error),
    /// An output file (the SVG plot or the HTML report) could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The run broke an invariant. `command` reproduces it.
    #[error("invariant violated: {violation}; reproduce with: {command}")]
    Invariant {
        /// The first violation found (the report lists all).
        violation: String,
        /// The command line that reproduces the run.
        command: String,
    },
}
