//! A partition that heals: both halves write apart, then merge.

use blockend_sim::{Scenario, Simulation};

#[test]
fn partition_then_heal_converges() {
    let scenario = Scenario::from_toml(
        r#"
        name = "partition"
        peers = 24
        [topology]
        kind = "ring"
        [workload]
        senders = "all"
        blocks_per_sender = 2
        start_ms = 1000
        [[partitions]]
        at_ms = 500
        heal_ms = 8000
    "#,
    )
    .expect("valid scenario");
    let report = Simulation::new(scenario)
        .expect("builds")
        .run()
        .expect("runs");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert!(report.partitioned_messages > 0, "the partition cut nothing");
    assert_eq!(report.converged_peers, 24);
    // Nobody can hold the other half's blocks before the heal (7 s after the first block).
    assert!(
        report.convergence_ms.p50 >= 6_000,
        "converged before the heal: {:?}",
        report.convergence_ms
    );
}
