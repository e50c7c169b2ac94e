//! Arrivals: everything a peer's sync machine should know becomes one `sync::Event` for it
//! (connects, sync messages, pushed blocks, ticks); the engine only carries out the outputs
//! and keeps the figures. Pushed blocks wait in the peer's inbox and are dispatched together,
//! one event per sender (so the kernel knows whom to blame), then forwarded along the mesh.

use foldhash::{HashMap, HashMapExt, HashSet};
use std::sync::Arc;

use blockend_kernel::sync::{DisconnectReason, Event, Message, Output, Step, DISSEMINATION};
use blockend_kernel::{Block, BlockError, BlockId, DecodeError, Outcome, Report};

use super::{Role, Simulation, DECIDED, NO_HOP, PENDING, UNSEEN};
use crate::error::Error;
use crate::network::Wire;
use crate::topology::PeerId;

/// Where the hop counts of newly counted blocks come from.
pub(crate) enum Hops<'a> {
    /// Pushed blocks carry their own: the least hop each block arrived with in the inbox.
    Inbox(&'a HashMap<BlockId, u16>),
    /// Blocks from a sync answer: one more than the sender's.
    From(PeerId),
    /// Blocks the peer held and released itself (their time came): one hop.
    Held,
}

impl Simulation {
    /// Opens every connection of the topology (both sides greet with their heads).
    pub(crate) fn connect_all(&mut self) -> Result<(), Error> {
        for p in 0..self.peers.len() {
            let neighbours = self.peers[p].neighbours.clone();
            for q in neighbours {
                self.connect(p as PeerId, q)?;
            }
        }
        Ok(())
    }

    /// `p` greets `q` (the other side greets in its own call).
    pub(crate) fn connect(&mut self, p: PeerId, q: PeerId) -> Result<(), Error> {
        self.step(p, Event::Connected(q))?;
        Ok(())
    }

    /// Hands `event` to peer `p`'s machine (if the peer runs a kernel) and carries out the
    /// outputs. Returns the step for the figures.
    pub(crate) fn step(
        &mut self,
        p: PeerId,
        event: Event<PeerId>,
    ) -> Result<Option<Step<PeerId>>, Error> {
        // Under capacity, an honest peer's evictions are told apart (honest or flood blocks).
        let watch = self.scenario.capacity_bytes.is_some();
        let peer = &mut self.peers[p as usize];
        let Some(kernel) = peer.kernel.as_mut() else {
            return Ok(None);
        };
        let watch = watch && peer.role == Role::Honest;
        let before = if watch {
            kernel.stats().evicted_blocks
        } else {
            0
        };
        let mut step = peer.protocol.event(kernel, event)?;
        let evicted = if watch {
            kernel.stats().evicted_blocks.saturating_sub(before)
        } else {
            0
        };
        if evicted > 0 {
            self.count_evicted(p, evicted);
        }
        let outputs = std::mem::take(&mut step.outputs);
        self.outputs(p, outputs);
        Ok(Some(step))
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
            Wire::Bytes(bytes) => {
                let max = self.sync_config.limits.max_message_bytes;
                // Like the node's transport, a frame over the cap is refused before it is read
                // (and so never copied here); the machine counts it as malformed.
                let event = if bytes.len() > max {
                    Event::Malformed {
                        from,
                        error: DecodeError::TooMany {
                            what: "message bytes",
                            count: bytes.len() as u64,
                            max: max as u64,
                        },
                    }
                } else {
                    Event::Message {
                        from,
                        bytes: bytes.as_ref().clone(),
                    }
                };
                let step = self.step(to, event)?;
                if step.is_some_and(|s| s.malformed.is_some()) && self.peers[t].role == Role::Honest
                {
                    self.counters.rejections.malformed_messages += 1;
                }
            }
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
        let step = self.step(to, Event::Received { from, message })?;
        if let Some(report) = step.and_then(|s| s.report) {
            self.account(to, &report);
            self.absorb(to, &report, Hops::From(from));
            let released = self.gossip_verdicts(to, &[], &report);
            self.forward(to, &released, &[]);
        }
        Ok(())
    }

    /// Dispatches a peer's inbox, one event per sender in order of arrival (the machine
    /// charges invalid blocks to their sender and asks a sender of orphans for the gap), and
    /// forwards what is newly counted along the mesh.
    pub(crate) fn flush(&mut self, to: PeerId) -> Result<(), Error> {
        let t = to as usize;
        self.peers[t].flush_pending = false;
        let inbox = std::mem::take(&mut self.peers[t].inbox);
        if inbox.is_empty() || !self.peers[t].online || self.peers[t].kernel.is_none() {
            return Ok(());
        }
        let mut by_sender: Vec<(PeerId, Vec<Arc<Block>>)> = Vec::new();
        for (from, block, _) in &inbox {
            match by_sender.iter_mut().find(|(s, _)| s == from) {
                Some((_, blocks)) => blocks.push(block.clone()),
                None => by_sender.push((*from, vec![block.clone()])),
            }
        }
        let mut hops: HashMap<BlockId, u16> = HashMap::with_capacity(inbox.len());
        for (_, block, hop) in &inbox {
            hops.entry(block.id())
                .and_modify(|h| *h = (*h).min(*hop))
                .or_insert(*hop);
        }
        let (mut accepted, mut fresh) = (0, Vec::new());
        for (from, blocks) in by_sender {
            let Some(report) = self
                .step(
                    to,
                    Event::Pushed {
                        from,
                        blocks: blocks.clone(),
                    },
                )?
                .and_then(|s| s.report)
            else {
                continue;
            };
            self.account(to, &report);
            self.absorb(to, &report, Hops::Inbox(&hops));
            accepted += report.accepted.len();
            fresh.extend(self.gossip_verdicts(to, &blocks, &report));
        }
        self.trace
            .event(self.now, 2, u64::from(to), accepted as u64);
        // One message per mesh peer for the whole inbox, as gossipsub batches an RPC.
        self.forward(to, &fresh, &inbox);
        Ok(())
    }

    /// What gossipsub at `to` forwards after `report`: `pushed` (the blocks of a push just
    /// dispatched) are seen, and every seen block whose verdict the kernel now gives is
    /// decided: forwarded if it validates (counted, already held, or a fork, as the node
    /// accepts it), dropped otherwise; a block that waits (an orphan, one from the future) is
    /// decided when the kernel releases it, whatever delivery released it. Untracked blocks
    /// (adversaries') go on only when newly accepted from a push.
    pub(crate) fn gossip_verdicts(
        &mut self,
        to: PeerId,
        pushed: &[Arc<Block>],
        report: &Report,
    ) -> Vec<Arc<Block>> {
        let n = self.peers.len();
        let slot = |idx: u32| idx as usize * n + to as usize;
        // The last outcome of each block is its fate.
        let outcome = |id: &BlockId| report.outcome(id);
        let mut out = Vec::new();
        // Tracked blocks this push made pending (not yet counted in `open_verdicts`).
        let mut newly: Vec<u32> = Vec::new();
        for block in pushed {
            match self.tracked.ids.get(&block.id()) {
                Some(&idx) => {
                    let state = &mut self.tracked.pushed[slot(idx)];
                    if *state == UNSEEN {
                        *state = PENDING;
                        newly.push(idx);
                    }
                }
                None => {
                    if matches!(outcome(&block.id()), Some(Outcome::Accepted)) {
                        out.push(block.clone());
                    }
                }
            }
        }
        newly.sort_unstable();
        for block in pushed.iter().chain(report.accepted.iter()) {
            let Some(&idx) = self.tracked.ids.get(&block.id()) else {
                continue;
            };
            if self.tracked.pushed[slot(idx)] != PENDING {
                continue;
            }
            let decided = match outcome(&block.id()) {
                Some(
                    Outcome::Accepted
                    | Outcome::Duplicate
                    | Outcome::Collected
                    | Outcome::Fork { .. },
                ) => {
                    out.push(block.clone());
                    true
                }
                Some(Outcome::WaitingForParent | Outcome::TimestampFromFuture { .. }) | None => {
                    false
                }
                Some(_) => true,
            };
            if decided {
                self.tracked.pushed[slot(idx)] = DECIDED;
                if newly.binary_search(&idx).is_err() {
                    let peer = &mut self.peers[to as usize];
                    peer.open_verdicts = peer.open_verdicts.saturating_sub(1);
                }
            }
        }
        // What this push left open waits, as the node holds it: up to the cap, for up to the
        // wait; beyond the cap it is ignored at once (not forwarded).
        let peer = &mut self.peers[to as usize];
        for idx in newly {
            if self.tracked.pushed[slot(idx)] != PENDING {
                continue;
            }
            if peer.open_verdicts >= DISSEMINATION.max_open_verdicts {
                self.tracked.pushed[slot(idx)] = DECIDED;
                continue;
            }
            peer.open_verdicts += 1;
            peer.held_verdicts.push_back((self.now, idx));
        }
        out
    }

    /// The node's tick drops gossip verdicts held open longer than
    /// `DISSEMINATION.verdict_wait_ms`: their blocks are not forwarded when released later.
    pub(crate) fn expire_verdicts(&mut self, p: PeerId) {
        let n = self.peers.len();
        let wait = DISSEMINATION.verdict_wait_ms * 1_000;
        let peer = &mut self.peers[p as usize];
        while let Some(&(since, idx)) = peer.held_verdicts.front() {
            if since + wait > self.now {
                break;
            }
            peer.held_verdicts.pop_front();
            let state = &mut self.tracked.pushed[idx as usize * n + p as usize];
            if *state == PENDING {
                *state = DECIDED;
                peer.open_verdicts = peer.open_verdicts.saturating_sub(1);
            }
        }
    }

    /// Counts rejections (at honest peers) and activity.
    pub(crate) fn account(&mut self, to: PeerId, report: &Report) {
        self.counters.activity += report.accepted.len() as u64;
        if self.peers[to as usize].role != Role::Honest {
            return;
        }
        let r = &mut self.counters.rejections;
        for (_, outcome) in report.outcomes() {
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
                Outcome::OverCapacity => r.over_capacity += 1,
                Outcome::Tombstoned { .. } => r.tombstoned += 1,
                _ => {}
            }
        }
        self.count_refused(report);
    }

    /// Records newly counted tracked blocks: first hop, and the peer's progress.
    pub(crate) fn absorb(&mut self, to: PeerId, report: &Report, hops: Hops<'_>) {
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
                Hops::Inbox(hops) => hops.get(&block.id()).copied().unwrap_or(1),
                Hops::Held => 1,
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
            if self.peers[t].role == Role::Honest {
                let tracked = &mut self.tracked;
                let h = usize::from(hop);
                if tracked.hop_counts.len() <= h {
                    tracked.hop_counts.resize(h + 1, 0);
                }
                tracked.hop_counts[h] += 1;
                let ms = self.now.saturating_sub(tracked.created[idx as usize]) / 1_000;
                *tracked.delivery_ms.entry(ms).or_insert(0) += 1;
            }
            let peer = &mut self.peers[t];
            peer.count += 1;
            peer.last_gain = self.now;
        }
    }

    /// Pushes newly counted blocks to every mesh peer that did not send them here, one
    /// message per mesh peer (gossipsub batches messages in one RPC the same way).
    pub(crate) fn forward(
        &mut self,
        from: PeerId,
        accepted: &[Arc<Block>],
        inbox: &[(PeerId, Arc<Block>, u16)],
    ) {
        if accepted.is_empty() {
            return;
        }
        let n = self.peers.len();
        let f = from as usize;
        // Who sent each block here: gossipsub does not forward a message to its senders.
        let senders: HashSet<(PeerId, BlockId)> = inbox
            .iter()
            .map(|(sender, block, _)| (*sender, block.id()))
            .collect();
        let max = self.sync_config.limits.max_blocks.max(1);
        let mesh = self.peers[f].mesh.clone();
        for q in mesh {
            let mut out: Vec<(Arc<Block>, u16)> = Vec::with_capacity(accepted.len());
            for block in accepted {
                if senders.contains(&(q, block.id())) {
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
                    if matches!(message, Message::Want(_) | Message::WantBodies(_)) {
                        self.counters.wants += 1;
                    }
                    self.send(from, to, Wire::Sync(message));
                }
                Output::Disconnect { peer, reason } => self.drop_link(from, peer, reason),
            }
        }
    }

    /// `by` drops its connection to `peer` for good (both sides forget it; `by`'s machine
    /// already has).
    fn drop_link(&mut self, by: PeerId, peer: PeerId, reason: DisconnectReason) {
        if self.peers[by as usize].role == Role::Honest
            && reason == DisconnectReason::TooManyInvalid
        {
            self.counters.rejections.disconnects += 1;
        }
        self.trace
            .event(self.now, 3, u64::from(by), u64::from(peer));
        for (a, b) in [(by, peer), (peer, by)] {
            // A disconnect touches no store, and an offline peer's machine is empty.
            let side = &mut self.peers[a as usize];
            if let Some(kernel) = side.kernel.as_mut() {
                let step = side.protocol.event(kernel, Event::Disconnected(b));
                debug_assert!(step.is_ok_and(|s| s.outputs.is_empty()));
            }
            side.mesh.retain(|m| *m != b);
            if !side.banned.contains(&b) {
                side.banned.push(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use blockend_kernel::Identity;

    use super::*;
    use crate::config::Scenario;

    /// Two peers, no workload of their own: the test writes the blocks.
    fn pair() -> Simulation {
        let scenario = Scenario::from_toml(
            "name = \"verdicts\"\nseed = 1\npeers = 2\n[topology]\nkind = \"full\"\n\
             [workload]\nkind = \"counter\"\nsenders = 0\nblocks_per_sender = 0\n",
        )
        .expect("scenario");
        Simulation::new(scenario).expect("swarm")
    }

    /// A chain by an author no peer runs, tracked as written by peer 0.
    fn chain(sim: &mut Simulation, secret: u8, n: usize) -> Vec<Arc<Block>> {
        let identity = Identity::from_secret([secret; 32]);
        let mut out: Vec<Arc<Block>> = Vec::new();
        for i in 0..n {
            let parent = out.last().map(|b| (b.id(), b.seq(), b.time()));
            let body = format!(r#"{{"value":{}}}"#, i + 1).into_bytes();
            let block = Arc::new(Block::sign(&identity, parent, EPOCH, body));
            sim.track(0, &block);
            out.push(block);
        }
        out
    }

    const EPOCH: u64 = crate::engine::EPOCH_MS;

    fn push(sim: &mut Simulation, blocks: &[Arc<Block>]) -> Vec<Arc<Block>> {
        let event = Event::Pushed {
            from: 0,
            blocks: blocks.to_vec(),
        };
        let report = sim
            .step(1, event)
            .expect("step")
            .and_then(|s| s.report)
            .expect("a report");
        sim.gossip_verdicts(1, blocks, &report)
    }

    #[test]
    fn a_held_verdict_is_forwarded_when_its_block_is_released_and_not_after_it_expired() {
        let mut sim = pair();
        let blocks = chain(&mut sim, 9, 4);
        assert!(push(&mut sim, &blocks[2..3]).is_empty(), "an orphan waits");
        assert_eq!(sim.peers[1].open_verdicts, 1);
        let forwarded = push(&mut sim, &blocks[..2]);
        let ids: Vec<BlockId> = forwarded.iter().map(|b| b.id()).collect();
        assert!(
            ids.contains(&blocks[2].id()),
            "released: forwarded with its parents"
        );
        assert_eq!(sim.peers[1].open_verdicts, 0);
        // An orphan whose wait runs out is ignored: released later, it is not forwarded.
        let late = chain(&mut sim, 10, 3);
        assert!(push(&mut sim, &late[2..]).is_empty());
        sim.now += DISSEMINATION.verdict_wait_ms * 1_000;
        sim.expire_verdicts(1);
        assert_eq!(sim.peers[1].open_verdicts, 0);
        let forwarded = push(&mut sim, &late[..2]);
        assert!(!forwarded.iter().any(|b| b.id() == late[2].id()));
    }

    #[test]
    fn open_verdicts_are_capped_as_the_node_caps_them() {
        let mut sim = pair();
        let max = DISSEMINATION.max_open_verdicts;
        let blocks = chain(&mut sim, 9, max + 11);
        // Everything but the genesis block: orphans, pushed in pages as a sender would.
        for page in blocks[1..].chunks(1_000) {
            push(&mut sim, page);
        }
        let open = sim.peers[1].open_verdicts;
        assert_eq!(
            open,
            max,
            "the cap binds: {} orphans pushed",
            blocks.len() - 1
        );
        let n = sim.peers.len();
        let pending = (0..blocks.len())
            .filter(|i| sim.tracked.pushed[i * n + 1] == PENDING)
            .count();
        assert_eq!(pending, open, "every pending block is counted once");
    }
}
