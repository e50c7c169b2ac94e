//! What happens on purpose: honest writes, mesh repair, churn, and the adversaries'
//! misbehaviour.

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;

use blockend_kernel::sync::Event;
use blockend_kernel::{Block, Header, Identity, Report, Signature};
use rand::seq::SliceRandom;
use rand::Rng;

use super::{Oversized, Role, Simulation, NO_HOP};
use crate::config::AdversaryKind;
use crate::error::Error;
use crate::network::Wire;
use crate::topology::PeerId;

/// Replay messages a flooder sends per connection per heartbeat.
const FLOOD_MESSAGES: usize = 20;
/// Blocks per replay message.
const FLOOD_BLOCKS: usize = 32;
/// Junk messages a malformed adversary sends per connection per heartbeat: enough to pass
/// the protocol's budget of invalid messages (16) within a few heartbeats.
const JUNK_MESSAGES: usize = 4;
/// Forged blocks a forger sends per heartbeat.
const FORGERIES: usize = 4;

impl Simulation {
    /// An honest sender writes its `n`-th block and publishes it to its mesh.
    pub(crate) fn create(&mut self, peer: PeerId, n: u64) -> Result<(), Error> {
        let p = peer as usize;
        let body = self.workload.body(p, n);
        if !self.peers[p].online {
            return Ok(());
        }
        let Some(kernel) = self.peers[p].kernel.as_mut() else {
            return Ok(());
        };
        let block = match kernel.create_block(body) {
            Ok(block) => block,
            Err(error) => {
                self.counters
                    .create_failures
                    .push(format!("peer {p} block {n}: {error}"));
                return Ok(());
            }
        };
        if let Some(checker) = &self.checker {
            checker.check(&block);
        }
        self.trace.event(self.now, 6, u64::from(peer), n);
        self.track(p, &block);
        // The machine hears of every local write (with push off it sends nothing for it).
        let report = Report::from_accepted(vec![block.clone()]);
        self.step(peer, Event::Local(report))?;
        let mesh = self.peers[p].mesh.clone();
        for q in mesh {
            self.send(peer, q, Wire::Push(vec![(block.clone(), 1)]));
        }
        if n + 1 < self.scenario.workload.blocks_per_sender {
            self.schedule_create(peer, n + 1);
        }
        Ok(())
    }

    /// Registers an honest block: every honest peer must end up holding it.
    pub(crate) fn track(&mut self, author: usize, block: &Arc<Block>) {
        let n = self.peers.len();
        let idx = self.tracked.blocks.len();
        self.tracked.ids.insert(block.id(), idx as u32);
        self.tracked.blocks.push(block.clone());
        self.tracked.created.push(self.now);
        self.tracked.hops.resize((idx + 1) * n, NO_HOP);
        self.tracked.hops[idx * n + author] = 0;
        self.tracked.pushed.resize((idx + 1) * n, super::UNSEEN);
        self.tracked.pushed[idx * n + author] = super::DECIDED;
        self.tracked.first_created.get_or_insert(self.now);
        self.tracked.last_created = self.now;
        self.counters.activity += 1;
        let peer = &mut self.peers[author];
        peer.count += 1;
        peer.last_gain = self.now;
    }

    /// Peers with fewer than `d_lo` mesh peers graft connected peers that have room, up to `d`.
    pub(crate) fn repair_mesh(&mut self) {
        let mesh = self.scenario.mesh;
        for p in 0..self.peers.len() {
            let peer = &self.peers[p];
            if !peer.online || peer.mesh.len() >= mesh.d_lo {
                continue;
            }
            let mut candidates: Vec<PeerId> = peer
                .neighbours
                .iter()
                .copied()
                .filter(|q| {
                    let other = &self.peers[*q as usize];
                    other.online
                        && !peer.mesh.contains(q)
                        && !peer.banned.contains(q)
                        && other.mesh.len() < mesh.d_hi
                })
                .collect();
            candidates.shuffle(&mut self.rng);
            for q in candidates {
                if self.peers[p].mesh.len() >= mesh.d {
                    break;
                }
                self.peers[p].mesh.push(q);
                self.peers[q as usize].mesh.push(p as PeerId);
            }
        }
    }

    /// A churning peer leaves: its connections close, its mesh links go, and its kernel is
    /// closed (its store parked if it will come back with it).
    pub(crate) fn leave(&mut self, peer: PeerId) {
        let p = peer as usize;
        self.trace.event(self.now, 7, u64::from(peer), 0);
        let keep = !self.peers[p].joiner && self.scenario.churn.is_some_and(|c| c.keep_store);
        let me = &mut self.peers[p];
        me.online = false;
        me.epoch += 1;
        me.inbox.clear();
        me.flush_pending = false;
        me.protocol = blockend_kernel::sync::Protocol::new(self.sync_config);
        if let Some(kernel) = me.kernel.take() {
            let store = kernel.close();
            if keep {
                me.parked = Some(store);
            }
        }
        let mesh = std::mem::take(&mut me.mesh);
        let neighbours = me.neighbours.clone();
        for q in neighbours {
            // A disconnect touches no store: it cannot fail.
            let _ = self.step(q, Event::Disconnected(peer));
        }
        for q in mesh {
            self.peers[q as usize].mesh.retain(|m| *m != peer);
        }
    }

    /// A churning peer comes back, with its store or empty, and reconnects.
    pub(crate) fn rejoin(&mut self, peer: PeerId) -> Result<(), Error> {
        let p = peer as usize;
        self.trace.event(self.now, 8, u64::from(peer), 0);
        let store = self.peers[p].parked.take();
        let kernel = self.open_kernel(self.peers[p].secret, store)?;
        let n = self.peers.len();
        let mut count = 0;
        for (idx, block) in self.tracked.blocks.iter().enumerate() {
            let slot = idx * n + p;
            if kernel.contains(&block.id()) {
                count += 1;
                if self.tracked.hops[slot] == NO_HOP {
                    self.tracked.hops[slot] = 0;
                }
            } else {
                self.tracked.hops[slot] = NO_HOP;
            }
        }
        let me = &mut self.peers[p];
        me.kernel = Some(kernel);
        me.online = true;
        me.epoch += 1;
        me.count = count;
        me.last_gain = self.now;
        let neighbours: Vec<PeerId> = me
            .neighbours
            .iter()
            .copied()
            .filter(|q| !me.banned.contains(q))
            .collect();
        for q in neighbours {
            if self.peers[q as usize].online {
                self.connect(peer, q)?;
                self.connect(q, peer)?;
            }
        }
        Ok(())
    }

    /// Every adversary still active does its thing.
    pub(crate) fn act_adversaries(&mut self) -> Result<(), Error> {
        self.act_sybils();
        let now = self.now_ms();
        let active: Vec<(usize, AdversaryKind)> = self
            .peers
            .iter()
            .enumerate()
            .filter_map(|(p, peer)| match peer.role {
                Role::Adversary(kind) if peer.online => Some((p, kind)),
                _ => None,
            })
            .filter(|(_, kind)| {
                self.scenario
                    .adversaries
                    .iter()
                    .any(|a| a.kind == *kind && now < a.until_ms)
            })
            .collect();
        for (p, kind) in active {
            let peer = p as PeerId;
            match kind {
                AdversaryKind::Forger => self.forge(peer),
                AdversaryKind::Forker => self.fork(peer)?,
                AdversaryKind::Flooder => self.flood(peer),
                AdversaryKind::Oversized => self.oversize(peer),
                AdversaryKind::Malformed => self.malform(peer),
                AdversaryKind::Rejected => self.write_rejected(peer),
            }
        }
        Ok(())
    }

    /// Connections the adversary can still use.
    pub(super) fn links(&self, peer: PeerId) -> Vec<PeerId> {
        let me = &self.peers[peer as usize];
        me.neighbours
            .iter()
            .copied()
            .filter(|q| !me.banned.contains(q))
            .collect()
    }

    /// Tampered copies of the newest honest blocks, and blocks in an honest author's name
    /// signed with the forger's key.
    fn forge(&mut self, peer: PeerId) {
        let own = Identity::from_secret(self.peers[peer as usize].secret);
        let mut forged = Vec::new();
        for block in self.tracked.blocks.iter().rev().take(FORGERIES) {
            let mut signature = block.signature().0;
            signature[7] ^= 0x20;
            if let Ok(copy) = Block::from_parts(
                block.header().clone(),
                Signature(signature),
                block.body().map(<[u8]>::to_vec),
            ) {
                forged.push((Arc::new(copy), 1));
            }
            let body = br#"{"value":999999}"#.to_vec();
            let header = Header {
                author: block.author(),
                parent: Some(block.id()),
                seq: block.seq() + 1,
                time: block.time() + 1,
                body_len: body.len() as u32,
                body_hash: *blake3::hash(&body).as_bytes(),
            };
            let signature = own.sign(&header.id());
            if let Ok(fake) = Block::from_parts(header, signature, Some(body)) {
                forged.push((Arc::new(fake), 1));
            }
        }
        if forged.is_empty() {
            return;
        }
        for q in self.links(peer) {
            self.send(peer, q, Wire::Push(forged.clone()));
        }
    }

    /// First a genesis block like any writer's; at the next heartbeat two different blocks at
    /// seq 1, one for each half of the mesh.
    fn fork(&mut self, peer: PeerId) -> Result<(), Error> {
        if self.forked.contains(&peer) {
            return Ok(());
        }
        let p = peer as usize;
        let body = self.workload.body(p, 0);
        let Some(kernel) = self.peers[p].kernel.as_mut() else {
            return Ok(());
        };
        let Some(genesis) = kernel.blocks_from(&kernel.author(), 0, 1, usize::MAX).pop() else {
            if let Ok(block) = kernel.create_block(body) {
                for q in self.peers[p].mesh.clone() {
                    self.send(peer, q, Wire::Push(vec![(block.clone(), 1)]));
                }
            }
            return Ok(());
        };
        self.forked.push(peer);
        let identity = Identity::from_secret(self.peers[p].secret);
        let now = super::EPOCH_MS + self.now_ms();
        let parent = Some((genesis.id(), genesis.seq(), genesis.time()));
        let a = Arc::new(Block::sign(
            &identity,
            parent,
            now,
            self.workload.body(p, 1),
        ));
        let b = Arc::new(Block::sign(
            &identity,
            parent,
            now,
            self.workload.body(p, 2),
        ));
        let links = self.links(peer);
        let half = links.len().div_ceil(2);
        for (i, q) in links.into_iter().enumerate() {
            let block = if i < half { a.clone() } else { b.clone() };
            self.send(peer, q, Wire::Push(vec![(block, 1)]));
        }
        Ok(())
    }

    /// Replays everything it holds, many times, to every connection.
    fn flood(&mut self, peer: PeerId) {
        let held: Vec<(Arc<Block>, u16)> = {
            let Some(kernel) = self.peers[peer as usize].kernel.as_ref() else {
                return;
            };
            self.tracked
                .blocks
                .iter()
                .filter(|b| kernel.contains(&b.id()))
                .take(FLOOD_BLOCKS)
                .map(|b| (b.clone(), 1))
                .collect()
        };
        if held.is_empty() {
            return;
        }
        for q in self.links(peer) {
            for _ in 0..FLOOD_MESSAGES {
                self.send(peer, q, Wire::Push(held.clone()));
            }
        }
    }

    /// A validly signed block over the body limit, and a message over the message limit.
    fn oversize(&mut self, peer: PeerId) {
        let max_body = blockend_kernel::Config::default().max_body_bytes as usize;
        let max_message = self.sync_config.limits.max_message_bytes;
        let now = super::EPOCH_MS + self.now_ms();
        let secret = self.peers[peer as usize].secret;
        let oversized = self.oversized.get_or_insert_with(|| Oversized {
            bytes: Arc::new(vec![0x2a; max_message + 1]),
            blocks: HashMap::new(),
        });
        let bytes = oversized.bytes.clone();
        let block = oversized
            .blocks
            .entry(peer)
            .or_insert_with(|| {
                let identity = Identity::from_secret(secret);
                Arc::new(Block::sign(&identity, None, now, vec![b'x'; max_body + 1]))
            })
            .clone();
        for q in self.links(peer) {
            self.send(peer, q, Wire::Push(vec![(block.clone(), 1)]));
            self.send(peer, q, Wire::Bytes(bytes.clone()));
        }
    }

    /// The next block of a feed that alternates blocks the application accepts with blocks it
    /// rejects (the workload's first body again: for the counter, a value that does not grow),
    /// pushed to the first neighbour only, so the rest of the swarm gets it by sync alone.
    fn write_rejected(&mut self, peer: PeerId) {
        let p = peer as usize;
        let (parent, n) = match self.rejecting.get(&peer) {
            Some((block, n)) => (Some((block.id(), block.seq(), block.time())), *n),
            None => (None, 0),
        };
        let body = if n % 2 == 0 {
            self.workload.body(p, n)
        } else {
            self.workload.body(p, 0)
        };
        let now = super::EPOCH_MS + self.now_ms();
        let time = parent.map_or(now, |(_, _, t)| now.max(t));
        let identity = Identity::from_secret(self.peers[p].secret);
        let block = Arc::new(Block::sign(&identity, parent, time, body));
        self.rejecting.insert(peer, (block.clone(), n + 1));
        if let Some(q) = self.links(peer).first().copied() {
            self.send(peer, q, Wire::Push(vec![(block, 1)]));
        }
    }

    /// Random bytes that do not decode as a message.
    fn malform(&mut self, peer: PeerId) {
        for q in self.links(peer) {
            for _ in 0..JUNK_MESSAGES {
                let len = self.rng.gen_range(1..256);
                let mut junk: Vec<u8> = (0..len).map(|_| self.rng.gen()).collect();
                // A wrong format byte, so the junk never decodes by luck.
                junk[0] = 0xff;
                self.send(peer, q, Wire::Bytes(Arc::new(junk)));
            }
        }
    }
}
