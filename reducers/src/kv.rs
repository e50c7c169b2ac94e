//! `kv`: a replicated map. Bodies are `{"set": {"key": "<k>", "value": <any json>}}` or
//! `{"delete": "<k>"}`. The state maps each key to its last write.
//!
//! Consistency: commutative, last writer wins by (time, block id). A delete leaves a tombstone
//! with its (time, id), so a set that arrives late but was written earlier cannot undo it.
//!
//! ```
//! use blockend_kernel::{Application, Kernel, ManualClock, Registry};
//! use blockend_reducers::Kv;
//!
//! struct App;
//! impl Application for App {
//!     fn register(&self, slices: &mut Registry) { slices.add(Kv); }
//! }
//!
//! let clock = ManualClock::new(1_000);
//! let mut kernel = Kernel::builder(&App).with_clock(clock.clone()).open()?;
//! kernel.create_block(br#"{"set": {"key": "color", "value": "blue"}}"#.to_vec())?;
//! assert_eq!(kernel.state::<Kv>().unwrap().get("color"), Some("\"blue\""));
//! clock.advance(1);
//! kernel.create_block(br#"{"delete": "color"}"#.to_vec())?;
//! assert_eq!(kernel.state::<Kv>().unwrap().get("color"), None);
//! # Ok::<(), blockend_kernel::Error>(())
//! ```

use std::collections::BTreeMap;

use blockend_kernel::{Context, Slice, Verdict};
use serde::{Deserialize, Serialize};

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// A kv block's body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Sets a key.
    Set {
        /// The key.
        key: String,
        /// Any JSON value.
        value: serde_json::Value,
    },
    /// Deletes a key.
    Delete(String),
}

/// The last write to a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The value as JSON text, or `None` for a delete (a tombstone).
    pub value: Option<String>,
    /// Time of the write.
    pub time: u64,
    /// Id of the writing block (hex), the tie-breaker.
    pub block: String,
}

/// The map.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Map {
    /// Key -> last write (deletes included, as tombstones).
    pub entries: BTreeMap<String, Entry>,
}

impl Map {
    /// The live value of `key`, as JSON text.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key)?.value.as_deref()
    }
}

/// The kv slice.
#[derive(Clone, Copy, Debug, Default)]
pub struct Kv;

fn op(ctx: &Context<'_>) -> Option<Op> {
    serde_json::from_slice(ctx.body()).ok()
}

/// The key's length, as a rejection reason says it.
fn key_length(key: &str) -> String {
    match key.len() {
        0 => "the key is empty".to_owned(),
        n => format!("the key is {n} bytes long"),
    }
}

impl Slice for Kv {
    type State = Map;

    fn name(&self) -> &str {
        "kv"
    }

    fn initial(&self) -> Map {
        Map::default()
    }

    fn filter(&self, ctx: &Context<'_>, _: &Map) -> Verdict {
        let Some(op) = op(ctx) else {
            return Verdict::Ignore;
        };
        let key = match &op {
            Op::Set { key, .. } | Op::Delete(key) => key,
        };
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Verdict::Reject(format!(
                "{}; a key is 1 to {MAX_KEY_BYTES} bytes",
                key_length(key)
            ));
        }
        Verdict::Accept
    }

    fn reduce(&self, ctx: &Context<'_>, state: &mut Map) {
        let Some(op) = op(ctx) else {
            return;
        };
        let (key, value) = match op {
            Op::Set { key, value } => (key, Some(value.to_string())),
            Op::Delete(key) => (key, None),
        };
        let write = Entry {
            value,
            time: ctx.time(),
            block: ctx.block().id().to_hex(),
        };
        match state.entries.get(&key) {
            Some(old) if (old.time, &old.block) >= (write.time, &write.block) => {}
            _ => {
                state.entries.insert(key, write);
            }
        }
    }

    fn expects(&self) -> Option<String> {
        Some(format!(
            r#"{{"set": {{"key": "<1-{MAX_KEY_BYTES} bytes>", "value": <any JSON>}}}} or {{"delete": "<key>"}}"#
        ))
    }

    fn commutative(&self) -> bool {
        true
    }
}
