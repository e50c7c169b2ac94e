//! picostack's clock kernel, in Rust: two peers wired in one process, Alice creates a tick,
//! and both observers print the new clock state. Each peer keeps its blocks in an embedded
//! RocksDB store under `$BLOCKEND_CLOCK_DIR` (default: the system's temp dir), so a second run
//! starts from the last tick.
//!
//! ```text
//! cargo run --example clock
//! ```

use std::time::Duration;

use anyhow::Context as _;
use blockend::kernel::store::RocksStore;
use blockend::kernel::wire::Peer;
use blockend::kernel::{Application, BlockId, Context, Kernel, Registry, Slice, Verdict};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// A tick block's body: `{"tick": <ms>}`.
#[derive(Serialize, Deserialize)]
struct Tick {
    tick: u64,
}

/// The clock slice: keeps the latest tick time.
struct Clock;

impl Slice for Clock {
    type State = u64;

    fn name(&self) -> &str {
        "clock"
    }

    fn initial(&self) -> u64 {
        0
    }

    fn filter(&self, ctx: &Context<'_>, _: &u64) -> Verdict {
        let Ok(Tick { tick }) = serde_json::from_slice(ctx.body()) else {
            return Verdict::Ignore; // not a tick: silently ignore
        };
        // The kernel holds blocks dated in the future until their time comes; a tick that
        // claims a time after its own block's is from the future for good.
        if tick > ctx.time() {
            return Verdict::Reject(format!(
                "tick {tick} is later than the block's own time {}",
                ctx.time()
            ));
        }
        Verdict::Accept
    }

    fn reduce(&self, ctx: &Context<'_>, state: &mut u64) {
        if let Ok(Tick { tick }) = serde_json::from_slice(ctx.body()) {
            // The latest tick wins whatever the arrival order.
            *state = (*state).max(tick);
        }
    }

    fn commutative(&self) -> bool {
        true
    }
}

/// The application: `class Kernel extends SimpleKernel`, registering the clock slice.
struct ClockKernel;

impl Application for ClockKernel {
    fn register(&self, slices: &mut Registry) {
        slices.add(Clock);
    }
}

/// The application's action, as an extension of the peer.
trait ClockActions {
    fn create_tick(&self) -> anyhow::Result<BlockId>;
}

impl ClockActions for Peer {
    fn create_tick(&self) -> anyhow::Result<BlockId> {
        let now = self.with(|kernel| kernel.now());
        let body = serde_json::to_vec(&Tick { tick: now })?;
        Ok(self.create_block(body)?.id())
    }
}

/// Prints every state `name`'s peer sees; returns once the state reaches `target`.
async fn observe(
    name: &str,
    mut states: impl futures::Stream<Item = u64> + Unpin,
    target: u64,
) -> anyhow::Result<()> {
    while let Some(state) = states.next().await {
        println!("{name}: {state}");
        if state >= target {
            return Ok(());
        }
    }
    anyhow::bail!("{name}'s state stream ended")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Spawn two peers, each on its own embedded RocksDB store (kept between runs).
    let dir = std::env::var_os("BLOCKEND_CLOCK_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("blockend-clock"));
    let open = |name: &str| -> anyhow::Result<Peer> {
        let path = dir.join(name);
        let store = RocksStore::open(&path).with_context(|| format!("opening {name}'s store"))?;
        eprintln!("{name}'s store: {}", path.display());
        Ok(Peer::new(
            Kernel::builder(&ClockKernel).with_store(store).open()?,
        ))
    };
    let alice = open("alice")?;
    let bob = open("bob")?;

    // Wire them up.
    let _wire = alice.connect(&bob);

    // Attach the state observers (each prints the current state at once, then every change).
    let (on_alice, on_bob) = (alice.subscribe::<Clock>()?, bob.subscribe::<Clock>()?);
    let target = alice.with(|k| k.now());
    let observers = tokio::spawn(async move {
        tokio::try_join!(
            observe("Alice", on_alice, target),
            observe("Bob", on_bob, target)
        )
    });

    alice.create_tick()?;

    // Both kernels log the new state.
    tokio::time::timeout(Duration::from_secs(10), observers)
        .await
        .context("the tick did not reach both peers within 10 s")???;
    Ok(())
}
