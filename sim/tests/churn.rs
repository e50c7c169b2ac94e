//! Peers leave and rejoin, with their store or without it, and catch up.

use blockend_sim::{Scenario, Simulation};

fn run(keep_store: bool) -> blockend_sim::Report {
    let scenario = Scenario::from_toml(&format!(
        r#"
        name = "churn"
        peers = 24
        [workload]
        senders = 6
        blocks_per_sender = 4
        interval_ms = 500
        [churn]
        fraction = 0.3
        leave_ms = 1800
        rejoin_ms = 5000
        keep_store = {keep_store}
    "#
    ))
    .expect("valid scenario");
    Simulation::new(scenario)
        .expect("builds")
        .run()
        .expect("runs")
}

#[test]
fn churned_peers_with_their_store_catch_up() {
    let report = run(true);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.honest_peers, 24);
    assert_eq!(report.converged_peers, 24);
}

#[test]
fn churned_peers_without_their_store_catch_up() {
    let report = run(false);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.converged_peers, 24);
    // They lost everything at 1.8 s and could only be whole again after rejoining at 5 s.
    assert!(
        report.convergence_ms.max >= 3_000,
        "{:?}",
        report.convergence_ms
    );
}
