//! Every byte a peer sends is counted once, by what it pays for: blocks, heads, wants or
//! control; and what the blocks each peer ends up holding weigh.

use blockend_kernel::{Block, Identity};
use blockend_sim::workload::{CounterWorkload, Workload};
use blockend_sim::{Scenario, Simulation, EPOCH_MS};

const SCENARIO: &str = r#"
    name = "bytes"
    peers = 30
    [topology]
    kind = "random-regular"
    degree = 6
    [workload]
    kind = "counter"
    senders = "all"
    blocks_per_sender = 1
"#;

#[test]
fn bytes_per_peer_splits_every_byte_by_what_it_pays_for() {
    let scenario = Scenario::from_toml(SCENARIO).expect("valid scenario");
    let report = Simulation::new(scenario)
        .expect("builds")
        .run()
        .expect("runs");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.converged_peers, 30);
    assert_eq!(report.blocks, 30);

    let bytes = report.bytes_per_peer;
    let parts = [bytes.blocks, bytes.heads, bytes.wants, bytes.control];
    let sum: f64 = parts.iter().map(|p| p.mean).sum();
    assert!(
        (bytes.total.mean - sum).abs() < 1e-6,
        "total {} but the parts sum to {sum}",
        bytes.total.mean
    );
    for part in parts {
        assert!(part.max <= bytes.total.max);
    }
    assert!(bytes.total.max <= parts.iter().map(|p| p.max).sum());
    assert!(bytes.blocks.mean > 0.0, "blocks travel");
    assert!(bytes.heads.mean > 0.0, "anti-entropy sends heads");
    assert!(bytes.control.mean > 0.0, "every message is framed");

    // Every peer converged, so each holds every honest block: one counter genesis block per
    // sender, all the same size (a time this far past the epoch encodes in as many bytes).
    let body = CounterWorkload.body(0, 0);
    let size = Block::sign(
        &Identity::from_secret([1; 32]),
        None,
        EPOCH_MS + 1_000,
        body,
    )
    .encoded_len() as f64;
    assert_eq!(report.block_bytes_per_peer.mean, 30.0 * size);
    assert_eq!(report.block_bytes_per_peer.max as f64, 30.0 * size);

    assert!(report.byte_redundancy.is_finite());
    assert!(report.byte_redundancy >= -1.0, "{}", report.byte_redundancy);

    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("JSON");
    for part in ["total", "blocks", "heads", "wants", "control"] {
        assert!(json["bytes_per_peer"][part]["mean"].is_f64(), "{part}");
        assert!(json["bytes_per_peer"][part]["max"].is_u64(), "{part}");
    }
    assert!(json["block_bytes_per_peer"]["mean"].is_f64());
    assert!(json["byte_redundancy"].is_f64());
}
