//! `counter`: one counter per author. Bodies are `{"value": <n>}`; each must strictly exceed
//! the author's previous value. The state is every author's latest value and their `total`
//! (four authors writing 1..10 give a total of 40).
//!
//! Consistency: commutative. A verdict depends only on the author's own earlier blocks, which
//! every fold sees in seq order, so any arrival order gives the same state.

use std::collections::BTreeMap;

use blockend_kernel::{Context, Slice, Verdict};
use serde::{Deserialize, Serialize};

/// A counter block's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bump {
    /// The author's new value.
    pub value: u64,
}

/// The counter state, as the CLI prints it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Sum of every author's latest value (128 bits: it cannot overflow).
    pub total: u128,
    /// Latest value by author (hex key).
    pub by_author: BTreeMap<String, u64>,
}

/// The counter slice.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counter;

impl Slice for Counter {
    type State = Counters;

    fn name(&self) -> &str {
        "counter"
    }

    fn initial(&self) -> Counters {
        Counters::default()
    }

    fn filter(&self, ctx: &Context<'_>, state: &Counters) -> Verdict {
        let Ok(Bump { value }) = serde_json::from_slice::<Bump>(ctx.body()) else {
            return Verdict::Ignore;
        };
        let previous = state.by_author.get(&ctx.author().to_hex()).copied();
        match previous {
            Some(p) if value <= p => {
                Verdict::Reject(format!("value {value} does not exceed the previous {p}"))
            }
            _ => Verdict::Accept,
        }
    }

    fn reduce(&self, ctx: &Context<'_>, state: &mut Counters) {
        if let Ok(Bump { value }) = serde_json::from_slice::<Bump>(ctx.body()) {
            let previous = state.by_author.insert(ctx.author().to_hex(), value);
            state.total = state.total - u128::from(previous.unwrap_or(0)) + u128::from(value);
        }
    }

    fn commutative(&self) -> bool {
        true
    }
}
