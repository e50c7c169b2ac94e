//! `clock`: picostack's clock. Bodies are `{"tick": <ms>}`; the state is the latest tick.
//!
//! Consistency: commutative. The state is the largest tick among accepted blocks, whatever
//! the order. A tick later than its own block's time is rejected, with a reason that names both
//! times; blocks dated in the future are held by the kernel until their time comes.
//!
//! ```
//! use blockend_kernel::{Application, Kernel, ManualClock, Registry};
//! use blockend_reducers::Clock;
//!
//! struct App;
//! impl Application for App {
//!     fn register(&self, slices: &mut Registry) { slices.add(Clock); }
//! }
//!
//! let mut kernel = Kernel::builder(&App).with_clock(ManualClock::new(5_000)).open()?;
//! kernel.create_block(br#"{"tick": 4000}"#.to_vec())?;
//! assert!(kernel.create_block(br#"{"tick": 9000}"#.to_vec()).is_err()); // from the future
//! assert!(kernel.create_block(br#"{"other": 1}"#.to_vec()).is_err()); // not a tick: ignored
//! assert_eq!(kernel.state::<Clock>(), Some(&4000));
//! # Ok::<(), blockend_kernel::Error>(())
//! ```

use blockend_kernel::{Context, Slice, Verdict};
use serde::{Deserialize, Serialize};

/// A tick block's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    /// The tick time, ms since the Unix epoch.
    pub tick: u64,
}

/// The clock slice.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock;

impl Slice for Clock {
    type State = u64;

    fn name(&self) -> &str {
        "clock"
    }

    fn initial(&self) -> u64 {
        0
    }

    fn filter(&self, ctx: &Context<'_>, _: &u64) -> Verdict {
        match serde_json::from_slice::<Tick>(ctx.body()) {
            Err(_) => Verdict::Ignore,
            Ok(Tick { tick }) if tick > ctx.time() => Verdict::Reject(format!(
                "tick {tick} is later than the block's own time {} (a tick may not be from the \
                 future)",
                ctx.time()
            )),
            Ok(_) => Verdict::Accept,
        }
    }

    fn reduce(&self, ctx: &Context<'_>, state: &mut u64) {
        if let Ok(Tick { tick }) = serde_json::from_slice::<Tick>(ctx.body()) {
            *state = (*state).max(tick);
        }
    }

    fn expects(&self) -> Option<String> {
        Some(r#"{"tick": <ms since the Unix epoch>}, not after the block's own time"#.into())
    }

    fn commutative(&self) -> bool {
        true
    }
}
