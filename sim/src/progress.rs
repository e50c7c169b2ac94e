//! Progress on stderr: a start line, a bar redrawn in place while stderr is a terminal, an
//! end line. Plain text, no dependencies.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::config::Scenario;

/// Least wall time between two redraws of the bar.
const REDRAW: Duration = Duration::from_millis(200);
/// Width of the bar in characters.
const WIDTH: usize = 30;

pub(crate) struct Progress {
    on: bool,
    tty: bool,
    started: Instant,
    drawn: Option<Instant>,
}

impl Progress {
    pub(crate) fn new(on: bool) -> Self {
        Self {
            on,
            tty: on && std::io::stderr().is_terminal(),
            started: Instant::now(),
            drawn: None,
        }
    }

    pub(crate) fn start(&mut self, scenario: &Scenario, peers: usize) {
        self.started = Instant::now();
        if self.on {
            eprintln!(
                "blockend-sim: {} with {peers} peers, seed {}",
                scenario.name, scenario.seed
            );
        }
    }

    /// `now` in virtual µs; `fraction` of tracked blocks delivered.
    pub(crate) fn update(&mut self, now: u64, fraction: f64) {
        if !self.tty || self.drawn.is_some_and(|d| d.elapsed() < REDRAW) {
            return;
        }
        self.drawn = Some(Instant::now());
        let filled = ((fraction.clamp(0.0, 1.0)) * WIDTH as f64) as usize;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{}{}] {:5.1}% delivered  virtual {:8.1} s  wall {:6.1} s",
            "#".repeat(filled),
            " ".repeat(WIDTH - filled),
            fraction * 100.0,
            now as f64 / 1e6,
            self.started.elapsed().as_secs_f64()
        );
        let _ = err.flush();
    }

    pub(crate) fn end(&mut self, summary: &str) {
        if !self.on {
            return;
        }
        if self.tty && self.drawn.is_some() {
            eprintln!();
        }
        eprintln!("blockend-sim: {summary}");
    }
}
