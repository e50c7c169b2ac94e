//! Forking and forging peers do not stop honest convergence, and are counted as rejected.

use blockend_sim::{Scenario, Simulation};

fn run(adversary: &str) -> blockend_sim::Report {
    let scenario = Scenario::from_toml(&format!(
        r#"
        name = "adversary"
        peers = 24
        [workload]
        senders = 8
        blocks_per_sender = 3
        [[adversaries]]
        kind = "{adversary}"
        count = 2
    "#
    ))
    .expect("valid scenario");
    Simulation::new(scenario)
        .expect("builds")
        .run()
        .expect("runs")
}

#[test]
fn a_forking_peer_does_not_stop_honest_convergence() {
    let report = run("forker");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.converged_peers, 22);
    assert!(report.rejections.forks > 0, "no honest peer found the fork");
}

#[test]
fn a_forging_peer_does_not_stop_honest_convergence() {
    let report = run("forger");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.converged_peers, 22);
    assert!(
        report.rejections.invalid_signature > 0,
        "no forgery was refused"
    );
}

#[test]
fn flooding_oversized_and_malformed_peers_are_refused() {
    for (kind, refused) in [
        ("flooder", "duplicates"),
        ("oversized", "too_large"),
        ("malformed", "malformed_messages"),
    ] {
        let report = run(kind);
        assert!(
            report.violations.is_empty(),
            "{kind}: {:?}",
            report.violations
        );
        assert_eq!(report.converged_peers, 22, "{kind}");
        let r = &report.rejections;
        let count = match refused {
            "duplicates" => r.duplicates,
            "too_large" => r.too_large + r.malformed_messages,
            _ => r.malformed_messages,
        };
        assert!(count > 0, "{kind}: nothing counted as {refused}");
        if kind == "malformed" {
            assert!(r.disconnects > 0, "no honest peer dropped the junk sender");
        }
    }
}
