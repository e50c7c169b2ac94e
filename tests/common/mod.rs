//! Helpers for tests that run the real `blockend` binary: commands with a deadline, nodes as
//! child processes, polling with a deadline.

#![allow(dead_code)]

pub mod swarm;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub fn blockend() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_blockend"));
    command.env("RUST_LOG", "info,libp2p=warn,libp2p_gossipsub=error");
    command
}

/// Runs `blockend ARGS` to completion (at most a minute).
pub fn run(args: &[&str]) -> Output {
    run_with_stdin(args, None)
}

/// Runs `blockend ARGS` with `stdin` piped in.
pub fn run_with_stdin(args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = blockend();
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("the binary starts");
    if let Some(text) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    output_within_a_minute(child, args)
}

/// Waits for `child` to exit, reading its output while it runs (a child whose output outgrows
/// the pipe would otherwise wait for us forever); kills it and fails after a minute.
pub fn output_within_a_minute(child: Child, args: &[&str]) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.expect("output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("blockend {args:?} did not finish within a minute");
        }
    }
}

/// stdout as JSON lines.
pub fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Asserts a failure with exactly one line on stderr; returns that line.
pub fn one_line_error(output: &Output) -> String {
    assert!(!output.status.success(), "expected a failure: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got: {stderr:?}"
    );
    assert!(
        output.stdout.is_empty(),
        "expected nothing on stdout: {output:?}"
    );
    lines[0].to_owned()
}

/// Polls `check` every 50 ms until it returns `Some` or `limit` passes. A check that is slow
/// itself (one that asks many nodes) sets the pace: the pause between checks stays 50 ms.
pub fn eventually<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `blockend node` child process. Killed when dropped.
pub struct NodeProcess {
    child: Child,
    /// The first address it printed.
    pub addr: String,
    /// Every address it printed on start (one per `--listen`).
    pub addrs: Vec<String>,
    /// Lines it wrote to stderr so far (collected by a thread).
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl NodeProcess {
    /// Starts `blockend node --store DIR --no-mdns --listen /ip4/127.0.0.1/tcp/0 EXTRA...` and
    /// waits for its first `listening` line.
    pub fn start(store: &Path, extra: &[&str]) -> NodeProcess {
        Self::start_listening(store, &["/ip4/127.0.0.1/tcp/0"], extra)
    }

    /// Starts `blockend node --store DIR --no-mdns --listen L... EXTRA...` and waits for one
    /// `listening` line per address in `listen` (each must name one interface, e.g.
    /// 127.0.0.1, so it prints one line).
    pub fn start_listening(store: &Path, listen: &[&str], extra: &[&str]) -> NodeProcess {
        let mut command = blockend();
        command
            .args(["node", "--store"])
            .arg(store)
            .arg("--no-mdns");
        for addr in listen {
            command.args(["--listen", addr]);
        }
        command
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the node starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (err_tx, err_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if err_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = NodeProcess {
            child,
            addr: String::new(),
            addrs: Vec::new(),
            stderr: err_rx,
            seen: Vec::new(),
        };
        for _ in 0..listen.len().max(1) {
            let line = match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => line,
                Err(_) => panic!(
                    "the node printed no address; stderr: {:?}",
                    node.stderr_lines()
                ),
            };
            let value: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
            let addr = value["listening"]
                .as_str()
                .expect("a listening address")
                .to_owned();
            assert!(addr.contains("/p2p/"), "address without a peer id: {addr}");
            node.addrs.push(addr);
        }
        node.addr = node.addrs[0].clone();
        node
    }

    /// Everything the node wrote to stderr so far.
    pub fn stderr_lines(&mut self) -> Vec<String> {
        while let Ok(line) = self.stderr.try_recv() {
            self.seen.push(line);
        }
        self.seen.clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let status = eventually(Duration::from_secs(30), || {
            self.child.try_wait().expect("wait")
        })
        .expect("the node did not stop on SIGTERM");
        assert!(
            status.success(),
            "the node exited with {status}: {:?}",
            self.stderr_lines()
        );
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
