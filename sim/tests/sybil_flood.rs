//! `sim/scenarios/sybil-flood.toml`, scaled down: a swarm whose honest feeds fill nearly all of
//! every kernel's capacity meets 1,000 fresh Sybil feeds, half of them backdated to 1970.
//! With the default ranking (arrival order) every honest peer keeps every honest feed whole
//! and the flood gets no more than the spare room; with the claimed-genesis ranking the same
//! flood evicts honest feeds, so the check can fail.

use std::path::PathBuf;

use blockend_sim::config::Retention;
use blockend_sim::{Scenario, Simulation};

/// Every block costs at least this much of the capacity (the kernel's fixed per-block
/// overhead, `BLOCK_OVERHEAD`).
const MIN_BLOCK_COST: u64 = 160;

/// The scenario file with 20 peers, 2 Sybil peers of 500 feeds each, and `joiners` fresh
/// peers.
fn scaled(retention: Retention, joiners: usize) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/sybil-flood.toml");
    let mut scenario = Scenario::load(&path).expect("valid scenario file");
    scenario.peers = 20;
    scenario.retention = retention;
    let sybil = scenario
        .sybil
        .as_mut()
        .expect("the scenario has Sybil peers");
    sybil.count = 2;
    sybil.feeds_each = 500;
    sybil.joiners = joiners;
    scenario
}

fn run(scenario: &Scenario) -> blockend_sim::Report {
    Simulation::new(scenario.clone())
        .expect("builds")
        .run()
        .expect("runs")
}

#[test]
fn honest_feeds_survive_a_sybil_flood_of_fresh_and_backdated_feeds() {
    let scenario = scaled(Retention::Observed, 0);
    let report = run(&scenario);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert!(report.quiescent);
    assert_eq!(report.honest_feeds, 10);
    assert_eq!(report.sybil_feeds, 1_000);
    assert_eq!(report.honest_feeds_kept_min, report.honest_feeds);
    assert_eq!(report.honest_blocks_evicted, 0);
    // The flood reached honest peers and was refused, not admitted and evicted.
    assert!(report.sybil_blocks_refused > 0, "{report:?}");
    // The flood gets at most the spare room: capacity less every honest feed but a writer's
    // own (a writer does not count its own feed, so it has the most room).
    let capacity = scenario.capacity_bytes.expect("a capacity");
    let per_feed = report.honest_feed_bytes / report.honest_feeds as u64;
    let room = capacity - (report.honest_feed_bytes - per_feed);
    assert!(
        room < capacity / 5,
        "the scenario leaves too much room: {room}"
    );
    assert!(
        report.sybil_bytes_stored_max <= room,
        "{} bytes of Sybil feeds held, room {room}",
        report.sybil_bytes_stored_max
    );
    assert!(report.sybil_blocks_stored_max * MIN_BLOCK_COST <= room);
}

#[test]
fn ranked_by_claimed_genesis_the_same_flood_evicts_honest_feeds() {
    let report = run(&scaled(Retention::OldestLongest, 0));
    assert!(
        report.honest_feeds_kept_min < report.honest_feeds,
        "{report:?}"
    );
    assert!(report.honest_blocks_evicted > 0);
    assert!(
        report.violations.iter().any(|v| v.contains("Sybil flood")),
        "{:?}",
        report.violations
    );
}

/// A fresh peer that joins after the flood ranks feeds in the order it receives them, so it
/// may keep fewer honest feeds whole; its figures are reported apart and do not decide the
/// run. It does not ask again for the tail of a feed it has no room to grow, so the swarm
/// goes quiet.
#[test]
fn a_peer_joining_after_the_flood_is_reported_apart() {
    let mut scenario = scaled(Retention::Observed, 1);
    scenario.max_time_ms = 45_000;
    let report = run(&scenario);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.joiners, 1);
    assert_eq!(report.honest_feeds_kept_min, report.honest_feeds);
    let kept = report
        .joiner_honest_feeds_kept_min
        .expect("a joiner's figure");
    assert!(kept <= report.honest_feeds);
    assert!(
        report.quiescent,
        "sync kept asking for what the joiner refuses: {report:?}"
    );
}

/// The flood is signed from the run's one generator: the same seed gives the same report.
#[test]
fn the_same_seed_floods_the_same_way() {
    let scenario = scaled(Retention::Observed, 0);
    let (a, b) = (run(&scenario), run(&scenario));
    assert!(a.sybil_blocks_refused > 0);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.deterministic(), b.deterministic());
}
