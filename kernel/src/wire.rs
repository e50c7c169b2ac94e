//! The in-memory wire: kernels connected inside one process, the Rust form of picostack's
//! `alice.spawnWire()(bob.spawnWire())`.
//!
//! A [`Peer`] wraps a kernel and the sync [`Protocol`]; [`Peer::connect`] joins two peers with a
//! pair of bounded channels carrying encoded sync messages (so the codecs are exercised as on a
//! socket) and spawns one tokio task per direction. A full channel drops the message and counts
//! it; the periodic heads exchange repairs the loss. Dropping the [`Wire`] disconnects.
//!
//! Needs a tokio runtime with the time driver. Message handling runs on tokio's blocking pool,
//! because the kernel may commit to a blocking store (RocksDB); [`Peer::create_block`] and
//! [`Peer::dispatch`] block the caller likewise, so async callers should wrap them in
//! `spawn_blocking` when the store is durable.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::block::Block;
use crate::kernel::{Error, Kernel, Report};
use crate::slice::{Slice, Subscription};
use crate::sync::{Output, Protocol};

/// Messages buffered per direction before the wire drops them.
const CHANNEL_CAPACITY: usize = 1024;
/// How often each end re-sends its heads, releases held blocks and collects expired ones.
const TICK: Duration = Duration::from_millis(200);

struct Inner {
    kernel: Kernel,
    sync: Protocol<u64>,
    links: BTreeMap<u64, mpsc::Sender<Vec<u8>>>,
    next_link: u64,
    dropped: u64,
    errors: u64,
}

impl Inner {
    fn route(&mut self, outputs: Vec<Output<u64>>) {
        for output in outputs {
            match output {
                Output::Send { to, message } => {
                    let Some(link) = self.links.get(&to) else {
                        continue;
                    };
                    if link.try_send(message.encode()).is_err() {
                        self.dropped += 1;
                    }
                }
                Output::Disconnect { peer, .. } => {
                    self.links.remove(&peer);
                    self.sync.disconnect(&peer);
                }
            }
        }
    }

    fn announce(&mut self, report: &Report, except: Option<&u64>) {
        let outputs = self.sync.announce(report, except);
        self.route(outputs);
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
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a kernel that is still consistent at the last
        // dispatch boundary, so keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` with the kernel (locked for the duration).
    pub fn with<R>(&self, f: impl FnOnce(&mut Kernel) -> R) -> R {
        f(&mut self.lock().kernel)
    }

    /// Creates a block on the own feed and pushes it to connected peers.
    ///
    /// # Errors
    /// As [`Kernel::create_block`].
    pub fn create_block(&self, body: impl Into<Vec<u8>>) -> Result<Arc<Block>, Error> {
        let mut inner = self.lock();
        let block = inner.kernel.create_block(body)?;
        let report = Report {
            accepted: vec![block.clone()],
            ..Report::default()
        };
        inner.announce(&report, None);
        Ok(block)
    }

    /// Offers blocks to the kernel and pushes what it accepts to connected peers.
    ///
    /// # Errors
    /// As [`Kernel::dispatch`].
    pub fn dispatch(&self, blocks: impl IntoIterator<Item = Block>) -> Result<Report, Error> {
        let mut inner = self.lock();
        let report = inner.kernel.dispatch(blocks)?;
        inner.announce(&report, None);
        Ok(report)
    }

    /// A stream of slice `S`'s state (see [`Kernel::subscribe`]).
    ///
    /// # Errors
    /// [`Error::UnknownSlice`].
    pub fn subscribe<S: Slice>(&self) -> Result<Subscription<S::State>, Error> {
        self.lock().kernel.subscribe::<S>()
    }

    /// Messages dropped because a channel was full.
    pub fn dropped_messages(&self) -> u64 {
        self.lock().dropped
    }

    /// Store errors met while handling messages (the wire stops on the first).
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
        let Inner { kernel, sync, .. } = &mut *inner;
        let outputs = sync.connect(kernel, link);
        inner.route(outputs);
    }

    fn remove_link(&self, link: u64) {
        let mut inner = self.lock();
        inner.links.remove(&link);
        inner.sync.disconnect(&link);
    }

    fn on_bytes(&self, link: u64, bytes: &[u8]) -> Result<(), Error> {
        let mut inner = self.lock();
        let Inner { kernel, sync, .. } = &mut *inner;
        let (outputs, _) = sync.handle_bytes(kernel, &link, bytes)?;
        inner.route(outputs);
        Ok(())
    }

    fn on_tick(&self, link: u64) -> Result<(), Error> {
        let mut inner = self.lock();
        if inner.kernel.next_wakeup().is_some() {
            let report = inner.kernel.poll()?;
            inner.announce(&report, None);
        }
        let now = inner.kernel.now();
        if inner.kernel.next_expiry().is_some_and(|t| t <= now) {
            inner.kernel.gc(now)?;
        }
        let Inner { kernel, sync, .. } = &mut *inner;
        let outputs = sync.heads(kernel, &link);
        inner.route(outputs);
        Ok(())
    }

    /// Connects this peer to `other`: both greet each other with their heads, catch up on what
    /// they lack, and push new blocks from then on, until the returned [`Wire`] is dropped.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn connect(&self, other: &Peer) -> Wire {
        let (to_other, from_self) = mpsc::channel(CHANNEL_CAPACITY);
        let (to_self, from_other) = mpsc::channel(CHANNEL_CAPACITY);
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

async fn run(peer: Peer, link: u64, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        // Handling runs the kernel, which may write to a blocking store (RocksDB): keep it
        // off the async reactor.
        let handled = tokio::select! {
            biased;
            bytes = rx.recv() => match bytes {
                Some(bytes) => {
                    let peer = peer.clone();
                    tokio::task::spawn_blocking(move || peer.on_bytes(link, &bytes)).await
                }
                None => break,
            },
            _ = tick.tick() => {
                let peer = peer.clone();
                tokio::task::spawn_blocking(move || peer.on_tick(link)).await
            }
        };
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
