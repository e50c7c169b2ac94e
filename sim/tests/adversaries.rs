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

/// DESIGN.md rule 5 against the convergence claim: blocks a slice rejects stay in every honest
/// peer's candidate set and are never pushed, yet honest peers fetch them from each other when
/// they ask for the feed, so with no capacity pressure they still end with one `set_hash` (the
/// run's invariant check fails otherwise).
#[test]
fn state_rejected_blocks_travel_by_sync_and_honest_peers_end_with_one_set_hash() {
    let report = run("rejected");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.converged_peers, 22);
    // Each adversary pushes to one neighbour only: every other honest peer that rejected a
    // block got it by sync.
    assert!(
        report.rejections.state_rejected >= 22,
        "rejected blocks did not spread: {:?}",
        report.rejections
    );
}
