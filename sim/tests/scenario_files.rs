//! A small-scale run of every scenario file in `sim/scenarios/`.

use std::path::PathBuf;

use blockend_sim::cli::{self, Args};
use blockend_sim::{Scenario, Simulation};

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.toml"))
}

fn small(name: &str, peers: usize) -> blockend_sim::Report {
    let mut scenario = Scenario::load(&path(name)).expect("valid scenario file");
    scenario.peers = peers;
    if scenario.workload.blocks_per_sender > 10 {
        scenario.workload.blocks_per_sender = 10;
    }
    let report = Simulation::new(scenario)
        .expect("builds")
        .run()
        .expect("runs");
    assert!(
        report.violations.is_empty(),
        "{name}: {:?}",
        report.violations
    );
    assert!(report.quiescent, "{name} did not quiesce");
    assert_eq!(report.converged_peers, report.honest_peers, "{name}");
    report
}

#[test]
fn one_sender_small() {
    let report = small("one-sender", 40);
    assert_eq!(report.blocks, 1);
    assert!(report.last_delivery_hop >= 1);
}

#[test]
fn all_senders_small() {
    assert_eq!(small("all-senders", 30).blocks, 30);
}

#[test]
fn many_blocks_small() {
    assert_eq!(small("many-blocks", 12).blocks, 120);
}

#[test]
fn many_blocks_1k_is_many_blocks_with_1000_blocks_each() {
    let thousand = Scenario::load(&path("many-blocks-1k")).expect("valid scenario file");
    assert_eq!(thousand.name, "many-blocks-1k");
    assert_eq!(thousand.workload.blocks_per_sender, 1000);
    let mut same = Scenario::load(&path("many-blocks")).expect("valid scenario file");
    same.name = thousand.name.clone();
    same.workload.blocks_per_sender = 1000;
    assert_eq!(format!("{same:?}"), format!("{thousand:?}"));
    assert_eq!(small("many-blocks-1k", 12).blocks, 120);
}

#[test]
fn partition_heal_small() {
    let report = small("partition-heal", 30);
    assert!(report.partitioned_messages > 0);
}

#[test]
fn adversaries_small() {
    let report = small("adversaries", 40);
    assert!(report.rejections.invalid_signature > 0);
    assert!(report.rejections.forks > 0);
}

#[test]
fn the_cli_entry_writes_the_plot_and_reports() {
    let svg = std::env::temp_dir().join(format!("blockend-sim-test-{}.svg", std::process::id()));
    let args = Args {
        scenario: path("one-sender"),
        seed: Some(3),
        peers: Some(20),
        svg: Some(svg.clone()),
        html: None,
    };
    let report = cli::run(&args).expect("passes");
    assert_eq!((report.seed, report.peers), (3, 20));
    assert!(report.reproduce.ends_with("--seed 3 --peers 20"));
    let plot = std::fs::read_to_string(&svg).expect("plot written");
    assert!(plot.starts_with("<svg") && plot.contains("polyline"));
    let _ = std::fs::remove_file(svg);
}

#[test]
fn a_bad_scenario_is_one_clear_error() {
    let error = Scenario::from_toml("peers = 1").expect_err("too few peers");
    assert_eq!(
        error.to_string(),
        "invalid scenario: peers must be at least 2"
    );
    let error = cli::run(&Args {
        scenario: "no/such/file.toml".into(),
        ..Args::default()
    })
    .expect_err("missing file");
    assert!(error
        .to_string()
        .starts_with("cannot read scenario no/such/file.toml"));
}

#[test]
fn a_failing_run_names_the_command_that_reproduces_it() {
    // Stopped 20 ms after the only block is written: most peers cannot have it yet.
    let dir = std::env::temp_dir();
    let file = dir.join(format!("blockend-sim-failing-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        "name = \"cut-short\"\npeers = 20\nmax_time_ms = 1020\n[workload]\nstart_ms = 1000\ninterval_ms = 1\n",
    )
    .expect("temp file");
    let error = cli::run(&Args {
        scenario: file.clone(),
        seed: Some(5),
        peers: None,
        svg: Some(dir.join(format!("blockend-sim-failing-{}.svg", std::process::id()))),
        html: None,
    })
    .expect_err("cut short before convergence");
    let expected = format!("blockend sim {} --seed 5 --peers 20", file.display());
    match error {
        blockend_sim::Error::Invariant { command, violation } => {
            assert_eq!(command, expected);
            assert!(
                violation.contains("different block sets") || violation.contains("lack honest"),
                "{violation}"
            );
        }
        other => panic!("expected an invariant failure, got {other}"),
    }
    let _ = std::fs::remove_file(file);
}
