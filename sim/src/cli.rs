//! The entry point `blockend sim SCENARIO.toml [--seed N] [--peers N]` calls.

use std::path::PathBuf;

use crate::config::Scenario;
use crate::engine::Simulation;
use crate::error::Error;
use crate::report::Report;

/// What the command line gives.
#[derive(Clone, Debug, Default)]
pub struct Args {
    /// The scenario file.
    pub scenario: PathBuf,
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
    /// Overrides the scenario's number of peers.
    pub peers: Option<usize>,
    /// Where to write the SVG plot (default: next to the system's temp files, named after the
    /// scenario, seed and peers).
    pub svg: Option<PathBuf>,
    /// Where to write the self-contained HTML report (none unless given).
    pub html: Option<PathBuf>,
}

/// Runs a scenario file: progress on stderr, the JSON report as the last line on stdout,
/// the SVG plot's path on stderr and, when [`Args::html`] is given, the HTML report
/// ([`Report::html`]) written there and its path on stderr. Both files are written before the
/// outcome is decided, so a failing run has them too. On an invariant failure prints the
/// reproducing command line on stderr and returns Err.
///
/// # Errors
/// [`Error::Read`], [`Error::Parse`] or [`Error::Invalid`] for a bad scenario, [`Error::Kernel`]
/// if a kernel fails, [`Error::Write`] if the plot or the HTML report cannot be written,
/// [`Error::Invariant`] when the run broke an invariant (the report is printed first).
pub fn run(args: &Args) -> Result<Report, Error> {
    let mut scenario = Scenario::load(&args.scenario)?;
    if let Some(seed) = args.seed {
        scenario.seed = seed;
    }
    if let Some(peers) = args.peers {
        scenario.peers = peers;
    }
    let svg = args.svg.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "blockend-sim-{}-seed{}-peers{}.svg",
            scenario.name, scenario.seed, scenario.peers
        ))
    });
    let report = Simulation::new(scenario)?
        .with_source(&args.scenario)
        .with_progress(true)
        .run()?;
    std::fs::write(&svg, report.svg()).map_err(|source| Error::Write {
        path: svg.clone(),
        source,
    })?;
    eprintln!("blockend-sim: convergence plot: {}", svg.display());
    if let Some(html) = &args.html {
        std::fs::write(html, report.html()).map_err(|source| Error::Write {
            path: html.clone(),
            source,
        })?;
        eprintln!("blockend-sim: HTML report: {}", html.display());
    }
    println!("{}", report.to_json());
    if let Some(violation) = report.violations.first() {
        eprintln!("blockend-sim: FAILED: {violation}");
        eprintln!("blockend-sim: reproduce with: {}", report.reproduce);
        return Err(Error::Invariant {
            violation: violation.clone(),
            command: report.reproduce.clone(),
        });
    }
    Ok(report)
}
