//! Sybil peers: thousands of fresh identities, some claiming a genesis in 1970, pushed to
//! every connection at once; and what the honest peers kept, refused and evicted.
//!
//! The flood is signed when the swarm is built (one identity per feed, from the run's one
//! generator), so the push itself costs the engine nothing but the sends.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use blockend_kernel::{Block, BlockId, Identity, Outcome, PublicKey, Report, Standing};
use rand::Rng;

use super::{Role, Simulation, EPOCH_MS, NO_HOP};
use crate::network::Wire;
use crate::topology::PeerId;

/// A backdated genesis claims this time (ms since the Unix epoch, 1970-01-01T00:00:01Z), plus
/// the feed's number so no two claim the same instant.
const BACKDATED_MS: u64 = 1_000;

/// The flood and what became of it at honest peers.
#[derive(Default)]
pub(crate) struct Flood {
    /// Each Sybil peer's blocks, in the order it pushes them (each feed's genesis first).
    pub blocks: BTreeMap<PeerId, Vec<(Arc<Block>, u16)>>,
    /// Every flood block.
    pub ids: HashSet<BlockId>,
    /// Every flood identity.
    pub authors: HashSet<PublicKey>,
    /// Whether the flood was pushed at least once.
    pub pushed: bool,
    /// Flood blocks honest peers refused for capacity (at the door, or tombstoned).
    pub refused: u64,
    /// Flood blocks honest peers evicted with their feeds.
    pub evicted: u64,
    /// Honest blocks honest peers evicted with their feeds.
    pub honest_evicted: u64,
}

/// The flood's figures for the report.
#[derive(Debug, Default)]
pub(crate) struct Figures {
    pub honest_feeds: usize,
    pub honest_feeds_kept_min: usize,
    /// The peer that kept the fewest, and how many.
    pub fewest: Option<(usize, usize)>,
    pub honest_feed_bytes: u64,
    pub sybil_blocks_stored_max: u64,
    pub sybil_bytes_stored_max: u64,
    pub joiners: usize,
    pub joiner_honest_feeds_kept_min: Option<usize>,
    pub joiner_sybil_blocks_stored_max: u64,
}

/// What one honest peer holds at the end.
struct Held {
    honest_feeds: usize,
    honest_bytes: u64,
    sybil_blocks: u64,
    sybil_bytes: u64,
}

impl Simulation {
    /// Signs every Sybil peer's feeds: `feeds_each` fresh identities each, every one with
    /// `blocks_per_feed` blocks; feed `i` is backdated when the fraction `backdated` steps
    /// past a whole number at `i`, so backdated and fresh feeds alternate evenly.
    pub(crate) fn sign_flood(&mut self) {
        let Some(sybil) = self.scenario.sybil else {
            return;
        };
        let fresh = EPOCH_MS + sybil.start_ms;
        for p in 0..self.peers.len() {
            if self.peers[p].role != Role::Sybil {
                continue;
            }
            let total = sybil.feeds_each.saturating_mul(sybil.blocks_per_feed);
            let mut blocks = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
            for i in 0..sybil.feeds_each {
                let identity = Identity::from_secret(self.rng.gen());
                let f = sybil.backdated;
                let backdated = ((i + 1) as f64 * f).floor() > (i as f64 * f).floor();
                let time = if backdated { BACKDATED_MS + i } else { fresh };
                let mut parent = None;
                for n in 0..sybil.blocks_per_feed {
                    let body = self.workload.body(p, n);
                    let block = Arc::new(Block::sign(&identity, parent, time + n, body));
                    parent = Some((block.id(), block.seq(), block.time()));
                    self.flood.ids.insert(block.id());
                    blocks.push((block, 1));
                }
                self.flood.authors.insert(identity.public());
            }
            self.flood.blocks.insert(p as PeerId, blocks);
        }
    }

    /// From `start_ms`, every Sybil peer pushes its whole flood to every connection: once, or
    /// at every heartbeat until `until_ms`.
    pub(crate) fn act_sybils(&mut self) {
        let Some(sybil) = self.scenario.sybil else {
            return;
        };
        let now = self.now_ms();
        if now < sybil.start_ms || (self.flood.pushed && now >= sybil.until_ms) {
            return;
        }
        self.flood.pushed = true;
        let max = self.sync_config.limits.max_blocks.max(1);
        let sybils: Vec<PeerId> = self.flood.blocks.keys().copied().collect();
        for peer in sybils {
            if !self.peers[peer as usize].online {
                continue;
            }
            let blocks = self.flood.blocks.remove(&peer).unwrap_or_default();
            self.trace
                .event(self.now, 9, u64::from(peer), blocks.len() as u64);
            for q in self.links(peer) {
                for chunk in blocks.chunks(max) {
                    self.send(peer, q, Wire::Push(chunk.to_vec()));
                }
            }
            self.flood.blocks.insert(peer, blocks);
        }
    }

    /// Counts flood blocks an honest peer refused for capacity.
    pub(crate) fn count_refused(&mut self, report: &Report) {
        if self.flood.ids.is_empty() {
            return;
        }
        let refused = report
            .outcomes()
            .iter()
            .filter(|(id, outcome)| {
                matches!(outcome, Outcome::OverCapacity | Outcome::Tombstoned { .. })
                    && self.flood.ids.contains(id)
            })
            .count();
        self.flood.refused += refused as u64;
    }

    /// An honest peer's kernel evicted `evicted` blocks: which of them were honest (tracked)
    /// blocks, which flood blocks. Honest blocks it no longer holds are no longer counted as
    /// delivered there.
    pub(crate) fn count_evicted(&mut self, peer: PeerId, evicted: u64) {
        let p = peer as usize;
        let n = self.peers.len();
        let Some(kernel) = self.peers[p].kernel.as_ref() else {
            return;
        };
        let mut honest = 0;
        for (idx, block) in self.tracked.blocks.iter().enumerate() {
            let slot = idx * n + p;
            if self.tracked.hops[slot] != NO_HOP && !kernel.contains(&block.id()) {
                self.tracked.hops[slot] = NO_HOP;
                honest += 1;
            }
        }
        let me = &mut self.peers[p];
        me.count = me.count.saturating_sub(honest);
        self.flood.honest_evicted += u64::from(honest);
        self.flood.evicted += evicted.saturating_sub(u64::from(honest));
    }

    /// Honest feeds kept whole and flood blocks held, over the honest peers online at the end:
    /// the long-standing ones (which decide the run) and the joiners apart.
    pub(crate) fn flood_figures(&self, honest: &[usize]) -> Figures {
        let mut feeds: BTreeMap<PublicKey, Vec<BlockId>> = BTreeMap::new();
        for block in &self.tracked.blocks {
            feeds.entry(block.author()).or_default().push(block.id());
        }
        let mut figures = Figures {
            honest_feeds: feeds.len(),
            ..Figures::default()
        };
        let mut joiner_kept: Option<usize> = None;
        for &p in honest {
            let Some(held) = self.held(p, &feeds) else {
                continue;
            };
            figures.honest_feed_bytes = figures.honest_feed_bytes.max(held.honest_bytes);
            if self.peers[p].joiner {
                figures.joiners += 1;
                joiner_kept =
                    Some(joiner_kept.map_or(held.honest_feeds, |k| k.min(held.honest_feeds)));
                figures.joiner_sybil_blocks_stored_max = figures
                    .joiner_sybil_blocks_stored_max
                    .max(held.sybil_blocks);
                continue;
            }
            if figures.fewest.is_none_or(|(_, k)| held.honest_feeds < k) {
                figures.fewest = Some((p, held.honest_feeds));
            }
            figures.sybil_blocks_stored_max =
                figures.sybil_blocks_stored_max.max(held.sybil_blocks);
            figures.sybil_bytes_stored_max = figures.sybil_bytes_stored_max.max(held.sybil_bytes);
        }
        figures.honest_feeds_kept_min = figures.fewest.map_or(0, |(_, k)| k);
        figures.joiner_honest_feeds_kept_min = joiner_kept;
        figures
    }

    /// What peer `p` holds of the honest feeds (whole ones, and bytes) and of the flood.
    fn held(&self, p: usize, feeds: &BTreeMap<PublicKey, Vec<BlockId>>) -> Option<Held> {
        let kernel = self.peers[p].kernel.as_ref()?;
        let honest_feeds = feeds
            .values()
            .filter(|ids| ids.iter().all(|id| kernel.contains(id)))
            .count();
        let mut held = Held {
            honest_feeds,
            honest_bytes: 0,
            sybil_blocks: 0,
            sybil_bytes: 0,
        };
        for feed in kernel.retention() {
            if matches!(feed.standing, Standing::Evicted { .. }) {
                continue;
            }
            if self.flood.authors.contains(&feed.author) {
                held.sybil_blocks += feed.length;
                held.sybil_bytes += feed.bytes;
            } else if feeds.contains_key(&feed.author) {
                held.honest_bytes += feed.bytes;
            }
        }
        Some(held)
    }
}
