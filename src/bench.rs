//! `blockend bench sync`: two nodes on loopback TCP, N blocks synced from one to the other, and
//! the single-node ingest rate of the same blocks measured in the same run as the reference.
//! `blockend bench flood` is in [`flood`], `blockend bench reconcile` in [`reconcile`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use blockend::kernel::store::RocksStore;
use blockend::kernel::{Block, Kernel};
use blockend::{api, node, Node, ReadyApp};

use crate::cli::emit;

mod flood;
mod reconcile;
pub use flood::flood;
pub use reconcile::reconcile;

/// Blocks per dispatch in the ingest reference: the sync protocol's batch size.
const BATCH: usize = 512;

fn kernel(dir: &std::path::Path) -> anyhow::Result<Kernel> {
    let store = RocksStore::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    Ok(Kernel::builder(&ReadyApp::Counter)
        .with_store(store)
        .open()?)
}

fn progress(what: &str, done: usize, total: usize) {
    if total >= 10 && done.is_multiple_of(total / 10) {
        eprintln!("bench: {what} {done}/{total}");
    }
}

pub async fn sync(n: usize) -> anyhow::Result<()> {
    if n == 0 {
        bail!("--blocks must be at least 1");
    }
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let app = ReadyApp::Counter;

    // The source: one feed of n counter bumps on a RocksDB store.
    eprintln!("bench: signing {n} blocks");
    let blocks: Vec<Arc<Block>> = tokio::task::block_in_place(|| -> anyhow::Result<_> {
        let mut source = kernel(&dir.path().join("a"))?;
        for i in 0..n {
            source.create_block(format!(r#"{{"value":{}}}"#, i + 1).into_bytes())?;
            progress("signed", i + 1, n);
        }
        let blocks = api::blocks(&source, None);
        drop(source.close());
        Ok(blocks)
    })?;
    let bytes: usize = blocks.iter().map(|b| b.encoded_len()).sum();

    // The reference: the same blocks dispatched into a fresh kernel on RocksDB, in batches of
    // the sync protocol's size.
    eprintln!("bench: ingest reference");
    let ingest_s = tokio::task::block_in_place(|| -> anyhow::Result<f64> {
        let mut sink = kernel(&dir.path().join("ingest"))?;
        let start = Instant::now();
        for chunk in blocks.chunks(BATCH) {
            sink.dispatch(chunk.iter().map(|b| (**b).clone()))?;
        }
        let elapsed = start.elapsed().as_secs_f64();
        if sink.stats().blocks != n {
            bail!("ingest stored {} of {n} blocks", sink.stats().blocks);
        }
        drop(sink.close());
        Ok(elapsed)
    })?;

    // The run: node a holds the feed, node b starts empty and dials a.
    eprintln!("bench: syncing over loopback TCP");
    let loopback: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/0".parse()?;
    let config = node::Config::default()
        .with_mdns(false)
        .with_listen(vec![loopback.clone()]);
    let a = Node::spawn(
        kernel(&dir.path().join("a"))?,
        Arc::new(app),
        config.clone(),
    )
    .await?;
    let addr = a
        .handle()
        .listening()
        .await?
        .into_iter()
        .next()
        .context("node a has no address")?;
    let b_kernel = kernel(&dir.path().join("b"))?;
    let start = Instant::now();
    let b = Node::spawn(b_kernel, Arc::new(app), config.with_peers(vec![addr])).await?;
    let deadline = start + Duration::from_secs(600);
    let mut last = 0;
    loop {
        let stats = b.handle().stats().await?;
        if stats.blocks_stored >= n {
            break;
        }
        if stats.blocks_stored >= last + n / 10 {
            last = stats.blocks_stored;
            eprintln!("bench: synced {last}/{n}");
        }
        if Instant::now() > deadline {
            bail!(
                "sync did not finish in 10 minutes ({} of {n} blocks)",
                stats.blocks_stored
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sync_s = start.elapsed().as_secs_f64();
    let stats = b.handle().stats().await?;
    b.shutdown().await;
    a.shutdown().await;

    let sync_rate = n as f64 / sync_s;
    let ingest_rate = n as f64 / ingest_s;
    emit(&serde_json::json!({
        "blocks": n,
        "block_bytes": bytes,
        "sync_s": round(sync_s),
        "sync_blocks_per_s": sync_rate.round(),
        "sync_mb_per_s": round(stats.bytes_received as f64 / sync_s / 1e6),
        "bytes_received": stats.bytes_received,
        "duplicates_received": stats.duplicates_received,
        "ingest_blocks_per_s": ingest_rate.round(),
        "ratio_to_ingest": round(sync_rate / ingest_rate),
    }))
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
