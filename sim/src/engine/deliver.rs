//! Arrivals: sync messages go through the peer's `sync::Protocol`; pushed blocks wait in the
//! peer's inbox and are dispatched together, then forwarded along the mesh.

use std::collections::BTreeMap;
use std::sync::Arc;

use blockend_kernel::sync::{DisconnectReason, Message, Output};
use blockend_kernel::{Block, BlockError, BlockId, DecodeError, Outcome, Report};

use super::{Role, Simulation, NO_HOP};
use crate::error::Error;
use crate::network::Wire;
use crate::topology::PeerId;

/// Where the hop counts of newly counted blocks come from.
enum Hops<'a> {
    /// Pushed blocks carry their own.
    Inbox(&'a [(PeerId, Arc<Block>, u16)]),
    /// Blocks from a sync answer: one more than the sender's.
    From(PeerId),
}

impl Simulation {
    /// Opens every connection of the topology (both sides greet with their heads).
    pub(crate) fn connect_all(&mut self) {
        for p in 0..self.peers.len() {
            let neighbours = self.peers[p].neighbours.clone();
            for q in neighbours {
                self.connect(p as PeerId, q);
            }
        }
    }

    /// `p` greets `q` (the other side greets in its own call).
    pub(crate) fn connect(&mut self, p: PeerId, q: PeerId) {
        let peer = &mut self.peers[p as usize];
        let Some(kernel) = peer.kernel.as_ref() else {
            return;
        };
        let outputs = peer.protocol.connect(kernel, q);
        self.outputs(p, outputs);
    }

    pub(crate) fn deliver(
        &mut self,
        to: PeerId,
        from: PeerId,
        epochs: (u32, u32),
        wire: Wire,
    ) -> Result<(), Error> {
        let (t, f) = (to as usize, from as usize);
        let receiver = &self.peers[t];
        if !receiver.online
            || (receiver.epoch, self.peers[f].epoch) != epochs
            || receiver.banned.contains(&from)
        {
            self.counters.dropped_offline += 1;
            return Ok(());
        }
        self.trace
            .event(self.now, 1, u64::from(to), u64::from(from));
        match wire {
            Wire::Push(blocks) => {
                for (block, _) in &blocks {
                    if self.tracked.ids.contains_key(&block.id()) {
                        self.tracked.deliveries += 1;
                    }
                }
                self.peers[t]
                    .inbox
                    .extend(blocks.into_iter().map(|(b, hop)| (from, b, hop)));
                if self.scenario.mesh.batch_ms == 0 {
                    self.flush(to)?;
                } else {
                    self.schedule_flush(to);
                }
            }
            Wire::Sync(message) => self.on_message(to, from, message)?,
            Wire::Bytes(bytes) => match Message::decode(&bytes, &self.sync_config.limits) {
                Ok(message) => self.on_message(to, from, message)?,
                Err(error) => {
                    if self.peers[t].role == Role::Honest {
                        self.counters.rejections.malformed_messages += 1;
                    }
                    let outputs = self.peers[t].protocol.malformed(&from, &error);
                    self.outputs(to, outputs);
                }
            },
        }
        Ok(())
    }

    fn on_message(&mut self, to: PeerId, from: PeerId, message: Message) -> Result<(), Error> {
        if let Message::Blocks(blocks) = &message {
            let tracked = blocks
                .iter()
                .filter(|b| self.tracked.ids.contains_key(&b.id()))
                .count();
            self.tracked.deliveries += tracked as u64;
        }
        let peer = &mut self.peers[to as usize];
        let Some(kernel) = peer.kernel.as_mut() else {
            return Ok(());
        };
        let (outputs, report) = peer.protocol.handle(kernel, &from, message)?;
        self.outputs(to, outputs);
        if let Some(report) = report {
            self.account(to, &report);
            self.absorb(to, &report, Hops::From(from));
        }
        Ok(())
    }

    /// Dispatches a peer's inbox in one kernel call, blames the senders of invalid blocks,
    /// forwards what is newly counted along the mesh, and spreads fork proofs.
    pub(crate) fn flush(&mut self, to: PeerId) -> Result<(), Error> {
        let t = to as usize;
        self.peers[t].flush_pending = false;
        let inbox = std::mem::take(&mut self.peers[t].inbox);
        if inbox.is_empty() || !self.peers[t].online {
            return Ok(());
        }
        let Some(kernel) = self.peers[t].kernel.as_mut() else {
            return Ok(());
        };
        let report = kernel.dispatch_shared(inbox.iter().map(|(_, b, _)| b.clone()))?;
        self.trace
            .event(self.now, 2, u64::from(to), report.accepted.len() as u64);
        self.account(to, &report);
        if report.invalid() > 0 {
            self.blame(to, &report, &inbox);
        }
        self.absorb(to, &report, Hops::Inbox(&inbox));
        self.forward(to, &report, &inbox);
        let outputs = self.peers[t].protocol.announce(&report, None);
        self.outputs(to, outputs);
        Ok(())
    }

    /// Counts an invalid block against each sender of a copy that is not the one now held
    /// (a forged copy shares the honest block's id, so the id alone does not say who lied).
    fn blame(&mut self, to: PeerId, report: &Report, inbox: &[(PeerId, Arc<Block>, u16)]) {
        let t = to as usize;
        let mut blamed = Vec::new();
        for (id, outcome) in &report.outcomes {
            if !outcome.is_invalid() {
                continue;
            }
            let held = self.peers[t]
                .kernel
                .as_ref()
                .and_then(|k| k.block(id))
                .map(|b| b.fingerprint());
            for (from, block, _) in inbox.iter().filter(|(_, b, _)| b.id() == *id) {
                if held != Some(block.fingerprint()) {
                    blamed.push(*from);
                }
            }
        }
        let error = DecodeError::Malformed { what: "block" };
        for from in blamed {
            let outputs = self.peers[t].protocol.malformed(&from, &error);
            self.outputs(to, outputs);
        }
    }

    /// Counts rejections (at honest peers) and activity.
    fn account(&mut self, to: PeerId, report: &Report) {
        self.counters.activity += report.accepted.len() as u64;
        if self.peers[to as usize].role != Role::Honest {
            return;
        }
        let r = &mut self.counters.rejections;
        for (_, outcome) in &report.outcomes {
            match outcome {
                Outcome::Invalid(BlockError::BadSignature | BlockError::BadKey) => {
                    r.invalid_signature += 1
                }
                Outcome::Invalid(BlockError::TooLarge { .. }) => r.too_large += 1,
                Outcome::Invalid(_) => r.invalid_other += 1,
                Outcome::Rejected { .. } => r.state_rejected += 1,
                Outcome::Fork { .. } => r.forks += 1,
                Outcome::Frozen { .. } => r.frozen += 1,
                Outcome::Duplicate => r.duplicates += 1,
                _ => {}
            }
        }
    }

    /// Records newly counted tracked blocks: first hop, and the peer's progress.
    fn absorb(&mut self, to: PeerId, report: &Report, hops: Hops<'_>) {
        let n = self.peers.len();
        let t = to as usize;
        for block in &report.accepted {
            let Some(&idx) = self.tracked.ids.get(&block.id()) else {
                continue;
            };
            let slot = idx as usize * n + t;
            if self.tracked.hops[slot] != NO_HOP {
                continue;
            }
            let hop = match &hops {
                Hops::Inbox(inbox) => inbox
                    .iter()
                    .filter(|(_, b, _)| b.id() == block.id())
                    .map(|(_, _, h)| *h)
                    .min()
                    .unwrap_or(1),
                Hops::From(from) => {
                    let theirs = self.tracked.hops[idx as usize * n + *from as usize];
                    if theirs == NO_HOP {
                        1
                    } else {
                        theirs.saturating_add(1)
                    }
                }
            };
            self.tracked.hops[slot] = hop;
            let peer = &mut self.peers[t];
            peer.count += 1;
            peer.last_gain = self.now;
        }
    }

    /// Pushes newly counted blocks to every mesh peer that did not send them here, one
    /// message per mesh peer (gossipsub batches messages in one RPC the same way).
    fn forward(&mut self, from: PeerId, report: &Report, inbox: &[(PeerId, Arc<Block>, u16)]) {
        if report.accepted.is_empty() {
            return;
        }
        let n = self.peers.len();
        let f = from as usize;
        let mut senders: BTreeMap<BlockId, Vec<PeerId>> = BTreeMap::new();
        for (sender, block, _) in inbox {
            senders.entry(block.id()).or_default().push(*sender);
        }
        let max = self.sync_config.limits.max_blocks.max(1);
        let mesh = self.peers[f].mesh.clone();
        for q in mesh {
            let mut out: Vec<(Arc<Block>, u16)> = Vec::new();
            for block in &report.accepted {
                if senders.get(&block.id()).is_some_and(|s| s.contains(&q)) {
                    continue;
                }
                let hop = match self.tracked.ids.get(&block.id()) {
                    Some(&idx) => self.tracked.hops[idx as usize * n + f],
                    None => 0,
                };
                out.push((block.clone(), if hop == NO_HOP { 1 } else { hop + 1 }));
            }
            for chunk in out.chunks(max) {
                self.send(from, q, Wire::Push(chunk.to_vec()));
            }
        }
    }

    /// Carries out what a protocol machine asked for.
    pub(crate) fn outputs(&mut self, from: PeerId, outputs: Vec<Output<PeerId>>) {
        for output in outputs {
            match output {
                Output::Send { to, message } => {
                    if matches!(message, Message::Want(_)) {
                        self.counters.wants += 1;
                    }
                    self.send(from, to, Wire::Sync(message));
                }
                Output::Disconnect { peer, reason } => self.drop_link(from, peer, reason),
            }
        }
    }

    /// `by` drops its connection to `peer` for good (both sides forget it).
    fn drop_link(&mut self, by: PeerId, peer: PeerId, reason: DisconnectReason) {
        if self.peers[by as usize].role == Role::Honest
            && reason == DisconnectReason::TooManyInvalid
        {
            self.counters.rejections.disconnects += 1;
        }
        self.trace
            .event(self.now, 3, u64::from(by), u64::from(peer));
        for (a, b) in [(by, peer), (peer, by)] {
            let side = &mut self.peers[a as usize];
            side.protocol.disconnect(&b);
            side.mesh.retain(|m| *m != b);
            if !side.banned.contains(&b) {
                side.banned.push(b);
            }
        }
    }
}
