//! When the node a command talks to goes away, the command says so and fails: a `--follow`
//! stream ends non-zero with one line, `peers` without a node fails, and an append whose
//! connection dropped says whether its block was written.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{blockend, eventually, json_lines, one_line_error, run, NodeProcess};

fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

fn init(store: &Path) {
    let output = run(&["init", "--store", s(store), "--app", "counter"]);
    assert!(output.status.success(), "{output:?}");
}

/// A `blockend VERB --follow --store DIR` child whose stdout lines arrive on a channel.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    fn start(verb: &str, store: &Path) -> Follower {
        let mut child = blockend()
            .args([verb, "--follow", "--store", s(store)])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the follower starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    /// Waits for the first line, proof that the stream is open.
    fn first_line(&self) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the follower printed its first line");
        serde_json::from_str(&line).expect("a JSON line")
    }

    /// Waits for the follower to exit; returns whether it succeeded and its stderr lines.
    fn exit(mut self) -> (bool, Vec<String>) {
        let status = eventually(Duration::from_secs(30), || {
            self.child.try_wait().expect("wait")
        });
        let Some(status) = status else {
            let _ = self.child.kill();
            panic!("the follower kept running after its node went away");
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(
            self.child.stderr.as_mut().expect("stderr is piped"),
            &mut stderr,
        )
        .expect("stderr");
        let lines = stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        (status.success(), lines)
    }
}

fn assert_went_away(verb: &str, (success, stderr): (bool, Vec<String>)) {
    assert!(!success, "{verb} --follow exited 0 when its node went away");
    assert_eq!(stderr.len(), 1, "{verb} --follow: not one line: {stderr:?}");
    assert!(
        stderr[0].starts_with("blockend: the node on ")
            && (stderr[0].contains("went away") || stderr[0].contains("stopped"))
            && stderr[0].contains("nothing more will arrive"),
        "{verb} --follow: {}",
        stderr[0]
    );
}

fn follow_until_the_node_goes_away(kill: impl FnOnce(NodeProcess)) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let node = NodeProcess::start(&store, &["--app", "counter"]);
    assert!(run(&["append", "--store", s(&store), r#"{"value":3}"#])
        .status
        .success());
    let cat = Follower::start("cat", &store);
    let state = Follower::start("state", &store);
    assert_eq!(cat.first_line()["body"]["value"], 3);
    assert_eq!(state.first_line()["state"]["total"], 3);
    kill(node);
    assert_went_away("cat", cat.exit());
    assert_went_away("state", state.exit());
}

#[test]
fn follow_streams_fail_in_one_line_when_the_node_stops() {
    follow_until_the_node_goes_away(NodeProcess::stop);
}

#[test]
fn follow_streams_fail_in_one_line_when_the_node_is_killed() {
    // Dropping the process handle sends SIGKILL: no goodbye on the socket.
    follow_until_the_node_goes_away(drop);
}

#[test]
fn follow_without_a_node_prints_what_is_stored_then_fails() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store);
    assert!(run(&["append", "--store", s(&store), r#"{"value":5}"#])
        .status
        .success());
    for verb in ["cat", "state"] {
        let output = run(&[verb, "--follow", "--store", s(&store)]);
        assert!(!output.status.success(), "{verb}: {output:?}");
        let printed = json_lines(&output);
        assert_eq!(printed.len(), 1, "{verb}: {printed:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 1, "{verb}: {stderr}");
        assert!(
            lines[0].contains("no node is running on") && lines[0].contains("--follow needs one"),
            "{verb}: {}",
            lines[0]
        );
    }
}

#[test]
fn peers_without_a_node_fails_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store);
    let line = one_line_error(&run(&["peers", "--store", s(&store)]));
    assert!(line.contains("no node is running on"), "{line}");
    // A missing store is still a missing store.
    let line = one_line_error(&run(&["peers", "--store", s(&dir.path().join("none"))]));
    assert!(line.contains("no store at"), "{line}");
}

/// Stands in for a node on the store's socket: takes one request line, lets `then` act on
/// it, and closes the connection without answering.
fn dropping_node(store: &Path, then: impl FnOnce(serde_json::Value) + Send + 'static) {
    let listener = UnixListener::bind(store.join("node.sock")).expect("bind the socket");
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("a client");
        let mut line = String::new();
        BufReader::new(&stream)
            .read_line(&mut line)
            .expect("a request line");
        then(serde_json::from_str(&line).expect("a JSON request"));
        // Nothing written back: the connection just closes.
        let _ = (&stream).flush();
    });
}

#[test]
fn an_append_dropped_before_the_write_says_the_block_was_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store);
    dropping_node(&store, |request| assert_eq!(request["op"], "append"));
    let line = one_line_error(&run(&["append", "--store", s(&store), r#"{"value":7}"#]));
    assert!(
        line.contains("closed the connection before it answered")
            && line.contains("the block was not written"),
        "{line}"
    );
    std::fs::remove_file(store.join("node.sock")).unwrap();
    let output = run(&["cat", "--store", s(&store)]);
    assert!(json_lines(&output).is_empty(), "{output:?}");
}

#[test]
fn an_append_dropped_after_the_write_prints_the_written_block() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let output = run(&["init", "--store", s(&store), "--app", "kv"]);
    assert!(output.status.success(), "{output:?}");
    // An earlier block with the same body is not mistaken for this one.
    assert!(run(&[
        "append",
        "--store",
        s(&store),
        r#"{"set":{"key":"k","value":7}}"#
    ])
    .status
    .success());
    let dir_of_store = store.clone();
    dropping_node(&store, move |request| {
        // The write happens, as a node would do it, then the node dies before answering.
        let (mut kernel, _) =
            blockend::store::open(&dir_of_store, None, false).expect("the store opens");
        let body = serde_json::to_vec(&request["body"]).expect("a body");
        kernel.create_block(body).expect("the block is written");
        drop(kernel.close());
    });
    let output = run(&[
        "append",
        "--store",
        s(&store),
        r#"{"set":{"key":"k","value":7}}"#,
    ]);
    assert!(output.status.success(), "{output:?}");
    let printed = json_lines(&output);
    assert_eq!(printed.len(), 1, "{printed:?}");
    assert_eq!(printed[0]["seq"], 1);
    assert_eq!(printed[0]["body"]["set"]["value"], 7);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("closed the connection before it answered")
            && stderr.contains("the block was written"),
        "{stderr}"
    );
}

/// A node stopping as a read comes in resets the connection (it closes with the request
/// unread): the read verb reads the store itself instead of failing on the race.
#[test]
fn a_read_whose_node_resets_the_connection_reads_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store);
    assert!(run(&["append", "--store", s(&store), r#"{"value":3}"#])
        .status
        .success());
    let listener = UnixListener::bind(store.join("node.sock")).expect("bind the socket");
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("a client");
        // One byte read, the rest left unread: closing now resets the connection.
        let mut first = [0u8; 1];
        let _ = std::io::Read::read(&mut stream, &mut first);
    });
    let output = run(&["state", "--store", s(&store)]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(json_lines(&output)[0]["state"]["total"], 3, "{output:?}");
}
