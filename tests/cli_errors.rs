//! Errors a person can act on: every argument error is one line with all of clap's message
//! (the missing arguments, the tip), bare `blockend` lists the commands, and nothing on stderr
//! carries ANSI colour codes when stderr is not a terminal.

mod common;

use common::{one_line_error, run};

#[test]
fn a_missing_argument_error_names_what_is_missing_on_one_line() {
    let line = one_line_error(&run(&["append"]));
    assert!(line.starts_with("blockend: "), "{line}");
    assert!(line.contains("not provided"), "{line}");
    assert!(
        line.contains("--store"),
        "the missing argument is named: {line}"
    );
    assert!(line.contains("usage: blockend append"), "{line}");
}

#[test]
fn a_negative_number_keeps_clap_s_tip() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    let line = one_line_error(&run(&["append", "--store", store.to_str().unwrap(), "-5"]));
    assert!(line.contains("'-- -5'"), "clap's tip is kept: {line}");
}

#[test]
fn bare_blockend_lists_the_commands_and_fails() {
    let output = run(&[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for verb in ["init", "node", "append", "cat", "state"] {
        assert!(stderr.contains(verb), "{verb} is not listed: {stderr}");
    }
    assert!(output.stdout.is_empty());
}

#[test]
fn stderr_has_no_colour_codes_when_it_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    // A verb that logs (init), and one that fails (a missing store).
    let init = run(&["init", "--store", store.to_str().unwrap()]);
    assert!(init.status.success(), "{init:?}");
    let missing = run(&["cat", "--store", dir.path().join("none").to_str().unwrap()]);
    for output in [init, missing] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains('\u{1b}'),
            "ANSI codes on stderr: {stderr:?}"
        );
    }
}
