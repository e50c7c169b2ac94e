//! The kernel actor: owns the kernel and the sync machine on a thread of its own (RocksDB calls
//! block), takes requests from the network and the local API, and sends what the sync machine
//! asks for to the network actor.

use std::sync::{Arc, Mutex};

use blockend_kernel::sync::{self, DisconnectReason, Message, Output, Protocol, Want};
use blockend_kernel::{Block, BlockId, Kernel, Outcome, Report};
use libp2p::gossipsub::{MessageAcceptance, MessageId};
use libp2p::PeerId;
use tokio::sync::{broadcast, mpsc, watch};

use super::{Config, Error, KernelCmd, NetCmd, Stats};
use crate::api;
use crate::app::NodeApp;

pub(super) struct Actor {
    kernel: Kernel,
    app: Arc<dyn NodeApp>,
    sync: Protocol<PeerId>,
    limits: sync::Limits,
    max_invalid: u32,
    net: mpsc::Sender<NetCmd>,
    blocks: broadcast::Sender<Arc<Block>>,
    changes: watch::Sender<u64>,
    stats: Arc<Mutex<Stats>>,
}

impl Actor {
    pub(super) fn new(
        kernel: Kernel,
        app: Arc<dyn NodeApp>,
        config: &Config,
        net: mpsc::Sender<NetCmd>,
        blocks: broadcast::Sender<Arc<Block>>,
        changes: watch::Sender<u64>,
        stats: Arc<Mutex<Stats>>,
    ) -> Self {
        let mut sync_config = config.sync;
        sync_config.max_invalid = config.max_invalid;
        Self {
            kernel,
            app,
            sync: Protocol::new(sync_config),
            limits: config.sync.limits,
            max_invalid: config.max_invalid,
            net,
            blocks,
            changes,
            stats,
        }
    }

    /// Serves requests until shutdown (or until every sender is gone), then closes the kernel,
    /// which writes a state snapshot.
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<KernelCmd>) {
        while let Some(cmd) = rx.blocking_recv() {
            match cmd {
                KernelCmd::Connected(peer) => {
                    let out = self.sync.connect(&self.kernel, peer);
                    self.route(out);
                }
                KernelCmd::Disconnected(peer) => self.sync.disconnect(&peer),
                KernelCmd::Sync { peer, bytes } => self.on_sync(peer, &bytes),
                KernelCmd::Gossip { source, id, bytes } => self.on_gossip(source, id, &bytes),
                KernelCmd::Tick => self.on_tick(),
                KernelCmd::Append(body, reply) => {
                    let _ = reply.send(self.append(body));
                }
                KernelCmd::State(slice, reply) => {
                    let _ = reply.send(self.state(slice));
                }
                KernelCmd::Blocks(author, reply) => {
                    let _ = reply.send(api::blocks(&self.kernel, author));
                }
                KernelCmd::Stats(reply) => {
                    let _ = reply.send(self.snapshot_stats());
                }
                KernelCmd::Shutdown => break,
            }
        }
        drop(self.kernel.close());
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().expect("stats lock")
    }

    fn on_sync(&mut self, peer: PeerId, bytes: &[u8]) {
        {
            let mut stats = self.stats();
            stats.bytes_received += bytes.len() as u64;
            stats.peer(&peer).bytes_received += bytes.len() as u64;
        }
        let message = match Message::decode(bytes, &self.limits) {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(%peer, %error, "malformed sync message");
                self.stats().malformed();
                let out = self.sync.malformed(&peer, &error);
                self.route(out);
                self.blame(peer, 1);
                return;
            }
        };
        let ids: Vec<BlockId> = match &message {
            Message::Blocks(blocks) => blocks.iter().map(|b| b.id()).collect(),
            _ => Vec::new(),
        };
        if !ids.is_empty() {
            let n = ids.len() as u64;
            let mut stats = self.stats();
            stats.blocks_received += n;
            stats.sync_blocks_received += n;
            stats.peer(&peer).blocks_received += n;
        }
        match self.sync.handle(&mut self.kernel, &peer, message) {
            Ok((out, report)) => {
                if let Some(report) = report {
                    let invalid = self.account(&ids, &report);
                    self.published(&report);
                    self.blame(peer, invalid);
                }
                self.route(out);
            }
            Err(error) => tracing::error!(%error, "kernel failed on a sync message"),
        }
    }

    fn on_gossip(&mut self, source: PeerId, id: MessageId, bytes: &[u8]) {
        {
            let mut stats = self.stats();
            stats.bytes_received += bytes.len() as u64;
            stats.peer(&source).bytes_received += bytes.len() as u64;
        }
        let block = match Block::decode(bytes) {
            Ok(block) => block,
            Err(error) => {
                tracing::debug!(peer = %source, %error, "malformed gossip message");
                self.stats().malformed();
                self.validate(source, id, MessageAcceptance::Reject);
                self.blame(source, 1);
                return;
            }
        };
        {
            let mut stats = self.stats();
            stats.blocks_received += 1;
            stats.gossip_blocks_received += 1;
            stats.peer(&source).blocks_received += 1;
        }
        let (block_id, author) = (block.id(), block.author());
        let report = match self.kernel.dispatch([block]) {
            Ok(report) => report,
            Err(error) => {
                tracing::error!(%error, "kernel failed on a gossip message");
                self.validate(source, id, MessageAcceptance::Ignore);
                return;
            }
        };
        let invalid = self.account(&[block_id], &report);
        let verdict = match report.outcome(&block_id) {
            Some(Outcome::Invalid(_)) => MessageAcceptance::Reject,
            Some(
                Outcome::Accepted | Outcome::Duplicate | Outcome::Collected | Outcome::Fork { .. },
            ) => MessageAcceptance::Accept,
            Some(Outcome::WaitingForParent) => {
                // Ask the relay for the gap rather than wait for the next heads exchange.
                let from_seq = self.kernel.head(&author).map_or(0, |h| h.seq + 1);
                let want = Message::Want(vec![Want { author, from_seq }]);
                self.send(source, &want);
                MessageAcceptance::Ignore
            }
            _ => MessageAcceptance::Ignore,
        };
        self.validate(source, id, verdict);
        self.published(&report);
        self.blame(source, invalid);
    }

    fn on_tick(&mut self) {
        match self.kernel.poll() {
            Ok(report) => {
                self.published(&report);
                let out = self.sync.announce(&report, None);
                self.route(out);
            }
            Err(error) => tracing::error!(%error, "kernel poll failed"),
        }
        let now = self.kernel.now();
        match self.kernel.gc(now) {
            Ok(gc) if gc != Default::default() => self.bump(),
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "garbage collection failed"),
        }
        let out = self.sync.tick(&self.kernel);
        self.route(out);
    }

    fn append(&mut self, body: Vec<u8>) -> Result<Arc<Block>, Error> {
        let block = self.kernel.create_block(body)?;
        let _ = self.blocks.send(block.clone());
        self.bump();
        {
            let mut stats = self.stats();
            stats.blocks_sent += 1;
            stats.bytes_sent += block.encoded_len() as u64;
        }
        let _ = self.net.blocking_send(NetCmd::Publish(block.clone()));
        Ok(block)
    }

    fn state(&self, slice: Option<String>) -> Result<serde_json::Value, Error> {
        let name = slice.unwrap_or_else(|| self.app.default_slice().to_owned());
        let state = self
            .app
            .state_json(&self.kernel, &name)
            .ok_or_else(|| Error::UnknownSlice(name.clone()))?;
        Ok(api::state_with_digests(&self.kernel, &name, state))
    }

    fn snapshot_stats(&self) -> Stats {
        let kernel = self.kernel.stats();
        let mut stats = self.stats().clone();
        stats.blocks_stored = kernel.blocks;
        stats.evicted = kernel.evicted_blocks;
        stats.collected = kernel.collected;
        stats
    }

    /// Counts the outcomes of the blocks a peer sent; returns how many were invalid.
    fn account(&self, ids: &[BlockId], report: &Report) -> u32 {
        let mut stats = self.stats();
        let mut invalid = 0;
        for id in ids {
            if let Some(outcome) = report.outcome(id) {
                invalid += u32::from(outcome.is_invalid());
                stats.outcome(outcome);
            }
        }
        invalid
    }

    /// Tells local subscribers what a dispatch changed.
    fn published(&mut self, report: &Report) {
        if report.accepted.is_empty() && report.proofs.is_empty() {
            return;
        }
        for block in &report.accepted {
            let _ = self.blocks.send(block.clone());
        }
        self.bump();
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Counts invalid data against a peer; past the budget, bans it.
    fn blame(&mut self, peer: PeerId, invalid: u32) {
        if invalid == 0 {
            return;
        }
        let total = {
            let mut stats = self.stats();
            let counters = stats.peer(&peer);
            counters.invalid = counters.invalid.saturating_add(invalid);
            counters.invalid
        };
        if total > self.max_invalid {
            self.sync.disconnect(&peer);
            let _ = self.net.blocking_send(NetCmd::Ban(peer));
        }
    }

    fn validate(&self, source: PeerId, id: MessageId, verdict: MessageAcceptance) {
        let _ = self.net.blocking_send(NetCmd::Validate {
            source,
            id,
            verdict,
        });
    }

    fn send(&self, to: PeerId, message: &Message) {
        let bytes = message.encode();
        let blocks = match message {
            Message::Blocks(blocks) => blocks.len() as u64,
            _ => 0,
        };
        {
            let mut stats = self.stats();
            stats.bytes_sent += bytes.len() as u64;
            stats.blocks_sent += blocks;
            let peer = stats.peer(&to);
            peer.bytes_sent += bytes.len() as u64;
            peer.blocks_sent += blocks;
        }
        let _ = self.net.blocking_send(NetCmd::Send { to, bytes });
    }

    fn route(&mut self, outputs: Vec<Output<PeerId>>) {
        for output in outputs {
            match output {
                Output::Send { to, message } => self.send(to, &message),
                Output::Disconnect { peer, reason } => {
                    let cmd = match reason {
                        DisconnectReason::TooManyInvalid => NetCmd::Ban(peer),
                        _ => NetCmd::Disconnect(peer),
                    };
                    let _ = self.net.blocking_send(cmd);
                }
            }
        }
    }
}
