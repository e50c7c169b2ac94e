//! A user's own slice, plugged in from Rust, runs through the same engine and checks.

use blockend_kernel::{Context, Registry, Slice, Verdict};
use blockend_sim::{Scenario, Simulation, Workload};

/// Keeps the longest message seen; rejects empty ones.
struct Longest;
impl Slice for Longest {
    type State = String;
    fn name(&self) -> &str {
        "longest"
    }
    fn initial(&self) -> String {
        String::new()
    }
    fn filter(&self, ctx: &Context<'_>, _: &String) -> Verdict {
        if ctx.body().is_empty() {
            Verdict::Reject("empty".into())
        } else {
            Verdict::Accept
        }
    }
    fn reduce(&self, ctx: &Context<'_>, state: &mut String) {
        let text = String::from_utf8_lossy(ctx.body()).into_owned();
        if (text.len(), &text) > (state.len(), &*state) {
            *state = text;
        }
    }
    fn commutative(&self) -> bool {
        true
    }
}

struct Messages;
impl Workload for Messages {
    fn register(&self, slices: &mut Registry) {
        slices.add(Longest);
    }
    fn body(&self, peer: usize, n: u64) -> Vec<u8> {
        "x".repeat(peer + n as usize + 1).into_bytes()
    }
}

#[test]
fn a_custom_slice_converges_with_equal_digests() {
    let scenario = Scenario::from_toml(
        r#"
        name = "custom"
        peers = 16
        [workload]
        senders = "all"
        blocks_per_sender = 2
    "#,
    )
    .expect("valid scenario");
    let report = Simulation::with_workload(scenario, Box::new(Messages))
        .expect("builds")
        .run()
        .expect("runs");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.blocks, 32);
    assert_eq!(report.converged_peers, 16);
}
