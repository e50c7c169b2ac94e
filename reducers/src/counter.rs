//! `counter`: one counter per author. Bodies are `{"value": <n>}` with `n` from 0 to
//! `u64::MAX`; each must strictly exceed the author's previous value. The state is every
//! author's latest value and their `total` (four authors writing 1..10 give a total of 40).
//!
//! Consistency: commutative. A verdict depends only on the author's own earlier blocks, which
//! every fold sees in seq order, so any arrival order gives the same state.
//!
//! # Extreme values
//! - **A full counter stays writable.** Nothing exceeds `u64::MAX`, so an author whose counter
//!   reached it may repeat `u64::MAX` (a block that changes nothing) instead of being locked out
//!   of their own feed for good. Any smaller value is still rejected.
//! - **The total cannot overflow.** It is a `u128`: even 2^64 authors at `u64::MAX` fit. One
//!   author's value never makes another author's block rejected; a verdict only compares an
//!   author with themselves.
//! - **The total renders losslessly.** In JSON (the CLI's `state`, the local API) `total` is a
//!   number while it fits in a `u64` and a decimal string above, e.g.
//!   `"total": "18446744073709551620"`: JSON parsers that read numbers as 64-bit integers or
//!   doubles would lose or refuse a larger number, and `serde_json::Value` cannot hold one.
//!   Binary formats (postcard: digests and snapshots) keep the plain `u128`.
//!
//! ```
//! use blockend_kernel::{Application, Identity, Kernel, Registry};
//! use blockend_reducers::Counter;
//!
//! struct App;
//! impl Application for App {
//!     fn register(&self, slices: &mut Registry) { slices.add(Counter); }
//! }
//!
//! let mut alice = Kernel::builder(&App).open()?;
//! alice.create_block(br#"{"value": 18446744073709551615}"#.to_vec())?;
//! alice.create_block(br#"{"value": 18446744073709551615}"#.to_vec())?; // full: may repeat
//! let mut bob = Kernel::builder(&App).with_identity(Identity::from_secret([2; 32])).open()?;
//! let block = bob.create_block(br#"{"value": 5}"#.to_vec())?;
//! alice.dispatch([(*block).clone()])?;
//! let json = serde_json::to_value(alice.state::<Counter>().unwrap()).unwrap();
//! assert_eq!(json["total"], "18446744073709551620");
//! assert_eq!(serde_json::to_value(bob.state::<Counter>().unwrap()).unwrap()["total"], 5);
//! # Ok::<(), blockend_kernel::Error>(())
//! ```

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
    /// Sum of every author's latest value (128 bits: it cannot overflow). In JSON a number up to
    /// `u64::MAX`, a decimal string above (see the [module docs](self)).
    #[serde(with = "total")]
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
        let Some(value) = bump(ctx.body()) else {
            return Verdict::Ignore;
        };
        let mut hex = [0u8; 64];
        let previous = state.by_author.get(author_hex(ctx, &mut hex)).copied();
        match previous {
            // A full counter may repeat its value: nothing else could ever follow it.
            Some(u64::MAX) if value == u64::MAX => Verdict::Accept,
            Some(p) if value <= p => Verdict::Reject(format!(
                "value {value} does not exceed the author's last value {p} (each value must be \
                 above the last)"
            )),
            _ => Verdict::Accept,
        }
    }

    fn reduce(&self, ctx: &Context<'_>, state: &mut Counters) {
        if let Some(value) = bump(ctx.body()) {
            let mut hex = [0u8; 64];
            let author = author_hex(ctx, &mut hex);
            let previous = match state.by_author.get_mut(author) {
                Some(held) => Some(std::mem::replace(held, value)),
                None => state.by_author.insert(author.to_owned(), value),
            };
            // `total` is the sum of the latest values, so it holds `previous`, and a u128 holds
            // 2^64 authors at u64::MAX: saturation never happens, it only rules out a panic.
            state.total = state
                .total
                .saturating_sub(u128::from(previous.unwrap_or(0)))
                .saturating_add(u128::from(value));
        }
    }

    fn expects(&self) -> Option<String> {
        Some(format!(
            r#"{{"value": <n>}}, n a whole number from 0 to {}, above your last value"#,
            u64::MAX
        ))
    }

    fn commutative(&self) -> bool {
        true
    }

    /// 1: a full counter (at `u64::MAX`) accepts `u64::MAX` again.
    fn version(&self) -> u32 {
        1
    }
}

/// A body's value, as `serde_json` reads a [`Bump`]. The compact form writers produce,
/// `{"value":N}`, is read without the JSON parser (a counter judges and reduces every block it
/// counts, and the parser was a tenth of a simulated swarm's time); any other form goes to
/// `serde_json`. Both agree on every input: a number with a leading zero or above `u64::MAX`
/// is refused either way.
pub fn bump(body: &[u8]) -> Option<u64> {
    let compact = body
        .strip_prefix(br#"{"value":"#)
        .and_then(|rest| rest.strip_suffix(b"}"))
        .filter(|digits| {
            !digits.is_empty()
                && digits.iter().all(u8::is_ascii_digit)
                && (digits.len() == 1 || digits[0] != b'0')
        });
    match compact {
        Some(digits) => digits.iter().try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        }),
        None => serde_json::from_slice::<Bump>(body).ok().map(|b| b.value),
    }
}

/// The block's author in lower-case hex, written into `buf`: the state's key, without an
/// allocation per block judged.
fn author_hex<'a>(ctx: &Context<'_>, buf: &'a mut [u8; 64]) -> &'a str {
    hex::encode_to_slice(ctx.author().as_bytes(), buf).expect("64 bytes hold 32 in hex");
    std::str::from_utf8(buf).expect("hex is ASCII")
}

/// `Counters::total` in serde: in human-readable formats (JSON) a number up to `u64::MAX` and a
/// decimal string above; in binary formats a plain `u128`.
mod total {
    use std::fmt;

    use serde::de::{self, Deserializer, Unexpected, Visitor};
    use serde::{Deserialize, Serializer};

    pub fn serialize<S: Serializer>(total: &u128, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            return serializer.serialize_u128(*total);
        }
        match u64::try_from(*total) {
            Ok(small) => serializer.serialize_u64(small),
            Err(_) => serializer.collect_str(total),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u128, D::Error> {
        if !deserializer.is_human_readable() {
            return u128::deserialize(deserializer);
        }
        deserializer.deserialize_any(Total)
    }

    struct Total;

    impl Visitor<'_> for Total {
        type Value = u128;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a non-negative integer, or one in decimal digits as a string")
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<u128, E> {
            Ok(value.into())
        }

        fn visit_u128<E: de::Error>(self, value: u128) -> Result<u128, E> {
            Ok(value)
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<u128, E> {
            u128::try_from(value).map_err(|_| E::invalid_value(Unexpected::Signed(value), &self))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<u128, E> {
            let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
            digits
                .then(|| text.parse().ok())
                .flatten()
                .ok_or_else(|| E::invalid_value(Unexpected::Str(text), &self))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(total: u128) -> Counters {
        Counters {
            total,
            by_author: BTreeMap::new(),
        }
    }

    #[test]
    fn total_is_a_json_number_up_to_u64_max_and_a_decimal_string_above() {
        let json = |total| serde_json::to_value(counters(total)).expect("renders")["total"].clone();
        assert_eq!(json(0), serde_json::json!(0));
        assert_eq!(json(u64::MAX.into()), serde_json::json!(u64::MAX));
        assert_eq!(
            json(u128::from(u64::MAX) + 1),
            serde_json::json!("18446744073709551616")
        );
        assert_eq!(json(u128::MAX), serde_json::json!(u128::MAX.to_string()));
    }

    #[test]
    fn total_round_trips_through_json_in_both_shapes() {
        for total in [0, 7, u64::MAX.into(), u128::from(u64::MAX) + 1, u128::MAX] {
            let text = serde_json::to_string(&counters(total)).expect("renders");
            let back: Counters = serde_json::from_str(&text).expect("parses");
            assert_eq!(back.total, total, "{text}");
        }
    }

    #[test]
    fn total_refuses_negative_numbers_and_strings_that_are_not_digits() {
        for bad in [r#"-1"#, r#""-1""#, r#""+5""#, r#""""#, r#""1e3""#, r#"1.5"#] {
            let text = format!(r#"{{"total": {bad}, "by_author": {{}}}}"#);
            assert!(serde_json::from_str::<Counters>(&text).is_err(), "{bad}");
        }
    }
}
