//! Sixteen `blockend node` processes on loopback TCP, each linked to four others (a ring with
//! chords: node i and nodes i±1, i±4 mod 16; mDNS off), all already holding the same 3,000
//! one-block counter feeds of 3,000 authors. Sync protocol v2 reconciles heads by range-based
//! set reconciliation every tick, so once the nodes are connected and quiet the steady cost
//! of anti-entropy must be a small fraction of sending every head: every head to every peer
//! on every tick would be about 65 B x 3,000 feeds x 4 peers, about 780 KB a node a tick. The
//! test asserts below [`TICK_BUDGET`], 16 KiB a node a tick, then appends one block at node 0
//! and asserts it reaches all fifteen others.
//!
//! The asserted figure is the nodes' own counters (`blockend stats` `bytes_sent`: sync
//! messages, and one gossip payload per publication of an own block; no transport framing).
//! Those leave out what gossipsub forwards on its own, so the stats' "bytes per delivered
//! block" printed for the new block counts what the sync machine sent in the window and the
//! one publication (an appended block goes out by gossip alone), not the forwards.
//! When the test runs as root where `ip netns` works, the nodes run in a network namespace
//! of their own and the test also prints what its `lo` carried: every byte on the wire,
//! gossipsub forwards, TCP/IP, noise, yamux, identify and ping included. Run with
//! `--nocapture` to read the figures.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use blockend::kernel::kernel::VerdictCache;
use blockend::kernel::store::RocksStore;
use blockend::kernel::{Block, Feed, Identity, Kernel};
use blockend::{store, ReadyApp};
use common::{eventually, json_lines, run};

/// Nodes in the swarm.
const NODES: usize = 16;
/// Feeds every node holds before it starts, one block each.
const FEEDS: usize = 3_000;
/// Node i is linked to nodes i±1 and i±4 (mod [`NODES`]): four links each, connected.
const LINKS: [usize; 2] = [1, 4];
/// Steady-state bytes a node may send per tick, summed over its peers. Full heads would be
/// about 65 B x 3,000 x 4 = 780 KB; a reconciliation round between peers in sync is one
/// message of a few hundred bytes each way.
const TICK_BUDGET: u64 = 16 * 1024;
/// Ticks each node must complete in the steady-state window.
const WINDOW_TICKS: u64 = 5;
/// Ticks each node must complete after it is connected before the window opens, so the
/// first rounds (and gossipsub's mesh forming) are behind it.
const WARM_TICKS: u64 = 3;
/// The time of the prepared blocks (ms since the epoch), in the past.
const THEN: u64 = 1_700_000_000_000;

fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// One block from each of [`FEEDS`] distinct authors, signed once.
fn genesis_blocks() -> Vec<Arc<Block>> {
    (0..FEEDS)
        .map(|i| {
            let secret = blake3::hash(format!("anti-entropy swarm author {i}").as_bytes());
            let identity = Identity::from_secret(secret.into());
            let mut feed = Feed::new();
            feed.append(&identity, br#"{"value":1}"#.to_vec(), THEN + i as u64);
            Arc::new(feed.into_blocks().remove(0))
        })
        .collect()
}

/// Creates a counter store in `dir` with `blockend init` and fills it with `blocks`, checking
/// signatures through `verdicts` (shared, so each is checked once for all the stores).
fn prepare(dir: &Path, blocks: &[Arc<Block>], verdicts: &VerdictCache) {
    let output = run(&["init", "--store", s(dir), "--app", "counter"]);
    assert!(output.status.success(), "init failed: {output:?}");
    let rocks = RocksStore::open(dir).expect("the store opens");
    let capacity = store::capacity_of(dir)
        .expect("a capacity file")
        .unwrap_or(store::DEFAULT_CAPACITY_BYTES);
    let mut kernel = Kernel::builder(&ReadyApp::Counter)
        .with_store(rocks)
        .with_config(store::kernel_config(capacity))
        .with_verdict_cache(verdicts.clone())
        .open()
        .expect("the kernel opens");
    for chunk in blocks.chunks(512) {
        kernel
            .dispatch_shared(chunk.iter().cloned())
            .expect("dispatch");
    }
    assert_eq!(
        kernel.stats().blocks,
        FEEDS,
        "every prepared block is stored"
    );
    drop(kernel.close());
}

/// A fresh network namespace with `lo` up, deleted when dropped (the nodes in it are stopped
/// first: declare it before them).
struct Namespace {
    name: String,
}

impl Namespace {
    /// `None` where namespaces cannot be made (not root, no `ip`, a container without the
    /// right): the test then runs on the host's loopback.
    fn create() -> Option<Namespace> {
        let name = format!("blockend-ae-{}", std::process::id());
        let added = Command::new("ip")
            .args(["netns", "add", &name])
            .stderr(Stdio::null())
            .status()
            .ok()?;
        if !added.success() {
            return None;
        }
        let namespace = Namespace { name };
        let up = Command::new("ip")
            .args([
                "netns",
                "exec",
                &namespace.name,
                "ip",
                "link",
                "set",
                "lo",
                "up",
            ])
            .status()
            .ok()?;
        (up.success() && namespace.lo_tx_bytes().is_some()).then_some(namespace)
    }

    /// Bytes `lo` sent so far: every packet between the nodes, once.
    fn lo_tx_bytes(&self) -> Option<u64> {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.name, "cat"])
            .arg("/sys/class/net/lo/statistics/tx_bytes")
            .output()
            .ok()?;
        String::from_utf8_lossy(&output.stdout).trim().parse().ok()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// A `blockend node` child process, perhaps in a namespace; killed when dropped. Its stderr
/// goes to a file beside the stores (read back when something fails).
struct NodeProcess {
    child: Child,
    /// The address it printed first, with its peer id.
    addr: String,
    log: PathBuf,
}

impl NodeProcess {
    fn start(store: &Path, peers: &[&str], namespace: Option<&Namespace>) -> NodeProcess {
        let binary = env!("CARGO_BIN_EXE_blockend");
        let mut command = match namespace {
            Some(namespace) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", &namespace.name, binary]);
                command
            }
            None => Command::new(binary),
        };
        let log = store.with_extension("log");
        command
            .env("RUST_LOG", "info,libp2p=warn,libp2p_gossipsub=error")
            .args(["node", "--store", s(store)])
            .args(["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
            .args(peers.iter().flat_map(|peer| ["--peer", peer]))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("a log file"));
        let mut child = command.spawn().expect("the node starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Keep reading after the receiver is gone, so the node never blocks on stdout.
                let _ = tx.send(line);
            }
        });
        let mut node = NodeProcess {
            child,
            addr: String::new(),
            log,
        };
        let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
            panic!("the node printed no address; stderr: {}", node.log_text());
        };
        let value: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        node.addr = value["listening"]
            .as_str()
            .expect("a listening address")
            .to_owned();
        assert!(node.addr.contains("/p2p/"), "no peer id in {}", node.addr);
        node
    }

    /// The peer id, base58, as `stats` and `peers` name it.
    fn peer_id(&self) -> &str {
        self.addr.rsplit("/p2p/").next().expect("a peer id")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn stop(mut self) {
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
            "exited with {status}: {}",
            self.log_text()
        );
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The node's counters, or `None` while it does not answer.
fn stats(store: &Path) -> Option<serde_json::Value> {
    let output = run(&["stats", "--store", s(store)]);
    output
        .status
        .success()
        .then(|| json_lines(&output).into_iter().next())?
}

/// Every node's counters, read one after another.
fn all_stats(stores: &[PathBuf]) -> Option<Vec<serde_json::Value>> {
    stores.iter().map(|store| stats(store)).collect()
}

fn count(stats: &serde_json::Value, key: &str) -> u64 {
    stats[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {stats}"))
}

/// The peer ids the node is connected to now.
fn connected(store: &Path) -> Vec<String> {
    let output = run(&["peers", "--store", s(store)]);
    if !output.status.success() {
        return Vec::new();
    }
    json_lines(&output)
        .into_iter()
        .filter_map(|peer| peer["peer"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until every node has completed `ticks` more ticks than in `from`; returns the
/// counters read then.
fn after_ticks(
    stores: &[PathBuf],
    from: &[serde_json::Value],
    ticks: u64,
) -> Vec<serde_json::Value> {
    // A tick is 2 s by default (the CLI has no flag for it).
    let limit = Duration::from_secs(30 + 4 * ticks);
    eventually(limit, || {
        let now = all_stats(stores)?;
        now.iter()
            .zip(from)
            .all(|(now, from)| count(now, "ticks") >= count(from, "ticks") + ticks)
            .then_some(now)
    })
    .unwrap_or_else(|| panic!("the nodes did not tick {ticks} times within {limit:?}"))
}

/// Sums of growth from `from` to `to` over all nodes: (bytes sent, ticks).
fn growth(from: &[serde_json::Value], to: &[serde_json::Value]) -> (u64, u64) {
    from.iter()
        .zip(to)
        .fold((0, 0), |(bytes, ticks), (from, to)| {
            (
                bytes + count(to, "bytes_sent") - count(from, "bytes_sent"),
                ticks + count(to, "ticks") - count(from, "ticks"),
            )
        })
}

/// The counter app's state at `store`, or `None` while the node does not answer.
fn state(store: &Path) -> Option<serde_json::Value> {
    let output = run(&["state", "--store", s(store)]);
    output
        .status
        .success()
        .then(|| json_lines(&output).into_iter().next())?
}

#[test]
fn sixteen_nodes_holding_thousands_of_feeds_spend_little_per_tick_and_still_spread_a_new_block() {
    let started = Instant::now();
    let root = tempfile::tempdir().expect("tempdir");
    let stores: Vec<PathBuf> = (0..NODES)
        .map(|i| root.path().join(format!("n{i:02}")))
        .collect();
    let blocks = genesis_blocks();
    let verdicts = VerdictCache::new(FEEDS);
    for store in &stores {
        prepare(store, &blocks, &verdicts);
    }
    let prepared = started.elapsed();

    // Declared before the nodes, so they are stopped before it goes.
    let namespace = Namespace::create();
    // Each link is dialed by the node started later, so no dial waits on a redial backoff.
    let mut nodes: Vec<NodeProcess> = Vec::new();
    for (i, store) in stores.iter().enumerate() {
        let peers: Vec<&str> = neighbours(i)
            .into_iter()
            .filter(|&j| j < i)
            .map(|j| nodes[j].addr.as_str())
            .collect();
        nodes.push(NodeProcess::start(store, &peers, namespace.as_ref()));
    }

    let linked = eventually(Duration::from_secs(60), || {
        stores
            .iter()
            .enumerate()
            .all(|(i, store)| {
                let peers = connected(store);
                neighbours(i)
                    .into_iter()
                    .all(|j| peers.iter().any(|p| p == nodes[j].peer_id()))
            })
            .then_some(())
    });
    if linked.is_none() {
        let peers: Vec<Vec<String>> = stores.iter().map(|store| connected(store)).collect();
        panic!(
            "the nodes did not all connect to their neighbours: {peers:?}; node 0 logged: {}",
            nodes[0].log_text()
        );
    }
    let linked_at = all_stats(&stores).expect("every node answers");

    // Steady state: connected, a few rounds behind them, nothing new anywhere.
    let quiet = after_ticks(&stores, &linked_at, WARM_TICKS);
    let wire_before = namespace.as_ref().and_then(Namespace::lo_tx_bytes);
    let window_start = Instant::now();
    let steady = after_ticks(&stores, &quiet, WINDOW_TICKS);
    let window = window_start.elapsed();
    let wire_steady = namespace
        .as_ref()
        .and_then(Namespace::lo_tx_bytes)
        .zip(wire_before)
        .map(|(after, before)| after - before);
    let (bytes_steady, ticks_steady) = growth(&quiet, &steady);
    let per_node_tick = bytes_steady / ticks_steady;
    eprintln!(
        "anti-entropy swarm: {NODES} nodes x {FEEDS} feeds, steady state: {bytes_steady} B sent over {ticks_steady} node-ticks = {per_node_tick} B per node per tick (budget {TICK_BUDGET}; full heads ~780 KB)"
    );
    if let Some(wire) = wire_steady {
        eprintln!(
            "anti-entropy swarm: on the wire (lo in a namespace, all protocols): {wire} B in {:.1} s = {} B per node per tick",
            window.as_secs_f64(),
            wire / ticks_steady
        );
    }
    assert!(
        per_node_tick < TICK_BUDGET,
        "{per_node_tick} B per node per tick: heads are sent in full, or near it"
    );
    assert!(
        steady
            .iter()
            .all(|stats| count(stats, "blocks_stored") == FEEDS as u64),
        "a quiet swarm changed its stores: {steady:?}"
    );

    // One new block at node 0 reaches every other node.
    let before = all_stats(&stores).expect("every node answers");
    let wire_before = namespace.as_ref().and_then(Namespace::lo_tx_bytes);
    let appended_at = Instant::now();
    let output = run(&["append", "--store", s(&stores[0]), r#"{"value":2}"#]);
    assert!(output.status.success(), "append failed: {output:?}");
    let spread = eventually(Duration::from_secs(60), || {
        let now = all_stats(&stores)?;
        now.iter()
            .all(|stats| count(stats, "blocks_stored") == FEEDS as u64 + 1)
            .then_some(now)
    });
    let spread_in = appended_at.elapsed();
    let Some(spread) = spread else {
        let held: Vec<u64> = all_stats(&stores)
            .unwrap_or_default()
            .iter()
            .map(|stats| count(stats, "blocks_stored"))
            .collect();
        panic!("the new block did not reach every node within 60 s: blocks stored {held:?}");
    };
    // The window ends as the last node is seen holding the block: a fraction of a tick, so
    // the steady traffic in it is small beside the delivery's own. On the wire it is
    // subtracted at the steady rate; in the stats it is left in (a node's tick need not send
    // anything: the peers that opened rounds with it since its last tick are not sent one).
    let wire_spread = namespace
        .as_ref()
        .and_then(Namespace::lo_tx_bytes)
        .zip(wire_before)
        .map(|(after, before)| after - before);
    let spread_window = appended_at.elapsed();
    let (bytes, ticks) = growth(&before, &spread);
    let blocks_sent: u64 = before
        .iter()
        .zip(&spread)
        .map(|(from, to)| count(to, "blocks_sent") - count(from, "blocks_sent"))
        .sum();
    let deliveries = (NODES - 1) as f64;
    eprintln!(
        "anti-entropy swarm: the new block reached all {NODES} nodes in {:.2} s; stats: {bytes} B and {blocks_sent} blocks sent over {ticks} node-ticks = {:.0} B per delivered block ({deliveries} deliveries; the stats count sync and the one gossip publication, not gossipsub's forwards)",
        spread_in.as_secs_f64(),
        bytes as f64 / deliveries
    );
    if let Some(wire) = wire_spread {
        let steady_wire = wire_steady.unwrap_or(0) as f64 / window.as_secs_f64();
        let extra_wire = wire as f64 - steady_wire * spread_window.as_secs_f64();
        eprintln!(
            "anti-entropy swarm: on the wire: {wire} B in {:.2} s, {extra_wire:.0} B above the steady rate = {:.0} B per delivered block",
            spread_window.as_secs_f64(),
            extra_wire / deliveries
        );
    }

    // Every node counts the same: 3,000 ones and the new two.
    let states: Vec<serde_json::Value> = stores
        .iter()
        .map(|store| state(store).expect("a state"))
        .collect();
    let total = FEEDS as u64 + 2;
    for (i, state) in states.iter().enumerate() {
        assert_eq!(state["state"]["total"], total, "node {i}: {state}");
        assert_eq!(state["digest"], states[0]["digest"], "node {i}");
    }

    for node in nodes {
        node.stop();
    }
    let in_namespace = namespace.is_some();
    drop(namespace);
    eprintln!(
        "anti-entropy swarm: {:.1} s in all ({:.1} s preparing the stores, {} signature verdicts reused), in a namespace: {}",
        started.elapsed().as_secs_f64(),
        prepared.as_secs_f64(),
        verdicts.hits(),
        in_namespace
    );
}

/// The nodes node `i` is linked to.
fn neighbours(i: usize) -> Vec<usize> {
    LINKS
        .iter()
        .flat_map(|&d| [(i + d) % NODES, (i + NODES - d) % NODES])
        .collect()
}
