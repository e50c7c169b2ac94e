//! The in-memory wire: kernels connected inside one process, the Rust form of picostack's
//! `alice.spawnWire()(bob.spawnWire())`.
//!
//! A [`Peer`] wraps a kernel and the sync [`Protocol`]; [`Peer::connect`] joins two peers with a
//! pair of bounded channels carrying encoded sync messages (so the codecs are exercised as on a
//! socket) and spawns one tokio task per direction; each peer also runs one ticker task that
//! sends its machine [`Event::Tick`]. The wire is a thin shell: it turns connects, bytes and
//! ticks into [`Event`]s and carries out the outputs. A full channel drops the message and
//! counts it; the tick repairs the loss (a want unanswered for two ticks is asked again, heads
//! are reconciled again). Dropping the [`Wire`] disconnects.
//!
//! Needs a tokio runtime with the time driver. Message handling runs on tokio's blocking pool,
//! because the kernel may commit to a blocking store (RocksDB); [`Peer::create_block`] and
//! [`Peer::dispatch`] block the caller likewise, so async callers should wrap them in
//! `spawn_blocking` when the store is durable.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::block::Block;
use crate::kernel::{Error, Kernel, Report};
use crate::slice::{Slice, Subscription};
use crate::sync::{Event, Output, Protocol};

/// Messages buffered per direction before the wire drops them.
const CHANNEL_CAPACITY: usize = 1024;
/// How often a peer's machine gets [`Event::Tick`]: heads reconciled, lost wants asked again,
/// held blocks released, expired ones collected, missing bodies fetched.
const TICK: Duration = Duration::from_millis(200);

struct Inner {
    kernel: Kernel,
    sync: Protocol<u64>,
    links: BTreeMap<u64, mpsc::Sender<Vec<u8>>>,
    next_link: u64,
    dropped: u64,
    errors: u64,
    /// Fault injection: messages still to drop on sending.
    drop_next: u64,
    /// The task that sends this peer's machine its ticks (one per peer, not per link).
    ticker: Option<JoinHandle<()>>,
}

impl Inner {
    /// Hands `event` to the machine and carries out its outputs.
    fn event(&mut self, event: Event<u64>) -> Result<(), Error> {
        let step = self.sync.event(&mut self.kernel, event)?;
        for output in step.outputs {
            match output {
                Output::Send { to, message } => {
                    let Some(link) = self.links.get(&to) else {
                        continue;
                    };
                    if self.drop_next > 0 {
                        self.drop_next -= 1;
                        self.dropped += 1;
                    } else if link.try_send(message.encode()).is_err() {
                        self.dropped += 1;
                    }
                }
                // The machine has forgotten the peer; closing the channel ends the link.
                Output::Disconnect { peer, .. } => {
                    self.links.remove(&peer);
                }
            }
        }
        Ok(())
    }
}

/// A kernel that can be wired to others in the same process. Clones share the kernel.
#[derive(Clone)]
pub struct Peer {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").finish_non_exhaustive()
    }
}

impl Peer {
    /// Wraps `kernel`.
    pub fn new(kernel: Kernel) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                kernel,
                sync: Protocol::default(),
                links: BTreeMap::new(),
                next_link: 0,
                dropped: 0,
                errors: 0,
                drop_next: 0,
                ticker: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Runs `f` with the kernel (locked for the duration).
    pub fn with<R>(&self, f: impl FnOnce(&mut Kernel) -> R) -> R {
        f(&mut self.lock().kernel)
    }

    /// Runs `f` with the sync machine (locked for the duration): to read its counters.
    pub fn with_sync<R>(&self, f: impl FnOnce(&Protocol<u64>) -> R) -> R {
        f(&self.lock().sync)
    }

    /// Creates a block on the own feed and pushes it to connected peers.
    ///
    /// # Errors
    /// As [`Kernel::create_block`].
    pub fn create_block(&self, body: impl Into<Vec<u8>>) -> Result<Arc<Block>, Error> {
        let mut inner = self.lock();
        let (block, report) = inner.kernel.create_block_reported(body)?;
        inner.event(Event::Local(report))?;
        Ok(block)
    }

    /// Offers blocks to the kernel and pushes what it accepts to connected peers.
    ///
    /// # Errors
    /// As [`Kernel::dispatch`].
    pub fn dispatch(&self, blocks: impl IntoIterator<Item = Block>) -> Result<Report, Error> {
        let mut inner = self.lock();
        let report = inner.kernel.dispatch(blocks)?;
        inner.event(Event::Local(report.clone()))?;
        Ok(report)
    }

    /// A stream of slice `S`'s state (see [`Kernel::subscribe`]).
    ///
    /// # Errors
    /// [`Error::UnknownSlice`].
    pub fn subscribe<S: Slice>(&self) -> Result<Subscription<S::State>, Error> {
        self.lock().kernel.subscribe::<S>()
    }

    /// Messages dropped because a channel was full (or by [`Peer::drop_next_messages`]).
    pub fn dropped_messages(&self) -> u64 {
        self.lock().dropped
    }

    /// Fault injection for tests: the next `n` messages this peer sends are dropped, as a full
    /// channel drops them, and counted in [`Peer::dropped_messages`].
    pub fn drop_next_messages(&self, n: u64) {
        self.lock().drop_next += n;
    }

    /// Store errors met while handling messages and ticks (the wire stops on the first).
    pub fn errors(&self) -> u64 {
        self.lock().errors
    }

    fn add_link(&self, tx: mpsc::Sender<Vec<u8>>) -> u64 {
        let mut inner = self.lock();
        let link = inner.next_link;
        inner.next_link += 1;
        inner.links.insert(link, tx);
        link
    }

    fn greet(&self, link: u64) {
        let mut inner = self.lock();
        // A greeting only reads the kernel; count a failure like any other.
        if inner.event(Event::Connected(link)).is_err() {
            inner.errors += 1;
        }
    }

    fn remove_link(&self, link: u64) {
        let mut inner = self.lock();
        inner.links.remove(&link);
        // Disconnecting touches no store: it cannot fail.
        let _ = inner.event(Event::Disconnected(link));
    }

    fn on_bytes(&self, link: u64, bytes: Vec<u8>) -> Result<(), Error> {
        self.lock().event(Event::Message { from: link, bytes })
    }

    /// Starts the ticker unless it runs.
    fn ensure_ticker(&self) {
        let mut inner = self.lock();
        if inner.ticker.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        inner.ticker = Some(tokio::spawn(tick(Arc::downgrade(&self.inner))));
    }

    /// Connects this peer to `other`: both greet each other with their heads, catch up on what
    /// they lack, and push new blocks from then on, until the returned [`Wire`] is dropped.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn connect(&self, other: &Peer) -> Wire {
        let (to_other, from_self) = mpsc::channel(CHANNEL_CAPACITY);
        let (to_self, from_other) = mpsc::channel(CHANNEL_CAPACITY);
        self.ensure_ticker();
        other.ensure_ticker();
        let here = self.add_link(to_other);
        let there = other.add_link(to_self);
        let tasks = [
            tokio::spawn(run(self.clone(), here, from_other)),
            tokio::spawn(run(other.clone(), there, from_self)),
        ];
        self.greet(here);
        other.greet(there);
        Wire {
            ends: [(self.clone(), here), (other.clone(), there)],
            tasks,
        }
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic while holding the lock leaves a kernel that is still consistent at the last
    // dispatch boundary, so keep going.
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

/// Carries one direction of a link: bytes from the other end into this peer's machine.
async fn run(peer: Peer, link: u64, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = rx.recv().await {
        // Handling runs the kernel, which may write to a blocking store (RocksDB): keep it
        // off the async reactor.
        let handler = peer.clone();
        let handled = tokio::task::spawn_blocking(move || handler.on_bytes(link, bytes)).await;
        let Ok(result) = handled else {
            break; // the runtime is shutting down
        };
        if result.is_err() {
            peer.lock().errors += 1;
            break;
        }
    }
    peer.remove_link(link);
}

/// Sends the peer's machine [`Event::Tick`] every [`TICK`] until the peer is gone. Holds the
/// peer weakly, so a dropped peer's ticker ends by itself.
async fn tick(inner: Weak<Mutex<Inner>>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        let Some(inner) = inner.upgrade() else {
            break;
        };
        let ticking = inner.clone();
        let handled = tokio::task::spawn_blocking(move || lock(&ticking).event(Event::Tick)).await;
        match handled {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                lock(&inner).errors += 1;
                break;
            }
            Err(_) => break, // the runtime is shutting down
        }
    }
}

/// A live connection between two [`Peer`]s; dropping it disconnects them.
pub struct Wire {
    ends: [(Peer, u64); 2],
    tasks: [JoinHandle<()>; 2],
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire").finish_non_exhaustive()
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for (peer, link) in &self.ends {
            peer.remove_link(*link);
        }
    }
}
