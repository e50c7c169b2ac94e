//! What a run measured: the JSON report and the convergence plot.

use serde::Serialize;

use crate::network::Bytes;

/// Counters the engine keeps while it runs.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub rejections: Rejections,
    pub lost: u64,
    pub duplicated: u64,
    pub dropped_partition: u64,
    pub dropped_offline: u64,
    /// Blocks newly counted anywhere, honest blocks created, scripted changes: for quiescence.
    pub activity: u64,
    pub wants: u64,
    pub create_failures: Vec<String>,
}

impl Counters {
    pub(crate) fn new(_peers: usize) -> Self {
        Self::default()
    }
}

/// What honest peers refused, summed over them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Rejections {
    /// Blocks with a bad signature or key (forged).
    pub invalid_signature: u64,
    /// Blocks over the body size limit.
    pub too_large: u64,
    /// Other intrinsically invalid blocks (bad link to the parent, time before parent).
    pub invalid_other: u64,
    /// Messages that did not decode (malformed or over the message size limit).
    pub malformed_messages: u64,
    /// Fork proofs found (one per peer that found one).
    pub forks: u64,
    /// Blocks refused because their feed is frozen by a fork.
    pub frozen: u64,
    /// Blocks a slice rejected in the current state.
    pub state_rejected: u64,
    /// Connections dropped because a peer sent too many invalid blocks or messages.
    pub disconnects: u64,
    /// Duplicate arrivals (cost a lookup each; floods show here).
    pub duplicates: u64,
    /// Blocks refused at the door because the store is full and their feed ranks last.
    pub over_capacity: u64,
    /// Blocks refused because their feed was evicted a short while ago.
    pub tombstoned: u64,
}

/// Three points of a distribution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `values` (sorted here).
    pub fn of(values: &mut [u64]) -> Self {
        values.sort_unstable();
        let at = |q: f64| -> u64 {
            if values.is_empty() {
                return 0;
            }
            let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            values[rank - 1]
        };
        Self {
            p50: at(0.50),
            p99: at(0.99),
            max: values.last().copied().unwrap_or(0),
        }
    }

    /// Nearest-rank percentiles of a tally: `(value, times)` pairs sorted by value.
    pub fn of_tally(tally: &[(u64, u64)]) -> Self {
        let total: u64 = tally.iter().map(|(_, n)| n).sum();
        let at = |q: f64| -> u64 {
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total.max(1));
            let mut seen = 0;
            for &(value, n) in tally {
                seen += n;
                if seen >= rank {
                    return value;
                }
            }
            0
        };
        Self {
            p50: at(0.50),
            p99: at(0.99),
            max: tally
                .iter()
                .rev()
                .find(|(_, n)| *n > 0)
                .map_or(0, |(v, _)| *v),
        }
    }
}

/// Counts of values in buckets that grow with the values, so one plot shows a fast bulk and a
/// slow tail: `[0, 1)`, then 1, 2, 3, 5 and 7 times each power of ten as edges (`[1, 2)`,
/// `[2, 3)`, `[3, 5)`, `[5, 7)`, `[7, 10)`, `[10, 20)`, ...), up to the largest value's bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Histogram {
    /// Bucket edges, one more than `counts`: bucket `i` counts the values in
    /// `[edges[i], edges[i + 1])`. Empty when there were no values.
    pub edges: Vec<u64>,
    /// Values in each bucket.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// Buckets a tally of `(value, times)` pairs, in any order.
    pub fn of_tally(tally: &[(u64, u64)]) -> Self {
        let Some(largest) = tally.iter().filter(|(_, n)| *n > 0).map(|(v, _)| *v).max() else {
            return Self::default();
        };
        let mut edges = vec![0u64];
        'grow: for power in 0..=19u32 {
            for mantissa in [1u64, 2, 3, 5, 7] {
                let Some(edge) = 10u64
                    .checked_pow(power)
                    .and_then(|p| p.checked_mul(mantissa))
                else {
                    edges.push(u64::MAX);
                    break 'grow;
                };
                edges.push(edge);
                if edge > largest {
                    break 'grow;
                }
            }
        }
        let mut counts = vec![0; edges.len() - 1];
        for &(value, n) in tally {
            // The bucket whose upper edge is the first one above the value.
            let upper = edges.partition_point(|e| *e <= value).min(counts.len());
            counts[upper - 1] += n;
        }
        Self { edges, counts }
    }
}

/// Mean and largest value over peers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PerPeer {
    /// Mean over peers.
    pub mean: f64,
    /// Largest.
    pub max: u64,
}

impl PerPeer {
    /// Summarises `values`.
    pub fn of(values: impl IntoIterator<Item = u64>) -> Self {
        let (mut sum, mut count, mut max) = (0u128, 0u64, 0u64);
        for v in values {
            sum += u128::from(v);
            count += 1;
            max = max.max(v);
        }
        Self {
            mean: if count == 0 {
                0.0
            } else {
                sum as f64 / count as f64
            },
            max,
        }
    }
}

/// Bytes sent per peer, by what they pay for ([`Bytes`]): `total` is the sum of the other
/// four, peer by peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct BytesPerPeer {
    /// Every byte, framing included.
    pub total: PerPeer,
    /// Encoded blocks (pushed, or in `Blocks` messages with their length prefixes).
    pub blocks: PerPeer,
    /// `Heads` messages.
    pub heads: PerPeer,
    /// `Want` and `WantBodies` messages.
    pub wants: PerPeer,
    /// Framing, push hop annotations, `Blocks` message headers, adversaries' raw bytes.
    pub control: PerPeer,
}

impl BytesPerPeer {
    /// Summarises each peer's bytes.
    pub fn of(peers: &[Bytes]) -> Self {
        let part = |f: fn(&Bytes) -> u64| PerPeer::of(peers.iter().map(f));
        Self {
            total: part(Bytes::total),
            blocks: part(|b| b.blocks),
            heads: part(|b| b.heads),
            wants: part(|b| b.wants),
            control: part(|b| b.control),
        }
    }
}

/// The result of a run, printed as one JSON line.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// Peers simulated.
    pub peers: usize,
    /// Honest peers online at the end (the ones checked).
    pub honest_peers: usize,
    /// Honest blocks written.
    pub blocks: usize,
    /// Whether the swarm went quiet before `max_time_ms`.
    pub quiescent: bool,
    /// Honest peers holding every honest block at the end.
    pub converged_peers: usize,
    /// Virtual ms from the first honest block until each converged peer held every honest
    /// block.
    pub convergence_ms: Percentiles,
    /// Virtual ms from the first to the last honest block written.
    pub writing_ms: u64,
    /// Virtual time at the end of the run, ms.
    pub virtual_ms: u64,
    /// Messages sent per peer.
    pub messages_per_peer: PerPeer,
    /// Bytes sent per peer, by what they pay for, over every peer (adversaries and Sybil
    /// peers too, as `messages_per_peer`; an adversary's raw bytes are `control`).
    pub bytes_per_peer: BytesPerPeer,
    /// Encoded bytes of the distinct honest blocks each checked honest peer holds at the end,
    /// its own included.
    pub block_bytes_per_peer: PerPeer,
    /// Arrivals of honest blocks at peers, duplicates included.
    pub deliveries: u64,
    /// Relative message redundancy: deliveries / (blocks x (peers - 1)) - 1. Zero is a
    /// perfect tree; plain flooding over k connections is about k - 1. It counts payload
    /// messages (block deliveries) only, as iroh-gossip does; [`Report::byte_redundancy`]
    /// counts every byte.
    pub rmr: f64,
    /// Byte-weighted redundancy: every byte the checked honest peers sent, over the encoded
    /// bytes of the honest blocks they hold and did not write, minus one. Zero would mean every
    /// byte sent was a block some peer needed; 0.0 when no peer holds another's block.
    pub byte_redundancy: f64,
    /// Largest hop count at which a peer first counted an honest block.
    pub last_delivery_hop: u16,
    /// Each time an honest peer newly counted an honest block it did not write (again after
    /// an eviction or a restart without its store): how many times at each hop, index = hop
    /// (so index 0, a peer's own writing, stays zero). Sums to the deliveries below.
    pub hop_histogram: Vec<u64>,
    /// The same events: virtual ms from the block's writing until the peer counted it.
    pub delivery_ms: Percentiles,
    /// The same events bucketed by those ms, in buckets that grow with the time.
    pub delivery_ms_histogram: Histogram,
    /// Bytes each honest peer's kernel holds (as counted for retention).
    pub storage_bytes_per_peer: PerPeer,
    /// What honest peers refused.
    pub rejections: Rejections,
    /// Honest feeds written (authors of honest blocks).
    pub honest_feeds: usize,
    /// The fewest honest feeds any long-standing honest peer (online at the end, not a
    /// joiner) holds whole. A Sybil run passes only if this is `honest_feeds`.
    pub honest_feeds_kept_min: usize,
    /// Bytes of the honest feeds as kernels count them for capacity (the most any honest peer
    /// holds of them; all of them once one peer holds every honest feed).
    pub honest_feed_bytes: u64,
    /// Fresh feeds the Sybil peers signed.
    pub sybil_feeds: usize,
    /// Blocks in them.
    pub sybil_blocks: usize,
    /// The most Sybil blocks any long-standing honest peer holds at the end.
    pub sybil_blocks_stored_max: u64,
    /// The most bytes of Sybil feeds any long-standing honest peer holds at the end.
    pub sybil_bytes_stored_max: u64,
    /// Sybil blocks honest peers refused for capacity (at the door or tombstoned), summed.
    pub sybil_blocks_refused: u64,
    /// Sybil blocks honest peers evicted with their feeds, summed (every evicted block that
    /// is not an honest one; other adversaries' feeds would count here too).
    pub sybil_blocks_evicted: u64,
    /// Honest blocks honest peers evicted with their feeds, summed.
    pub honest_blocks_evicted: u64,
    /// Fresh honest peers that joined after the flood (online at the end).
    pub joiners: usize,
    /// The fewest honest feeds a joiner holds whole (reported only; `null` without joiners).
    pub joiner_honest_feeds_kept_min: Option<usize>,
    /// The most Sybil blocks a joiner holds.
    pub joiner_sybil_blocks_stored_max: u64,
    /// Messages lost by the loss model.
    pub lost_messages: u64,
    /// Messages dropped by a partition.
    pub partitioned_messages: u64,
    /// Events the engine ran.
    pub events: u64,
    /// blake3 over every event, in order: equal for equal scenario and seed.
    pub trace_hash: String,
    /// Invariants broken after quiescence (empty when the run passed).
    pub violations: Vec<String>,
    /// The command line that reproduces the run.
    pub reproduce: String,
    /// Fraction of converged honest peers over virtual time: (ms, fraction), for the plot.
    #[serde(skip)]
    pub curve: Vec<(u64, f64)>,
    /// Wall-clock time of the run, ms (not deterministic).
    pub wall_ms: u64,
    /// Peak resident memory of the process (VmHWM), bytes; 0 where unknown.
    pub peak_memory_bytes: u64,
}

impl Report {
    /// The report without its wall-clock measurements: what two runs with the same seed must
    /// agree on.
    pub fn deterministic(&self) -> Self {
        Self {
            wall_ms: 0,
            peak_memory_bytes: 0,
            ..self.clone()
        }
    }

    /// The report as one JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report serialises")
    }

    /// An SVG plot of the fraction of converged honest peers over virtual time.
    pub fn svg(&self) -> String {
        let (w, h, left, bottom, top, right) = (640.0, 360.0, 60.0, 40.0, 30.0, 20.0);
        let end = self
            .curve
            .last()
            .map_or(1, |(t, _)| *t)
            .max(self.convergence_ms.max)
            .max(1) as f64;
        let x = |t: u64| left + (t as f64 / end) * (w - left - right);
        let y = |f: f64| top + (1.0 - f) * (h - top - bottom);
        let mut points = format!("{:.1},{:.1}", x(0), y(0.0));
        let mut last = 0.0;
        for &(t, f) in &self.curve {
            points.push_str(&format!(
                " {:.1},{:.1} {:.1},{:.1}",
                x(t),
                y(last),
                x(t),
                y(f)
            ));
            last = f;
        }
        points.push_str(&format!(" {:.1},{:.1}", x(end as u64), y(last)));
        format!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="{w}" height="{h}" fill="white"/>
<text x="{left}" y="18">{name}: {conv} of {honest} honest peers converged (seed {seed}, {peers} peers)</text>
<line x1="{left}" y1="{y0}" x2="{xr}" y2="{y0}" stroke="black"/>
<line x1="{left}" y1="{y0}" x2="{left}" y2="{y1}" stroke="black"/>
<text x="{xl}" y="{y1t}" text-anchor="end">100%</text>
<text x="{xl}" y="{y0t}" text-anchor="end">0%</text>
<text x="{left}" y="{yb}">0 ms</text>
<text x="{xr}" y="{yb}" text-anchor="end">{end} ms (virtual, from the first block)</text>
<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{points}"/>
</svg>
"##,
            name = xml(&self.scenario),
            conv = self.converged_peers,
            honest = self.honest_peers,
            seed = self.seed,
            peers = self.peers,
            y0 = y(0.0),
            y1 = y(1.0),
            xr = w - right,
            xl = left - 6.0,
            y1t = y(1.0) + 4.0,
            y0t = y(0.0) + 4.0,
            yb = h - 12.0,
            end = end as u64,
        )
    }
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Peak resident memory of this process (VmHWM in /proc/self/status), in bytes; 0 where the
/// file does not exist.
pub fn peak_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let kb = line.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?;
                kb.trim().parse::<u64>().ok()
            })
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut values: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(
            Percentiles::of(&mut values),
            Percentiles {
                p50: 50,
                p99: 99,
                max: 100
            }
        );
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
    }

    #[test]
    fn tally_percentiles_weigh_each_value_by_its_count() {
        let tally = [(10, 49), (20, 50), (30, 1)];
        assert_eq!(
            Percentiles::of_tally(&tally),
            Percentiles {
                p50: 20,
                p99: 20,
                max: 30
            }
        );
        assert_eq!(Percentiles::of_tally(&[]), Percentiles::default());
    }

    #[test]
    fn histogram_buckets_grow_one_two_three_five_seven() {
        let hist = Histogram::of_tally(&[(0, 1), (1, 2), (4, 3), (9, 1), (10, 5), (250, 7)]);
        assert_eq!(
            hist.edges,
            [0, 1, 2, 3, 5, 7, 10, 20, 30, 50, 70, 100, 200, 300]
        );
        assert_eq!(hist.counts, [1, 2, 0, 3, 0, 1, 5, 0, 0, 0, 0, 0, 7]);
        assert_eq!(Histogram::of_tally(&[(5, 0)]), Histogram::default());
    }

    #[test]
    fn peak_memory_is_read_on_linux() {
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(peak_memory_bytes() > 0);
        }
    }
}
