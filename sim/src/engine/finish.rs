//! After quiescence: garbage collection at one common time, the invariant checks, and the
//! report.

use std::collections::BTreeMap;
use std::time::Instant;

use blockend_kernel::Digest;

use super::{Role, Simulation, EPOCH_MS};
use crate::error::Error;
use crate::network::{block_bytes, Bytes};
use crate::report::{peak_memory_bytes, BytesPerPeer, Histogram, PerPeer, Percentiles, Report};

impl Simulation {
    pub(crate) fn finish(mut self, started: Instant) -> Result<Report, Error> {
        // Digests are defined as of the last gc(t): collect everywhere at the same time.
        let now = EPOCH_MS + self.now_ms();
        for peer in &mut self.peers {
            if let Some(kernel) = peer.kernel.as_mut().filter(|_| peer.online) {
                kernel.gc(now)?;
            }
        }
        let mut violations: Vec<String> = self.counters.create_failures.clone();
        let honest: Vec<usize> = (0..self.peers.len())
            .filter(|&p| self.peers[p].role == Role::Honest && self.peers[p].online)
            .collect();
        // Equal set_hash => equal digests; without capacity pressure, one set_hash.
        let mut by_set: BTreeMap<Digest, (usize, Vec<(String, Digest)>)> = BTreeMap::new();
        for &p in &honest {
            let Some(kernel) = self.peers[p].kernel.as_ref() else {
                continue;
            };
            let set = kernel.set_hash();
            let digests = kernel.digests();
            self.trace.bytes(&set.0);
            match by_set.get(&set) {
                Some((first, seen)) if *seen != digests => violations.push(format!(
                    "peers {first} and {p} hold the same blocks (set_hash {}) but their digests differ",
                    set.to_hex()
                )),
                Some(_) => {}
                None => {
                    by_set.insert(set, (p, digests));
                }
            }
        }
        let pressure = self.scenario.capacity_bytes.is_some();
        if !pressure && by_set.len() > 1 {
            let firsts: Vec<String> = by_set.values().map(|(p, _)| p.to_string()).collect();
            violations.push(format!(
                "honest peers ended with {} different block sets (e.g. peers {})",
                by_set.len(),
                firsts
                    .iter()
                    .take(4)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        // No honest block lost while capacity allows; who converged, and when.
        let first = self.tracked.first_created.unwrap_or(0);
        let mut times = Vec::new();
        let mut missing_peers = 0;
        let mut example = None;
        // What each checked peer holds of the honest blocks, and how much of that others
        // wrote: the news the swarm's bytes had to bring it, for `byte_redundancy`.
        let sizes: Vec<u64> = self
            .tracked
            .blocks
            .iter()
            .map(|b| block_bytes(b) as u64)
            .collect();
        let mut held_bytes = Vec::with_capacity(honest.len());
        let (mut sent, mut news) = (0u64, 0u64);
        for &p in &honest {
            let Some(kernel) = self.peers[p].kernel.as_ref() else {
                continue;
            };
            let me = kernel.author();
            let (mut missing, mut held, mut own) = (0, 0u64, 0u64);
            for (block, size) in self.tracked.blocks.iter().zip(&sizes) {
                if !kernel.contains(&block.id()) {
                    missing += 1;
                } else if block.author() == me {
                    held += size;
                    own += size;
                } else {
                    held += size;
                }
            }
            held_bytes.push(held);
            sent += self.peers[p].sent_bytes.total();
            news += held - own;
            if missing == 0 {
                times.push(self.peers[p].last_gain.saturating_sub(first) / 1_000);
            } else {
                missing_peers += 1;
                example.get_or_insert((p, missing));
            }
        }
        if let Some((p, missing)) = example.filter(|_| !pressure) {
            violations.push(format!(
                "{missing_peers} honest peers lack honest blocks (peer {p} lacks {missing} of {})",
                self.tracked.blocks.len()
            ));
        }
        let mut curve: Vec<(u64, f64)> = Vec::new();
        {
            let mut sorted = times.clone();
            sorted.sort_unstable();
            let total = honest.len().max(1) as f64;
            for (i, t) in sorted.iter().enumerate() {
                let fraction = (i + 1) as f64 / total;
                match curve.last_mut() {
                    Some(last) if last.0 == *t => last.1 = fraction,
                    _ => curve.push((*t, fraction)),
                }
            }
        }
        let n = self.peers.len();
        let blocks = self.tracked.blocks.len();
        let rmr = if blocks == 0 || n < 2 {
            0.0
        } else {
            self.tracked.deliveries as f64 / (blocks as f64 * (n - 1) as f64) - 1.0
        };
        let byte_redundancy = if news == 0 {
            0.0
        } else {
            sent as f64 / news as f64 - 1.0
        };
        let last_delivery_hop = self
            .tracked
            .hops
            .iter()
            .copied()
            .filter(|h| *h != super::NO_HOP)
            .max()
            .unwrap_or(0);
        let storage = PerPeer::of(honest.iter().filter_map(|&p| {
            let stats = self.peers[p].kernel.as_ref()?.stats();
            Some(stats.own_bytes + stats.other_bytes)
        }));
        let flood = self.flood_figures(&honest);
        if let Some((p, kept)) = flood.fewest.filter(|_| self.scenario.sybil.is_some()) {
            if kept < flood.honest_feeds {
                violations.push(format!(
                    "against the Sybil flood honest peer {p} kept {kept} of {} honest feeds whole",
                    flood.honest_feeds
                ));
            }
        }
        let converged_peers = times.len();
        let delivery: Vec<(u64, u64)> = self
            .tracked
            .delivery_ms
            .iter()
            .map(|(ms, n)| (*ms, *n))
            .collect();
        let sent_bytes: Vec<Bytes> = self.peers.iter().map(|p| p.sent_bytes).collect();
        let summary = format!(
            "{converged_peers} of {} honest peers converged; virtual {} ms; {} violations",
            honest.len(),
            self.now_ms(),
            violations.len()
        );
        let report = Report {
            scenario: self.scenario.name.clone(),
            seed: self.scenario.seed,
            peers: n,
            honest_peers: honest.len(),
            blocks,
            quiescent: self.quiescent,
            converged_peers,
            convergence_ms: Percentiles::of(&mut times),
            writing_ms: self.tracked.last_created.saturating_sub(first) / 1_000,
            virtual_ms: self.now_ms(),
            messages_per_peer: PerPeer::of(self.peers.iter().map(|p| p.sent_messages)),
            bytes_per_peer: BytesPerPeer::of(&sent_bytes),
            block_bytes_per_peer: PerPeer::of(held_bytes),
            deliveries: self.tracked.deliveries,
            rmr,
            byte_redundancy,
            last_delivery_hop,
            hop_histogram: self.tracked.hop_counts.clone(),
            delivery_ms: Percentiles::of_tally(&delivery),
            delivery_ms_histogram: Histogram::of_tally(&delivery),
            storage_bytes_per_peer: storage,
            rejections: self.counters.rejections.clone(),
            honest_feeds: flood.honest_feeds,
            honest_feeds_kept_min: flood.honest_feeds_kept_min,
            honest_feed_bytes: flood.honest_feed_bytes,
            sybil_feeds: self.flood.authors.len(),
            sybil_blocks: self.flood.ids.len(),
            sybil_blocks_stored_max: flood.sybil_blocks_stored_max,
            sybil_bytes_stored_max: flood.sybil_bytes_stored_max,
            sybil_blocks_refused: self.flood.refused,
            sybil_blocks_evicted: self.flood.evicted,
            honest_blocks_evicted: self.flood.honest_evicted,
            joiners: flood.joiners,
            joiner_honest_feeds_kept_min: flood.joiner_honest_feeds_kept_min,
            joiner_sybil_blocks_stored_max: flood.joiner_sybil_blocks_stored_max,
            lost_messages: self.counters.lost,
            partitioned_messages: self.counters.dropped_partition,
            events: self.trace.events(),
            trace_hash: self.trace.finish(),
            violations,
            reproduce: self.command(),
            curve,
            wall_ms: started.elapsed().as_millis() as u64,
            peak_memory_bytes: peak_memory_bytes(),
        };
        self.progress.end(&summary);
        Ok(report)
    }
}
