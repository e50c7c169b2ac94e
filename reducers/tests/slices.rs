//! The ready-made slices: accept / ignore / reject cases, order independence with several
//! authors, chat expiry, kv delete against a late concurrent set.

use blockend_kernel::{
    Application, Block, Error, Feed, Identity, Kernel, ManualClock, Outcome, Registry, Slice,
};
use blockend_reducers::{Chat, Clock, Counter, Kv};
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000;

struct One<S>(fn() -> S);
impl<S: Slice> Application for One<S> {
    fn register(&self, slices: &mut Registry) {
        slices.add((self.0)());
    }
}

fn kernel<S: Slice>(make: fn() -> S, clock: &ManualClock) -> Kernel {
    Kernel::builder(&One(make))
        .with_clock(clock.clone())
        .open()
        .expect("memory store")
}

/// A feed of JSON bodies by identity `n`, one block a second from `start`.
fn feed(n: u8, bodies: &[String], start: u64) -> Vec<Block> {
    let identity = Identity::from_secret([n; 32]);
    let mut feed = Feed::new();
    for (i, body) in bodies.iter().enumerate() {
        feed.append(
            &identity,
            body.clone().into_bytes(),
            start + i as u64 * 1000,
        );
    }
    feed.into_blocks()
}

fn outcome(kernel: &mut Kernel, block: &Block) -> Outcome {
    let report = kernel.dispatch([block.clone()]).expect("store");
    report.outcome(&block.id()).cloned().expect("reported")
}

#[test]
fn clock_accepts_ticks_ignores_others_and_rejects_ticks_from_the_future() {
    let clock = ManualClock::new(T0 + 100_000);
    let mut k = kernel(|| Clock, &clock);
    let blocks = feed(
        1,
        &[
            format!(r#"{{"tick": {}}}"#, T0),
            r#"{"hello": 1}"#.into(),
            format!(r#"{{"tick": {}}}"#, T0 + 50_000),
        ],
        T0,
    );
    assert_eq!(outcome(&mut k, &blocks[0]), Outcome::Accepted);
    assert_eq!(outcome(&mut k, &blocks[1]), Outcome::Ignored);
    let other = feed(2, &[format!(r#"{{"tick": {}}}"#, T0 + 50_000)], T0);
    assert!(matches!(
        outcome(&mut k, &other[0]),
        Outcome::Rejected { reason, .. }
            if reason == format!(
                "tick {} is later than the block's own time {T0} (a tick may not be from the future)",
                T0 + 50_000
            )
    ));
    assert_eq!(k.state::<Clock>(), Some(&T0));
}

#[test]
fn counter_requires_growth_and_totals_latest_values() {
    let clock = ManualClock::new(T0 + 100_000);
    let mut k = kernel(|| Counter, &clock);
    k.create_block(br#"{"value": 2}"#.to_vec())
        .expect("accepted");
    assert!(matches!(
        k.create_block(br#"{"value": 2}"#.to_vec()),
        Err(Error::Rejected { .. })
    ));
    assert!(matches!(
        k.create_block(br#"{"text": "hi"}"#.to_vec()),
        Err(Error::Ignored { .. })
    ));
    // Four authors writing 1..10 give a total of 40 (plus this kernel's own 2, then 10).
    for n in 1..=4u8 {
        let bodies: Vec<String> = (1..=10).map(|v| format!(r#"{{"value": {v}}}"#)).collect();
        k.dispatch(feed(n, &bodies, T0)).expect("store");
    }
    let state = k.state::<Counter>().expect("registered");
    assert_eq!(state.total, 42);
    assert_eq!(state.by_author.len(), 5);
    let json = serde_json::to_value(state).expect("json");
    assert_eq!(json["total"], 42);
    assert!(json["by_author"].is_object());
}

#[test]
fn chat_keeps_messages_in_order_and_collects_them_when_they_expire() {
    let clock = ManualClock::new(T0 + 100_000);
    let mut k = kernel(|| Chat, &clock);
    let post = |room: &str, text: &str, ttl: u64| {
        format!(r#"{{"room": "{room}", "text": "{text}", "ttl_ms": {ttl}}}"#)
    };
    let alice = feed(
        1,
        &[post("lobby", "hi", 60_000), post("lobby", "bye", 5_000)],
        T0,
    );
    let bob = feed(
        2,
        &[post("lobby", "yo", 60_000), post("", "no room", 1)],
        T0 + 500,
    );
    assert_eq!(outcome(&mut k, &bob[0]), Outcome::Accepted);
    k.dispatch(alice.clone()).expect("store");
    assert!(matches!(outcome(&mut k, &bob[1]), Outcome::Rejected { .. }));
    let texts = |k: &Kernel| -> Vec<String> {
        k.state::<Chat>().expect("registered").rooms["lobby"]
            .iter()
            .map(|m| m.text.clone())
            .collect()
    };
    assert_eq!(texts(&k), ["hi", "yo", "bye"]);
    // "bye" was posted at T0 + 1 s with a 5 s ttl; Bob's rejected post (1 ms ttl) goes too:
    // expiry is a function of the block, whatever its verdict.
    assert_eq!(k.gc(T0 + 6_001).expect("store").collected, 2);
    assert_eq!(texts(&k), ["hi", "yo"]);
    assert_eq!(
        k.block(&alice[1].id())
            .and_then(|b| b.body().map(<[u8]>::len)),
        None
    );
}

#[test]
fn kv_delete_is_not_undone_by_a_late_concurrent_set() {
    let clock = ManualClock::new(T0 + 100_000);
    let set = |v: u32| format!(r#"{{"set": {{"key": "color", "value": {v}}}}}"#);
    let alice = feed(1, &[set(1), r#"{"delete": "color"}"#.into()], T0);
    // Bob's set was written before Alice's delete but arrives after it.
    let bob = feed(2, &[set(2)], T0 + 500);
    let mut k = kernel(|| Kv, &clock);
    k.dispatch(alice.clone()).expect("store");
    assert_eq!(k.state::<Kv>().expect("registered").get("color"), None);
    k.dispatch(bob.clone()).expect("store");
    assert_eq!(k.state::<Kv>().expect("registered").get("color"), None);
    // The other order gives the same map.
    let mut other = kernel(|| Kv, &clock);
    other.dispatch(bob).expect("store");
    other.dispatch(alice).expect("store");
    assert_eq!(other.digests(), k.digests());
    // A later set wins over the delete; a bad key is rejected; other bodies are ignored.
    let later = feed(3, &[set(3), r#"{"delete": ""}"#.into()], T0 + 10_000);
    k.dispatch(later.clone()).expect("store");
    assert_eq!(k.state::<Kv>().expect("registered").get("color"), Some("3"));
    let rejected = k.dispatch([later[1].clone()]).expect("store");
    assert!(rejected
        .outcomes()
        .iter()
        .all(|(_, o)| *o == Outcome::Duplicate));
    assert!(!k.counts(&later[1].id()));
    assert_eq!(
        outcome(&mut k, &feed(4, &["[1]".into()], T0)[0]),
        Outcome::Ignored
    );
}

/// Three authors' feeds for `slice`, delivered in `order` one block at a time.
/// The reason a slice gives for refusing `body` on a fresh kernel.
fn rejection<S: Slice>(make: fn() -> S, body: &str) -> String {
    let clock = ManualClock::new(T0);
    match kernel(make, &clock).create_block(body.as_bytes().to_vec()) {
        Err(Error::Rejected { reason, .. }) => reason,
        other => panic!("{body} was not rejected: {other:?}"),
    }
}

#[test]
fn rejection_reasons_say_what_was_wrong_and_what_is_allowed() {
    let clock = ManualClock::new(T0);
    let mut counter = kernel(|| Counter, &clock);
    counter
        .create_block(br#"{"value": 5}"#.to_vec())
        .expect("accepted");
    let Err(Error::Rejected { reason, .. }) = counter.create_block(br#"{"value": 3}"#.to_vec())
    else {
        panic!("a shrinking counter was not rejected");
    };
    assert_eq!(
        reason,
        "value 3 does not exceed the author's last value 5 (each value must be above the last)"
    );
    assert_eq!(
        rejection(|| Clock, &format!(r#"{{"tick": {}}}"#, T0 + 1)),
        format!(
            "tick {} is later than the block's own time {T0} (a tick may not be from the future)",
            T0 + 1
        )
    );
    let long_room = "r".repeat(blockend_reducers::chat::MAX_ROOM_BYTES + 1);
    assert_eq!(
        rejection(
            || Chat,
            &format!(r#"{{"room": "{long_room}", "text": "hi", "ttl_ms": 1}}"#)
        ),
        "the room name is 65 bytes long; a room name is 1 to 64 bytes"
    );
    assert_eq!(
        rejection(|| Chat, r#"{"room": "", "text": "hi", "ttl_ms": 1}"#),
        "the room name is empty; a room name is 1 to 64 bytes"
    );
    assert_eq!(
        rejection(|| Chat, r#"{"room": "lobby", "text": "hi", "ttl_ms": 0}"#),
        "ttl_ms 0 is out of range; a message lives 1 to 2592000000 ms (30 days)"
    );
    let long_key = "k".repeat(blockend_reducers::kv::MAX_KEY_BYTES + 1);
    assert_eq!(
        rejection(
            || Kv,
            &format!(r#"{{"set": {{"key": "{long_key}", "value": 1}}}}"#)
        ),
        "the key is 257 bytes long; a key is 1 to 256 bytes"
    );
    assert_eq!(
        rejection(|| Kv, r#"{"delete": ""}"#),
        "the key is empty; a key is 1 to 256 bytes"
    );
}

fn digests_in_order<S: Slice>(
    make: fn() -> S,
    blocks: &[Block],
    order: &[usize],
) -> Vec<(String, blockend_kernel::Digest)> {
    let clock = ManualClock::new(T0 + 1_000_000);
    let mut k = kernel(make, &clock);
    for &i in order {
        k.dispatch([blocks[i].clone()]).expect("store");
    }
    assert_eq!(k.stats().blocks, blocks.len());
    k.digests()
}

fn workload(bodies: impl Fn(u8, usize) -> String) -> Vec<Block> {
    (1..=3u8)
        .flat_map(|n| {
            let list: Vec<String> = (0..4).map(|i| bodies(n, i)).collect();
            feed(n, &list, T0 + u64::from(n) * 300)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_slice_gives_the_same_digest_in_any_delivery_order(
        order in Just((0..12).collect::<Vec<usize>>()).prop_shuffle()
    ) {
        let sorted: Vec<usize> = (0..12).collect();
        let clocks = workload(|n, i| format!(r#"{{"tick": {}}}"#, T0 + u64::from(n) * 300 + i as u64 * 1000));
        prop_assert_eq!(digests_in_order(|| Clock, &clocks, &order), digests_in_order(|| Clock, &clocks, &sorted));
        let counters = workload(|n, i| format!(r#"{{"value": {}}}"#, (i + 1) * usize::from(n)));
        prop_assert_eq!(digests_in_order(|| Counter, &counters, &order), digests_in_order(|| Counter, &counters, &sorted));
        let chats = workload(|n, i| format!(r#"{{"room": "r{}", "text": "m{n}{i}", "ttl_ms": 60000}}"#, i % 2));
        prop_assert_eq!(digests_in_order(|| Chat, &chats, &order), digests_in_order(|| Chat, &chats, &sorted));
        let kvs = workload(|n, i| if (i + usize::from(n)) % 3 == 0 {
            r#"{"delete": "k"}"#.to_string()
        } else {
            format!(r#"{{"set": {{"key": "k", "value": {}}}}}"#, i * 10 + usize::from(n))
        });
        prop_assert_eq!(digests_in_order(|| Kv, &kvs, &order), digests_in_order(|| Kv, &kvs, &sorted));
    }
}
