//! Determinism audit: a run is a function of its scenario and seed.

use blockend_sim::{Scenario, Simulation};

const SCENARIO: &str = r#"
    name = "determinism"
    peers = 24
    [topology]
    kind = "small-world"
    degree = 4
    [network]
    latency = { kind = "log-normal", median_ms = 30, sigma = 0.6 }
    loss = 0.05
    duplicate = 0.05
    reorder = 0.2
    [workload]
    senders = "all"
    blocks_per_sender = 3
    [[adversaries]]
    kind = "forger"
    [[adversaries]]
    kind = "forker"
"#;

fn run(seed: u64) -> blockend_sim::Report {
    let mut scenario = Scenario::from_toml(SCENARIO).expect("valid scenario");
    scenario.seed = seed;
    Simulation::new(scenario)
        .expect("builds")
        .run()
        .expect("runs")
}

#[test]
fn same_seed_twice_gives_the_same_trace_and_report() {
    let a = run(7);
    let b = run(7);
    assert!(a.violations.is_empty(), "{:?}", a.violations);
    assert!(a.events > 1_000, "too small to audit: {} events", a.events);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.deterministic(), b.deterministic());
    // The JSON without the wall-clock fields (whose digit counts vary run to run).
    assert_eq!(a.deterministic().to_json(), b.deterministic().to_json());
}

#[test]
fn a_different_seed_gives_a_different_trace() {
    let a = run(7);
    let c = run(8);
    assert_ne!(a.trace_hash, c.trace_hash);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
}
