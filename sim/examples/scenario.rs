//! Runs a scenario file without the `blockend` binary (so without RocksDB):
//!
//! ```text
//! cargo run --release -p blockend-sim --example scenario -- sim/scenarios/one-sender.toml --peers 10000
//! ```

use std::process::ExitCode;

use blockend_sim::cli::{self, Args};

fn parse() -> Result<Args, String> {
    let mut args = Args::default();
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        let mut value = |name: &str| argv.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--seed" => {
                args.seed = Some(
                    value("--seed")?
                        .parse()
                        .map_err(|e| format!("--seed: {e}"))?,
                )
            }
            "--peers" => {
                args.peers = Some(
                    value("--peers")?
                        .parse()
                        .map_err(|e| format!("--peers: {e}"))?,
                )
            }
            "--svg" => args.svg = Some(value("--svg")?.into()),
            "--html" => args.html = Some(value("--html")?.into()),
            flag if flag.starts_with("--") => return Err(format!("unknown flag {flag}")),
            path if args.scenario.as_os_str().is_empty() => args.scenario = path.into(),
            extra => return Err(format!("unexpected argument {extra}")),
        }
    }
    if args.scenario.as_os_str().is_empty() {
        return Err(
            "usage: scenario SCENARIO.toml [--seed N] [--peers N] [--svg PATH] [--html PATH]"
                .into(),
        );
    }
    Ok(args)
}

fn main() -> ExitCode {
    let result = parse().and_then(|args| cli::run(&args).map_err(|e| e.to_string()));
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
