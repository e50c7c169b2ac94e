//! The `blockend` command line: see `blockend --help`.

mod bench;
mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = match cli::Args::try_parse() {
        Ok(args) => args,
        Err(error) => {
            use clap::error::ErrorKind;
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) {
                let _ = error.print();
                return ExitCode::SUCCESS;
            }
            if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                // Bare `blockend` (or a verb group without its verb): the command list, on
                // stderr, and a failure, as git and cargo do.
                eprint!("{}", error.render());
                return ExitCode::from(2);
            }
            eprintln!("blockend: {}", one_line(&error.render().to_string()));
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,libp2p=warn,libp2p_gossipsub=error")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("blockend: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The chain on one line; a cause its parent already quotes is not repeated.
            let mut text = error.to_string();
            for cause in error.chain().skip(1) {
                let cause = cause.to_string();
                if !text.contains(&cause) {
                    text = format!("{text}: {cause}");
                }
            }
            eprintln!(
                "blockend: {}",
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            ExitCode::FAILURE
        }
    }
}

/// clap's rendering of an argument error, which spans several lines (the error, the missing
/// arguments one per line, a tip, the usage), as one line: every part kept, in order, without
/// the "For more information" line.
fn one_line(rendered: &str) -> String {
    let mut text = String::new();
    let mut in_list = false;
    for raw in rendered.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with("For more information") {
            continue;
        }
        let line = line.trim_start_matches("error: ");
        let indented = raw.starts_with(' ') && !line.starts_with("tip:");
        if let Some(usage) = line.strip_prefix("Usage: ") {
            text.push_str(&format!(" (usage: {usage})"));
            in_list = false;
        } else if indented && (in_list || text.ends_with(':')) {
            // The items of a list under a heading ending in ':'.
            text.push_str(if in_list { ", " } else { " " });
            text.push_str(line);
            in_list = true;
        } else {
            if !text.is_empty() {
                text.push_str("; ");
            }
            text.push_str(line);
            in_list = false;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn a_clap_error_keeps_every_part_on_one_line() {
        let rendered = "error: the following required arguments were not provided:\n  --store <DIR>\n  <BODY>\n\nUsage: blockend append --store <DIR> <BODY>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(rendered),
            "the following required arguments were not provided: --store <DIR>, <BODY> (usage: blockend append --store <DIR> <BODY>)"
        );
        let tip = "error: unexpected argument '-5' found\n\n  tip: to pass '-5' as a value, use '-- -5'\n\nUsage: blockend append [OPTIONS] <BODY>\n";
        assert_eq!(
            one_line(tip),
            "unexpected argument '-5' found; tip: to pass '-5' as a value, use '-- -5' (usage: blockend append [OPTIONS] <BODY>)"
        );
    }
}
