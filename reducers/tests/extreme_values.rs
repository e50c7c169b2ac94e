//! Hostile bodies against every ready-made slice: extreme numbers (0, `u64::MAX`, beyond 64
//! bits, negative, fractional, out of range), empty and huge strings, escapes, JSON nested past
//! serde_json's recursion limit, and bytes that are not JSON, mixed from several authors.
//! Whatever a slice accepts, no reducer panics, the state renders to JSON losslessly (it parses
//! back to the same state) and one author's value never gets another author's block refused.
//!
//! States are rendered with `serde_json::to_value`, which is what `blockend::app::state_json`
//! (the node's `state` and the CLI's) does with a registered slice's state.

use std::collections::BTreeMap;

use blockend_kernel::{
    Application, Block, Error, Feed, Identity, Kernel, ManualClock, Outcome, Registry, Slice,
};
use blockend_reducers::chat::MAX_TTL_MS;
use blockend_reducers::counter::{Bump, Counters};
use blockend_reducers::{Chat, Clock, Counter, Kv};
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000;
/// The kernels' clock: every peer block (dated from `T0`, a second apart) is in the past.
const NOW: u64 = T0 + 100_000_000;
/// Peer authors; their feeds are identities `1..=PEERS`. Author 0 is the kernel itself.
const PEERS: u8 = 3;

struct One<S>(fn() -> S);
impl<S: Slice> Application for One<S> {
    fn register(&self, slices: &mut Registry) {
        slices.add((self.0)());
    }
}

/// Every ready-made slice in one kernel, as a custom app would combine them.
struct All;
impl Application for All {
    fn register(&self, slices: &mut Registry) {
        slices.add(Clock).add(Counter).add(Chat).add(Kv);
    }
}

fn open(app: &impl Application) -> Kernel {
    Kernel::builder(app)
        .with_clock(ManualClock::new(NOW))
        .open()
        .expect("memory store")
}

/// `S`'s state rendered as the node renders it, checked to parse back to the same state.
fn render<S: Slice>(kernel: &Kernel) -> Result<serde_json::Value, String> {
    let state = kernel.state::<S>().ok_or("slice not registered")?;
    let json = serde_json::to_value(state).map_err(|e| format!("does not render: {e}"))?;
    let back: S::State = serde_json::from_value(json.clone())
        .map_err(|e| format!("rendered {json} does not parse back: {e}"))?;
    if &back != state {
        return Err(format!("rendering is lossy: {state:?} became {json}"));
    }
    Ok(json)
}

fn render_all(kernels: &[Kernel; 5]) -> Result<(), String> {
    let [clock, counter, chat, kv, all] = kernels;
    render::<Clock>(clock)?;
    render::<Counter>(counter)?;
    render::<Chat>(chat)?;
    render::<Kv>(kv)?;
    render::<Clock>(all)?;
    render::<Counter>(all)?;
    render::<Chat>(all)?;
    render::<Kv>(all)?;
    Ok(())
}

fn kernels() -> [Kernel; 5] {
    [
        open(&One(|| Clock)),
        open(&One(|| Counter)),
        open(&One(|| Chat)),
        open(&One(|| Kv)),
        open(&All),
    ]
}

/// JSON number literals, the valid and the hostile.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0".to_owned(),
            "1".to_owned(),
            (u64::MAX - 1).to_string(),
            u64::MAX.to_string(),
            (u128::from(u64::MAX) + 1).to_string(),
            u128::MAX.to_string(),
            "1".repeat(400),
            "-1".to_owned(),
            i64::MIN.to_string(),
            "-0".to_owned(),
            "1.5".to_owned(),
            "1e19".to_owned(),
            "1e308".to_owned(),
            "1e400".to_owned(),
            "NaN".to_owned(),
            "Infinity".to_owned(),
            T0.to_string(),
            NOW.to_string(),
            (NOW + 1).to_string(),
            MAX_TTL_MS.to_string(),
            (MAX_TTL_MS + 1).to_string(),
        ]),
        any::<u64>().prop_map(|n| n.to_string()),
        (T0..T0 + 30_000).prop_map(|n| n.to_string()),
    ]
}

/// `[[[...]]]` or `{"a":{"a":...}}` nested `depth` deep (serde_json refuses more than 128).
fn deep(depth: usize, objects: bool) -> String {
    if objects {
        format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
    } else {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }
}

fn deep_json() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![1usize, 64, 126, 127, 128, 129, 10_000]),
        any::<bool>(),
    )
        .prop_map(|(depth, objects)| deep(depth, objects))
}

/// JSON string literals: empty, at and past the slices' length limits, huge, escapes,
/// lone surrogates (which serde_json refuses).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            r#""""#.to_owned(),
            r#""lobby""#.to_owned(),
            r#""\u0000""#.to_owned(),
            r#""\ud800""#.to_owned(),
            r#""\ud83d\ude00 é \n \" \\""#.to_owned(),
            "\"😀\"".to_owned(),
        ]),
        "[a-z]{1,4}".prop_map(|s| format!("\"{s}\"")),
        prop::sample::select(vec![63usize, 64, 65, 256, 257, 40_000, 66_000])
            .prop_map(|n| format!("\"{}\"", "x".repeat(n))),
    ]
}

/// Any JSON value a kv set may carry.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        number(),
        text(),
        deep_json(),
        prop::sample::select(vec![
            "null".to_owned(),
            "true".to_owned(),
            "{}".to_owned(),
            r#"{"1": [2, {"3": null}]}"#.to_owned(),
        ]),
    ]
}

/// A block body: mostly one of the slices' shapes with hostile fields, sometimes not JSON.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let json = prop_oneof![
        number().prop_map(|n| format!(r#"{{"value": {n}}}"#)),
        number().prop_map(|n| format!(r#"{{"tick": {n}}}"#)),
        (text(), text(), number())
            .prop_map(|(r, t, n)| format!(r#"{{"room": {r}, "text": {t}, "ttl_ms": {n}}}"#)),
        (text(), value()).prop_map(|(k, v)| format!(r#"{{"set": {{"key": {k}, "value": {v}}}}}"#)),
        text().prop_map(|k| format!(r#"{{"delete": {k}}}"#)),
        (number(), number()).prop_map(|(v, t)| format!(r#"{{"value": {v}, "tick": {t}}}"#)),
        value(),
    ];
    prop_oneof![
        9 => json.prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// The counter as the kernel must judge it: each author against their own previous value.
#[derive(Default)]
struct CounterModel {
    latest: BTreeMap<String, u64>,
}

impl CounterModel {
    /// Whether the counter accepts `value` from `author` (and records it if so).
    fn offer(&mut self, author: &str, value: u64) -> bool {
        let accept = match self.latest.get(author) {
            None => true,
            Some(&previous) => value > previous || value == u64::MAX,
        };
        if accept {
            self.latest.insert(author.to_owned(), value);
        }
        accept
    }

    fn state(&self) -> Counters {
        Counters {
            total: self.latest.values().map(|&v| u128::from(v)).sum(),
            by_author: self.latest.clone(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// For all mixes of hostile bodies from several authors: no reducer panics, every state
    /// renders losslessly (also after garbage collection), and the counter judges every
    /// author against their own values only.
    #[test]
    fn any_mix_of_extreme_bodies_renders_and_never_refuses_another_authors_block(
        writes in prop::collection::vec((0..=PEERS, body()), 1..24)
    ) {
        let mut kernels = kernels();
        let identities: Vec<Identity> =
            (1..=PEERS).map(|n| Identity::from_secret([n; 32])).collect();
        let mut feeds: Vec<Feed> = (1..=PEERS).map(|_| Feed::new()).collect();
        let mut model = CounterModel::default();
        for (i, (author, body)) in writes.into_iter().enumerate() {
            let bump = serde_json::from_slice::<Bump>(&body).ok();
            let fits = body.len() <= 64 * 1024;
            // What the counter kernel made of the block: accepted or not.
            let (author, accepted) = if author == 0 {
                // Own blocks: every kernel signs its own copy.
                let mut results: Vec<Result<(), Error>> = kernels
                    .iter_mut()
                    .map(|kernel| kernel.create_block(body.clone()).map(|_| ()))
                    .collect();
                let counter = results.swap_remove(1).map_err(|e| e.to_string());
                (kernels[1].author().to_hex(), counter)
            } else {
                let index = usize::from(author - 1);
                let time = T0 + i as u64 * 1_000;
                let block = if fits {
                    feeds[index].append(&identities[index], body, time).clone()
                } else {
                    // Refused as too large, so kept out of the feed: its successor would wait
                    // for it forever.
                    let parent = feeds[index].last().map(|b| (b.id(), b.seq(), b.time()));
                    Block::sign(&identities[index], parent, time, body)
                };
                let mut outcomes: Vec<Outcome> = kernels
                    .iter_mut()
                    .map(|kernel| {
                        let report = kernel.dispatch([block.clone()]).expect("memory store");
                        report.outcome(&block.id()).cloned().expect("reported")
                    })
                    .collect();
                let outcome = outcomes.swap_remove(1);
                match (&bump, fits) {
                    (_, false) => {
                        prop_assert!(matches!(outcome, Outcome::Invalid(_)), "{:?}", outcome)
                    }
                    (None, true) => prop_assert_eq!(&outcome, &Outcome::Ignored),
                    (Some(_), true) => {}
                }
                let accepted = match outcome {
                    Outcome::Accepted => Ok(()),
                    other => Err(format!("{other:?}")),
                };
                (block.author().to_hex(), accepted)
            };
            if let (Some(Bump { value }), true) = (bump, fits) {
                let expected = model.offer(&author, value);
                prop_assert_eq!(
                    accepted.is_ok(), expected, "value {} from {}: {:?}", value, author, accepted
                );
            }
        }
        prop_assert_eq!(kernels[1].state::<Counter>(), Some(&model.state()));
        render_all(&kernels).map_err(TestCaseError::fail)?;
        for kernel in &mut kernels {
            kernel.gc(NOW + MAX_TTL_MS + 1).expect("memory store");
        }
        render_all(&kernels).map_err(TestCaseError::fail)?;
    }
}

mod compact_bodies {
    use blockend_reducers::counter::{bump, Bump};
    use proptest::prelude::*;

    fn by_serde(body: &[u8]) -> Option<u64> {
        serde_json::from_slice::<Bump>(body).ok().map(|b| b.value)
    }

    #[test]
    fn the_fast_reading_of_a_body_agrees_with_serde_json_at_the_edges() {
        for body in [
            r#"{"value":0}"#,
            r#"{"value":7}"#,
            r#"{"value":07}"#,
            r#"{"value":00}"#,
            r#"{"value":18446744073709551615}"#,
            r#"{"value":18446744073709551616}"#,
            r#"{"value":99999999999999999999999}"#,
            r#"{"value":}"#,
            r#"{"value":-1}"#,
            r#"{"value":1.5}"#,
            r#"{"value":1e3}"#,
            r#"{"value": 5}"#,
            r#"{"value":5,"x":1}"#,
            r#"{"value":5}}"#,
            r#"{"value":"5"}"#,
            "",
        ] {
            assert_eq!(bump(body.as_bytes()), by_serde(body.as_bytes()), "{body}");
        }
    }

    proptest! {
        #[test]
        fn any_compact_looking_body_reads_as_serde_json_reads_it(
            digits in "[0-9]{0,22}",
            value in any::<u64>(),
        ) {
            let odd = format!(r#"{{"value":{digits}}}"#);
            prop_assert_eq!(bump(odd.as_bytes()), by_serde(odd.as_bytes()));
            let plain = format!(r#"{{"value":{value}}}"#);
            prop_assert_eq!(bump(plain.as_bytes()), Some(value));
        }
    }
}
