//! The node's gossip validation path, without libp2p: each gossip payload is decoded as a block
//! (bytes that do not decode are `Event::Malformed`) and handed to the sync machine as
//! `Event::Pushed`, as `src/node/kernel_actor.rs` does. Never a panic; a payload is rejected
//! (gossipsub `Reject`, never relayed) exactly when the kernel finds it invalid, and then its
//! sender is charged; a valid copy, full or header-only, is never charged to its sender.
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use blockend_fuzz::{check_fold, check_outputs, copy, kernel, T0};
use blockend_kernel::sync::{Config, Event, Protocol};
use blockend_kernel::{Block, ManualClock, Outcome};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Payload {
    /// Arbitrary bytes.
    Raw(Vec<u8>),
    /// A copy of a pool block (see `blockend_fuzz::copy`).
    Pool { pick: u8, kind: u8 },
}

#[derive(Arbitrary, Debug)]
struct Gossip {
    from: u8,
    payload: Payload,
    advance_ms: u16,
}

fuzz_target!(|input: Vec<Gossip>| {
    let clock = ManualClock::new(T0);
    let mut kernel = kernel(&clock, 0);
    let config = Config::default();
    let mut machine: Protocol<u8> = Protocol::new(config);
    for peer in 0..4u8 {
        let step = machine
            .event(&mut kernel, Event::Connected(peer))
            .expect("memory store");
        check_outputs(&step.outputs, &config.limits);
    }
    for gossip in input.into_iter().take(64) {
        clock.advance(u64::from(gossip.advance_ms));
        let from = gossip.from % 4;
        let source = machine.source(&from);
        let connected = source.is_some();
        // What the payload must be judged: a pool copy with its signature changed is invalid
        // whether or not its id is already held (never screened as a duplicate); any other
        // pool copy, full or header-only, is valid.
        let mut expect_invalid = None;
        let bytes = match gossip.payload {
            Payload::Raw(bytes) => bytes,
            Payload::Pool { pick, kind } => {
                let block = copy(pick, kind);
                let pool = blockend_fuzz::pool();
                let original = &pool[usize::from(pick) % pool.len()];
                expect_invalid = Some(block.signature() != original.signature());
                block.encode()
            }
        };
        let event = match Block::decode(&bytes) {
            Ok(block) => Event::Pushed {
                from,
                blocks: vec![Arc::new(block)],
            },
            Err(error) => Event::Malformed { from, error },
        };
        let pushed = match &event {
            Event::Pushed { blocks, .. } => Some(blocks[0].id()),
            _ => None,
        };
        let step = machine.event(&mut kernel, event).expect("memory store");
        check_outputs(&step.outputs, &config.limits);
        let charged: u32 = step
            .penalties
            .iter()
            .filter(|(p, _)| *p == from)
            .map(|(_, n)| *n)
            .sum();
        match pushed {
            None => assert!(!connected || charged == 1, "malformed bytes not charged"),
            Some(id) => {
                let invalid = step
                    .report
                    .as_ref()
                    .and_then(|r| r.outcome(&id))
                    .is_some_and(Outcome::is_invalid);
                if let Some(expected) = expect_invalid {
                    let outcome = step.report.as_ref().and_then(|r| r.outcome(&id).cloned());
                    // A block of a frozen or tombstoned feed is refused before any signature
                    // check (and never relayed: gossipsub is told Ignore), forged or not.
                    let refused_cheaply = matches!(
                        outcome,
                        Some(Outcome::Frozen { .. } | Outcome::Tombstoned { .. })
                    );
                    if !refused_cheaply {
                        assert_eq!(invalid, expected, "a pool copy was misjudged: {outcome:?}");
                    }
                }
                if invalid && connected {
                    assert!(
                        charged >= 1,
                        "an invalid block was not charged to its sender"
                    );
                }
                if !invalid {
                    // Only blocks this sender parked earlier and that turned out invalid now
                    // may be charged to it.
                    let blamed_earlier = step.report.as_ref().map_or(0, |r| {
                        r.blame
                            .iter()
                            .filter(|(s, b)| Some(*s) == source && *b != id)
                            .count()
                    });
                    assert!(
                        charged as usize <= blamed_earlier,
                        "a valid block was charged"
                    );
                }
            }
        }
        if machine.source(&from).is_none() && connected {
            // Dropped for its invalid data: it may reconnect.
            let _ = machine.event(&mut kernel, Event::Connected(from));
        }
    }
    check_fold(&kernel, &clock);
});
