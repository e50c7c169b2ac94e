//! A `blockend node` process with a small `--capacity` meets, on loopback TCP, first an honest
//! peer with long feeds and then a flooder offering thousands of fresh feeds, half of them
//! backdated to 1970, by sync and by gossip. The honest feeds stay whole, the flood is refused
//! at the door, the store stays within its capacity plus the stated slack on disk, and the
//! node's memory stays under a bound.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use blockend::kernel::{Block, Feed, Identity, Kernel};
use blockend::node::{self, Transport};
use blockend::{Node, NodeApp as _, ReadyApp};
use common::{eventually, json_lines, run, NodeProcess};
use libp2p::Multiaddr;

/// Honest writers and the length of each one's feed.
const HONEST: u8 = 5;
const HONEST_LEN: u64 = 200;
/// Fresh identities the flooder brings.
const SYBILS: u32 = 3_000;
/// The capacity: room for the honest feeds and a little more.
const CAPACITY: u64 = 256 * 1024;
/// On-disk slack over capacity the docs promise: RocksDB's write-ahead log (capped at 8 MiB),
/// its memtables and info log, before compaction folds them away.
const DISK_SLACK: u64 = 16 * 1024 * 1024;
/// Peak resident memory allowed to the node while flooded.
const PEAK_RSS: u64 = 256 * 1024 * 1024;

fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

fn feed_of(identity: &Identity, len: u64, start: u64) -> Vec<Block> {
    let mut feed = Feed::new();
    for i in 0..len {
        feed.append(
            identity,
            format!(r#"{{"value":{}}}"#, i + 1).into_bytes(),
            start + i,
        );
    }
    feed.into_blocks()
}

/// A counter node in this process on loopback TCP, holding `blocks`, dialing `peer`.
async fn peer_holding(blocks: Vec<Block>, peer: Multiaddr) -> Node {
    let app = ReadyApp::Counter;
    let mut kernel = Kernel::builder(&app).open().expect("a MemoryStore kernel");
    for chunk in blocks.chunks(512) {
        kernel.dispatch(chunk.to_vec()).expect("dispatch");
    }
    let mut config = node::Config::default()
        .with_transport(Transport::Ip)
        .with_mdns(false)
        .with_listen(vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a multiaddr")])
        .with_peers(vec![peer])
        .with_tick(Duration::from_millis(500));
    // The topic of `blockend node`'s gossip is named after its app.
    config.app = app.name().to_owned();
    Node::spawn(kernel, Arc::new(app), config)
        .await
        .expect("the node starts")
}

fn feeds(store: &Path) -> Vec<serde_json::Value> {
    let output = run(&["feeds", "--store", s(store)]);
    assert!(output.status.success(), "{output:?}");
    json_lines(&output)
}

fn stats(store: &Path) -> serde_json::Value {
    let output = run(&["stats", "--store", s(store)]);
    assert!(output.status.success(), "{output:?}");
    json_lines(&output).remove(0)
}

fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry"))
    {
        let meta = entry.metadata().expect("metadata");
        total += if meta.is_dir() {
            disk_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_node_keeps_every_honest_feed_through_a_sybil_flood() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("victim");
    let capacity = CAPACITY.to_string();
    let victim = NodeProcess::start(&store, &["--capacity", &capacity]);
    let addr: Multiaddr = victim.addr.parse().expect("the node's address");

    // A long-standing network: the honest peer's feeds reach the node first.
    let now = 1_700_000_000_000;
    let honest_authors: Vec<Identity> = (1..=HONEST)
        .map(|n| Identity::from_secret([n; 32]))
        .collect();
    let honest_blocks: Vec<Block> = honest_authors
        .iter()
        .enumerate()
        .flat_map(|(i, id)| feed_of(id, HONEST_LEN, now + i as u64 * 1_000))
        .collect();
    let honest = peer_holding(honest_blocks, addr.clone()).await;
    let expected = (HONEST as usize) * HONEST_LEN as usize;
    let synced = eventually(Duration::from_secs(60), || {
        (stats(&store)["blocks_stored"].as_u64()? as usize >= expected).then_some(())
    });
    assert!(
        synced.is_some(),
        "the honest feeds never arrived: {:?}",
        stats(&store)
    );

    // The flood: fresh identities, every other one backdated to 1970, some with long feeds,
    // offered by sync and pushed by gossip.
    let sybil_blocks: Vec<Block> = (0..SYBILS)
        .flat_map(|i| {
            let id = Identity::from_secret(blake3::hash(&i.to_be_bytes()).into());
            let start = if i % 2 == 0 {
                u64::from(i)
            } else {
                now + 5_000_000
            };
            feed_of(&id, if i % 10 == 0 { 20 } else { 1 }, start)
        })
        .collect();
    let geneses: Vec<Vec<u8>> = sybil_blocks
        .iter()
        .filter(|b| b.seq() == 0)
        .map(Block::encode)
        .collect();
    let flooder = peer_holding(sybil_blocks, addr).await;
    let flooder_id = flooder.handle().peer_id().to_base58();
    let connected = eventually(Duration::from_secs(30), || {
        stats(&store)["peers"].get(&flooder_id).map(|_| ())
    });
    assert!(connected.is_some(), "the flooder never connected");
    for bytes in geneses {
        flooder.handle().publish_raw(bytes).await.expect("publish");
    }
    // The node has heard the flood once it has received about a head per sybil feed (sync)
    // and refused a share of the gossiped geneses at the door.
    let heard = eventually(Duration::from_secs(60), || {
        let stats = stats(&store);
        let received = stats["peers"][&flooder_id]["bytes_received"].as_u64()?;
        (received >= u64::from(SYBILS) * 40 && stats["over_capacity"].as_u64()? > 0)
            .then_some(stats)
    });
    let during = heard.expect("the flood never reached the node");
    let peak = peak_rss(victim.pid());

    let listing = feeds(&store);
    for identity in &honest_authors {
        let author = identity.public().to_hex();
        let feed = listing
            .iter()
            .find(|f| f["author"] == author.as_str())
            .unwrap_or_else(|| panic!("honest feed {author} is gone: {listing:?}"));
        assert_eq!(feed["status"], "kept", "{feed}");
        assert_eq!(feed["length"], HONEST_LEN, "{feed}");
    }
    let sybil_stored: u64 = listing
        .iter()
        .filter(|f| f["status"] == "kept")
        .map(|f| f["length"].as_u64().unwrap_or(0))
        .sum::<u64>()
        - u64::from(HONEST) * HONEST_LEN;
    let after = stats(&store);
    assert!(
        after["capacity_used"].as_u64().expect("capacity_used") <= CAPACITY,
        "{after}"
    );
    // Evictions, if any, were of flood feeds: a senior flood feed growing pushes out junior
    // ones; every honest feed is whole (checked above).
    eprintln!(
        "sybil flood: capacity {CAPACITY} B, used {}, sybil blocks stored {sybil_stored}, refused at the door {}, peak RSS {} MiB, stats during the flood {during}",
        after["capacity_used"],
        after["over_capacity"],
        peak / 1_048_576
    );
    assert!(peak < PEAK_RSS, "peak RSS {peak} B");

    flooder.shutdown().await;
    honest.shutdown().await;
    victim.stop();
    let on_disk = disk_bytes(&store);
    eprintln!("sybil flood: {on_disk} B on disk after the node stopped");
    assert!(on_disk <= CAPACITY + DISK_SLACK, "{on_disk} B on disk");
}
