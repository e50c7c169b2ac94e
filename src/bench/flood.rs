//! `blockend bench flood`: a `blockend node` process with a small capacity, and a peer in this
//! process that pushes blocks at it by gossip as fast as it can: valid genesis blocks of
//! fresh identities for the first half of the run, then junk. Prints the node's resident
//! memory (sampled from `/proc`, and its peak) against its idle figure measured in the same
//! run, and what it stored, refused and dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use blockend::kernel::{Block, Identity, Kernel};
use blockend::{api, node, Node, NodeApp as _, ReadyApp};

use crate::cli::emit;

/// The node under flood, as a child process; killed when dropped.
struct Victim {
    child: Child,
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Victim {
    /// Starts `blockend node` on `dir` and returns it with its first listening address.
    fn start(dir: &Path, capacity: u64) -> anyhow::Result<(Victim, libp2p::Multiaddr)> {
        let exe = std::env::current_exe().context("finding the blockend binary")?;
        let mut child = Command::new(exe)
            .args(["node", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
            .arg("--store")
            .arg(dir)
            .arg("--capacity")
            .arg(capacity.to_string())
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the node under flood")?;
        let stdout = child.stdout.take().context("the node's stdout")?;
        let victim = Victim { child };
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the node's address")?;
        let value: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("the node printed {line:?}"))?;
        let addr = value["listening"]
            .as_str()
            .context("the node printed no address")?
            .parse()?;
        Ok((victim, addr))
    }

    /// (resident, peak resident) memory in bytes, from `/proc/PID/status`.
    fn memory(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .context("reading the node's /proc status")?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }
}

/// The victim's stats, through its local socket.
async fn victim_stats(dir: &Path) -> anyhow::Result<serde_json::Value> {
    let client = api::Client::connect(dir)
        .await
        .context("the node under flood has no socket")?;
    let mut lines = client.request(&api::Request::Stats {}).await?;
    let line = lines
        .next_line()
        .await?
        .context("the node under flood did not answer")?;
    Ok(serde_json::from_str(&line)?)
}

fn mib(bytes: u64) -> f64 {
    (bytes as f64 / 1_048_576.0 * 10.0).round() / 10.0
}

pub async fn flood(seconds: u64, capacity: u64) -> anyhow::Result<()> {
    if seconds < 2 {
        bail!("--seconds must be at least 2");
    }
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let store = dir.path().join("victim");
    let (victim, addr) = Victim::start(&store, capacity)?;

    let app = ReadyApp::Counter;
    let kernel = Kernel::builder(&app).open()?;
    let mut config = node::Config::default()
        .with_mdns(false)
        .with_listen(vec!["/ip4/127.0.0.1/tcp/0".parse()?])
        .with_peers(vec![addr]);
    // The flooded node's topic: `blockend node` names it after the app.
    config.app = app.name().to_owned();
    let flooder = Node::spawn(kernel, Arc::new(app), config).await?;
    // Gossip needs the victim in the flooder's mesh: wait for the first delivery (a new
    // probe each time: gossip drops a message it has seen, delivered or not).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = b"{\"value\":1}".to_vec();
        let probe = Block::sign(&Identity::generate(), None, now_ms(), body);
        flooder.handle().publish_raw(probe.encode()).await?;
        let stats = victim_stats(&store).await?;
        if stats["blocks_stored"].as_u64() >= Some(1) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the flooder's gossip never reached the node in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (idle, _) = victim.memory()?;
    eprintln!(
        "bench: node idle at {} MiB; flooding for {seconds} s",
        mib(idle)
    );

    let start = Instant::now();
    let half = Duration::from_secs(seconds / 2);
    let end = Duration::from_secs(seconds);
    let (mut valid, mut junk) = (0u64, 0u64);
    let mut peak_sampled = idle;
    let mut next_sample = Duration::ZERO;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while start.elapsed() < end {
        let elapsed = start.elapsed();
        let bytes = if elapsed < half {
            let secret: [u8; 32] = blake3::hash(&valid.to_be_bytes()).into();
            let block = Block::sign(
                &Identity::from_secret(secret),
                None,
                now_ms(),
                format!(r#"{{"value":{valid}}}"#).into_bytes(),
            );
            valid += 1;
            block.encode()
        } else {
            junk += 1;
            (0..200)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        };
        if flooder.handle().publish_raw(bytes).await.is_err() {
            break;
        }
        if elapsed >= next_sample {
            let (rss, _) = victim.memory()?;
            peak_sampled = peak_sampled.max(rss);
            next_sample = elapsed + Duration::from_millis(250);
        }
        // Give the runtime a turn now and then, so the flooder's own swarm can send.
        if (valid + junk).is_multiple_of(64) {
            tokio::task::yield_now().await;
        }
    }
    let (rss_end, peak) = victim.memory()?;
    let stats = victim_stats(&store).await?;
    flooder.shutdown().await;
    drop(victim);
    emit(&serde_json::json!({
        "seconds": seconds,
        "capacity_bytes": capacity,
        "valid_sent": valid,
        "junk_sent": junk,
        "blocks_stored": stats["blocks_stored"],
        "blocks_received": stats["blocks_received"],
        "over_capacity": stats["over_capacity"],
        "dropped": stats["dropped"],
        "gossip_over_rate": stats["gossip_over_rate"],
        "gossip_throttled": stats["gossip_throttled"],
        "banned": stats["banned"],
        "rejected": stats["rejected"],
        "rss_idle_mib": mib(idle),
        "rss_end_mib": mib(rss_end),
        "rss_peak_sampled_mib": mib(peak_sampled),
        "rss_peak_mib": mib(peak),
        "peak_to_idle": ((peak as f64 / idle.max(1) as f64) * 100.0).round() / 100.0,
    }))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
