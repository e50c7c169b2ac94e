//! The kernel actor: owns the kernel and the sync machine on a thread of its own (RocksDB calls
//! block), takes requests from the network and the local API, and sends what the sync machine
//! asks for to the network actor.
//!
//! Toward the sync machine it is a thin shell: connects, sync messages, gossip blocks and
//! ticks become `sync::Event`s, and the machine's outputs become network commands. Who is
//! penalised, and when a peer is over its budget, is the machine's decision alone; the actor
//! bans on `Output::Disconnect { reason: TooManyInvalid }` and mirrors the machine's penalties
//! in the per-peer counters.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blockend_kernel::sync::{
    DisconnectReason, Event, Message, Output, Protocol, Step, DISSEMINATION,
};
use blockend_kernel::{Block, BlockId, Kernel, Outcome, PublicKey, Report};
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
    net: mpsc::Sender<NetCmd>,
    blocks: broadcast::Sender<Arc<Block>>,
    changes: watch::Sender<u64>,
    stats: Arc<Mutex<Stats>>,
    /// After a repair: the own feed's height to recover from peers, and until when appends
    /// wait for it.
    recovering: Option<(u64, std::time::Instant)>,
    /// Gossip messages whose block waits in the mempool (an orphan, a block from the future),
    /// with when they came: their verdict waits for the kernel's, so gossipsub forwards a
    /// block once its parent arrives, as it would have had they come in order (and as the
    /// simulator models it). At most `DISSEMINATION.max_open_verdicts`; after
    /// `DISSEMINATION.verdict_wait_ms` (gossipsub keeps an unvalidated message for a few
    /// heartbeats) they are ignored.
    pending_verdicts: BTreeMap<BlockId, (PeerId, MessageId, Instant)>,
}

/// How long a gossip verdict waits for the kernel's.
const VERDICT_WAIT: Duration = Duration::from_millis(DISSEMINATION.verdict_wait_ms);

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
        Self {
            kernel,
            app,
            sync: Protocol::new(config.sync),
            net,
            blocks,
            changes,
            stats,
            recovering: None,
            pending_verdicts: BTreeMap::new(),
        }
    }

    /// Serves requests until shutdown (or until every sender is gone), then closes the kernel,
    /// which writes a state snapshot.
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<KernelCmd>) {
        while let Some(cmd) = rx.blocking_recv() {
            match cmd {
                KernelCmd::Connected(peer) => {
                    self.event(Event::Connected(peer));
                }
                KernelCmd::Disconnected(peer) => {
                    self.event(Event::Disconnected(peer));
                }
                KernelCmd::Sync { peer, bytes } => self.on_sync(peer, bytes),
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
                KernelCmd::Follow {
                    author,
                    follow,
                    reply,
                } => {
                    let _ = reply.send(self.follow(author, follow));
                }
                KernelCmd::Feeds(reply) => {
                    let _ = reply.send(self.kernel.retention());
                }
                KernelCmd::RecoverOwnFeed { seq, until } => {
                    let have = self.kernel.head(&self.kernel.author()).map(|h| h.seq);
                    if have < Some(seq) {
                        tracing::warn!(
                            have = ?have,
                            want = seq,
                            "the store was repaired and its own feed lost blocks; asking peers for them before accepting appends"
                        );
                        self.recovering = Some((seq, until));
                    }
                }
                KernelCmd::Read(read) => read(&self.kernel),
                KernelCmd::Import(blocks, reply) => {
                    let _ = reply.send(self.import(blocks));
                }
                KernelCmd::Shutdown => break,
            }
        }
        drop(self.kernel.close());
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().expect("stats lock")
    }

    /// Hands `event` to the sync machine, carries out its outputs and counts its penalties.
    /// A store failure is logged; the event is then lost (anti-entropy repairs it).
    fn event(&mut self, event: Event<PeerId>) -> Option<Step<PeerId>> {
        match self.sync.event(&mut self.kernel, event) {
            Ok(mut step) => {
                if !step.penalties.is_empty() {
                    let mut stats = self.stats();
                    for (peer, count) in &step.penalties {
                        let counters = stats.peer(peer);
                        counters.invalid = counters.invalid.saturating_add(*count);
                    }
                }
                let outputs = std::mem::take(&mut step.outputs);
                self.route(outputs);
                if let Some(report) = &step.report {
                    self.settle_verdicts(report);
                }
                Some(step)
            }
            Err(error) => {
                tracing::error!(%error, "the kernel failed on a sync event");
                None
            }
        }
    }

    fn on_sync(&mut self, peer: PeerId, bytes: Vec<u8>) {
        {
            let mut stats = self.stats();
            stats.bytes_received += bytes.len() as u64;
            stats.peer(&peer).bytes_received += bytes.len() as u64;
        }
        let Some(step) = self.event(Event::Message { from: peer, bytes }) else {
            return;
        };
        if let Some(error) = &step.malformed {
            tracing::debug!(%peer, %error, "malformed sync message");
            self.stats().malformed();
        }
        if !step.received.is_empty() {
            let n = step.received.len() as u64;
            let mut stats = self.stats();
            stats.blocks_received += n;
            stats.sync_blocks_received += n;
            stats.peer(&peer).blocks_received += n;
        }
        if let Some(report) = &step.report {
            self.account(&step.received, report);
            self.published(report);
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
                self.event(Event::Malformed {
                    from: source,
                    error,
                });
                return;
            }
        };
        {
            let mut stats = self.stats();
            stats.blocks_received += 1;
            stats.gossip_blocks_received += 1;
            stats.peer(&source).blocks_received += 1;
        }
        let block_id = block.id();
        let pushed = Event::Pushed {
            from: source,
            blocks: vec![Arc::new(block)],
        };
        let Some(report) = self.event(pushed).and_then(|step| step.report) else {
            self.validate(source, id, MessageAcceptance::Ignore);
            return;
        };
        // A waiting block's verdict waits for the kernel's (see `pending_verdicts`); the sync
        // machine asks the relay for the gap on its next tick all the same.
        match report.outcome(&block_id).and_then(verdict) {
            Some(verdict) => self.validate(source, id, verdict),
            None if self.pending_verdicts.len() < DISSEMINATION.max_open_verdicts
                && matches!(
                    report.outcome(&block_id),
                    Some(Outcome::WaitingForParent | Outcome::TimestampFromFuture { .. })
                ) =>
            {
                self.pending_verdicts
                    .insert(block_id, (source, id, Instant::now()));
            }
            None => self.validate(source, id, MessageAcceptance::Ignore),
        }
        self.account(&[block_id], &report);
        self.published(&report);
    }

    /// The machine's tick: anti-entropy, lost wants, held blocks, garbage collection, missing
    /// bodies.
    fn on_tick(&mut self) {
        self.stats().ticks += 1;
        let now = Instant::now();
        let expired: Vec<BlockId> = self
            .pending_verdicts
            .iter()
            .filter(|(_, (_, _, at))| now.duration_since(*at) >= VERDICT_WAIT)
            .map(|(id, _)| *id)
            .collect();
        for block in expired {
            if let Some((source, id, _)) = self.pending_verdicts.remove(&block) {
                self.validate(source, id, MessageAcceptance::Ignore);
            }
        }
        let Some(step) = self.event(Event::Tick) else {
            return;
        };
        if let Some(report) = &step.report {
            self.published(report);
        }
        if step.collected > 0 {
            self.bump();
        }
    }

    /// While the own feed is recovered after a repair, an append waits (the caller gets
    /// [`Error::Recovering`]) until peers have sent the feed back up to the height it had
    /// reached, so no block is signed at a height already used; once the wait is over it goes
    /// on, with one warning.
    fn check_recovery(&mut self) -> Result<(), Error> {
        let Some((want, until)) = self.recovering else {
            return Ok(());
        };
        let have = self.kernel.head(&self.kernel.author()).map(|h| h.seq);
        if have >= Some(want) {
            tracing::info!(
                seq = want,
                "the own feed is back from peers; appends resume"
            );
            self.recovering = None;
            return Ok(());
        }
        let now = std::time::Instant::now();
        if now < until {
            return Err(Error::Recovering {
                have: have.map_or(-1, |s| s as i64),
                want,
                left_ms: until.duration_since(now).as_millis() as u64,
            });
        }
        tracing::warn!(
            have = ?have,
            want,
            "no peer sent the own feed's lost blocks back in time; appending anyway: a peer that still holds them will see a fork of this feed"
        );
        self.recovering = None;
        Ok(())
    }

    fn append(&mut self, body: Vec<u8>) -> Result<Arc<Block>, Error> {
        self.check_recovery()?;
        let (block, mut report) = self.kernel.create_block_reported(body)?;
        let _ = self.blocks.send(block.clone());
        self.bump();
        // The own block goes out by gossipsub; whatever else the call changed (held blocks
        // released first, with their blame and fork proofs) is the machine's to spread.
        report.accepted.retain(|b| b.id() != block.id());
        if !report.accepted.is_empty() || !report.proofs.is_empty() || !report.blame.is_empty() {
            self.published(&report);
            self.event(Event::Local(report));
        }
        {
            let mut stats = self.stats();
            stats.blocks_sent += 1;
            stats.bytes_sent += block.encoded_len() as u64;
        }
        let _ = self.net.blocking_send(NetCmd::Publish(block.clone()));
        Ok(block)
    }

    /// An import's batch: dispatched with no source; subscribers hear of it, fork proofs
    /// spread, and the accepted blocks reach peers by reconciliation (pushing a whole import
    /// to every peer would flood them).
    fn import(&mut self, blocks: Vec<Block>) -> Result<Report, Error> {
        let report = self.kernel.dispatch(blocks)?;
        self.settle_verdicts(&report);
        self.published(&report);
        if !report.proofs.is_empty() {
            let mut proofs = report.clone();
            proofs.accepted.clear();
            self.event(Event::Local(proofs));
        }
        Ok(report)
    }

    /// Follows or unfollows `author`; returns whether that changed anything.
    fn follow(&mut self, author: PublicKey, follow: bool) -> Result<bool, Error> {
        let changed = if follow {
            self.kernel.follow(author)?
        } else {
            self.kernel.unfollow(&author)?
        };
        if changed {
            tracing::info!(%author, follow, "follows changed");
        }
        Ok(changed)
    }

    fn state(&self, slice: Option<String>) -> Result<serde_json::Value, Error> {
        let name = slice.unwrap_or_else(|| self.app.default_slice().to_owned());
        let state = self.app.state_json(&self.kernel, &name)?;
        Ok(api::state_with_digests(&self.kernel, &name, state))
    }

    fn snapshot_stats(&self) -> Stats {
        let mut stats = self.stats().clone();
        stats.update_from(&self.kernel);
        stats
    }

    /// Counts the outcomes of the blocks a peer sent.
    fn account(&self, ids: &[BlockId], report: &Report) {
        let mut stats = self.stats();
        for id in ids {
            if let Some(outcome) = report.outcome(id) {
                stats.outcome(outcome);
            }
        }
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

    /// Gives the gossip messages waiting for the kernel's verdict the one `report` holds.
    fn settle_verdicts(&mut self, report: &Report) {
        if self.pending_verdicts.is_empty() {
            return;
        }
        for (block, outcome) in report.outcomes() {
            let Some(verdict) = verdict(outcome) else {
                continue;
            };
            if let Some((source, id, _)) = self.pending_verdicts.remove(block) {
                self.validate(source, id, verdict);
            }
        }
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n += 1);
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

/// The gossip verdict for a kernel outcome, `None` while the block waits (or for outcomes
/// gossipsub should neither forward nor punish, which `on_gossip` ignores).
fn verdict(outcome: &Outcome) -> Option<MessageAcceptance> {
    match outcome {
        Outcome::Invalid(_) => Some(MessageAcceptance::Reject),
        Outcome::Accepted | Outcome::Duplicate | Outcome::Collected | Outcome::Fork { .. } => {
            Some(MessageAcceptance::Accept)
        }
        _ => None,
    }
}
