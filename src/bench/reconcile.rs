//! `blockend bench reconcile`: two in-memory peers holding N feeds, D of whose heads differ
//! (half ahead on each side), reconciled by one round of the sync machine
//! ([`Lockstep`](blockend::kernel::sync::lockstep::Lockstep), every message encoded and
//! decoded); beside it, in the same run, the bytes the same exchange costs by full heads
//! (version 1 of the protocol, every head from each side).
//!
//! One JSON line: `{"cases": [{"n", "d", "bytes", "round_trips", "ms", "full_heads_bytes",
//! "messages", "block_bytes"}, ...]}`. `bytes` is what it cost to find the difference (reconcile
//! messages and the wants they lead to); `block_bytes` the blocks that then crossed (the
//! difference itself); `ms` the wall time of the whole round, blocks dispatched included.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context as _};
use blockend::kernel::kernel::VerdictCache;
use blockend::kernel::sync::lockstep::Lockstep;
use blockend::kernel::sync::{Config, Limits, Message};
use blockend::kernel::{Block, Feed, Identity, Kernel};
use blockend::ReadyApp;
use serde::Serialize;

use crate::cli::emit;

#[derive(Serialize)]
struct Case {
    n: usize,
    d: usize,
    bytes: u64,
    round_trips: u32,
    ms: f64,
    full_heads_bytes: u64,
    messages: u64,
    block_bytes: u64,
}

#[derive(Serialize)]
struct Output {
    cases: Vec<Case>,
}

/// Feed `i`: a genesis counter block, and the block after it.
fn feed(i: usize) -> [Arc<Block>; 2] {
    let mut secret = [0x5a; 32];
    secret[..8].copy_from_slice(&(i as u64).to_le_bytes());
    let identity = Identity::from_secret(secret);
    let mut feed = Feed::new();
    let time = 1_700_000_000_000 + i as u64;
    feed.append(&identity, br#"{"value":1}"#.to_vec(), time);
    feed.append(&identity, br#"{"value":2}"#.to_vec(), time + 1);
    let [a, b]: [Block; 2] = feed
        .into_blocks()
        .try_into()
        .unwrap_or_else(|_| unreachable!("two blocks appended"));
    [Arc::new(a), Arc::new(b)]
}

fn full_heads_bytes(kernel: &Kernel) -> u64 {
    Message::heads_pages(kernel.heads(), &Limits::default())
        .iter()
        .map(|m| m.encoded_len() as u64)
        .sum()
}

pub fn reconcile(n: usize, diffs: &[usize]) -> anyhow::Result<()> {
    if n == 0 {
        bail!("--feeds must be at least 1");
    }
    if let Some(d) = diffs.iter().find(|&&d| d > n) {
        bail!("--diffs {d} is more than --feeds {n}");
    }
    eprintln!("bench: signing {n} feeds of two blocks");
    let feeds: Vec<[Arc<Block>; 2]> = (0..n)
        .map(|i| {
            if (i + 1) % (n / 10).max(1) == 0 {
                eprintln!("bench: signed {}/{n}", i + 1);
            }
            feed(i)
        })
        .collect();
    let verdicts = VerdictCache::new(4 * n + 16);
    let mut cases = Vec::new();
    for &d in diffs {
        eprintln!("bench: n = {n}, d = {d}: filling two kernels");
        let open = || {
            Kernel::builder(&ReadyApp::Counter)
                .with_verdict_cache(verdicts.clone())
                .open()
        };
        let (mut a, mut b) = (open()?, open()?);
        for kernel in [&mut a, &mut b] {
            kernel.dispatch_shared(feeds.iter().map(|f| f[0].clone()))?;
        }
        // The first d feeds differ: even ones are a block longer on side 0, odd ones on side 1.
        a.dispatch_shared((0..d).step_by(2).map(|i| feeds[i][1].clone()))?;
        b.dispatch_shared((1..d).step_by(2).map(|i| feeds[i][1].clone()))?;
        let full = full_heads_bytes(&a) + full_heads_bytes(&b);
        let mut pair = Lockstep::connected([a, b], Config::default())?;
        eprintln!("bench: n = {n}, d = {d}: one round");
        let start = Instant::now();
        let traffic = pair.tick(0)?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        ensure!(
            pair.kernels[0].heads() == pair.kernels[1].heads(),
            "after one round the two sides still differ (n = {n}, d = {d}): {traffic:?}"
        );
        let expected = n + d;
        let held = pair.kernels[0].stats().blocks;
        ensure!(
            held == expected,
            "side 0 holds {held} blocks, expected {expected}"
        );
        cases.push(Case {
            n,
            d,
            bytes: traffic.overhead_bytes(),
            round_trips: traffic.round_trips(),
            ms,
            full_heads_bytes: full,
            messages: traffic.messages,
            block_bytes: traffic.block_bytes,
        });
    }
    emit(&Output { cases }).context("writing the result")
}
