//! Convergence under 10% message loss: anti-entropy repairs what push loses.

use blockend_sim::{Scenario, Simulation};

#[test]
fn converges_under_ten_percent_loss() {
    let scenario = Scenario::from_toml(
        r#"
        name = "lossy"
        peers = 30
        [network]
        loss = 0.10
        [workload]
        senders = 10
        blocks_per_sender = 3
    "#,
    )
    .expect("valid scenario");
    let report = Simulation::new(scenario)
        .expect("builds")
        .run()
        .expect("runs");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert!(report.lost_messages > 0, "the loss model dropped nothing");
    assert!(report.quiescent);
    assert_eq!(report.blocks, 30);
    assert_eq!(report.converged_peers, 30);
}
