//! Limits and tuning, with safe defaults. Everything that grows from remote input is bounded
//! by a field here.

/// Kernel configuration. Build with `Config::default()` and the `with_*` methods.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Largest accepted block body, in bytes. Default 64 KiB.
    pub max_body_bytes: u32,
    /// How far in the future (ms) a block may be dated before the kernel holds it until its
    /// time comes. Default 5 s.
    pub max_clock_skew_ms: u64,
    /// Most blocks waiting for a parent or for their time. Default 4096.
    pub mempool_max_blocks: usize,
    /// Most bytes waiting in the mempool. Default 16 MiB.
    pub mempool_max_bytes: usize,
    /// How many invalid blocks are remembered (by fingerprint) so a resend costs a lookup.
    /// Default 8192.
    pub invalid_cache: usize,
    /// Blocks folded between two checkpoints of an order-sensitive fold. Default 512.
    pub checkpoint_interval: usize,
    /// Checkpoints kept; a block that sorts before the oldest forces a full re-fold.
    /// Default 32.
    pub max_checkpoints: usize,
    /// Batches at least this large are verified on all cores. Default 8.
    pub parallel_verify_threshold: usize,
    /// Byte budget for other authors' feeds (own feeds are never evicted and not counted);
    /// `None` keeps everything. Default `None`.
    pub capacity_bytes: Option<u64>,
    /// How long an evicted feed is refused (ms). Default one hour.
    pub tombstone_ttl_ms: u64,
    /// Most tombstones kept; the one expiring first goes when full. Default 4096.
    pub max_tombstones: usize,
    /// Changes (blocks added, removed or collected) between two persisted state snapshots.
    /// Default 10,000.
    pub snapshot_interval: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            max_clock_skew_ms: 5_000,
            mempool_max_blocks: 4096,
            mempool_max_bytes: 16 * 1024 * 1024,
            invalid_cache: 8192,
            checkpoint_interval: 512,
            max_checkpoints: 32,
            parallel_verify_threshold: 8,
            capacity_bytes: None,
            tombstone_ttl_ms: 60 * 60 * 1000,
            max_tombstones: 4096,
            snapshot_interval: 10_000,
        }
    }
}

impl Config {
    /// Sets [`Config::max_body_bytes`].
    pub fn with_max_body_bytes(mut self, bytes: u32) -> Self {
        self.max_body_bytes = bytes;
        self
    }
    /// Sets [`Config::max_clock_skew_ms`].
    pub fn with_max_clock_skew_ms(mut self, ms: u64) -> Self {
        self.max_clock_skew_ms = ms;
        self
    }
    /// Sets the mempool bounds.
    pub fn with_mempool(mut self, max_blocks: usize, max_bytes: usize) -> Self {
        self.mempool_max_blocks = max_blocks;
        self.mempool_max_bytes = max_bytes;
        self
    }
    /// Sets the checkpoint spacing and how many are kept (both at least 1).
    pub fn with_checkpoints(mut self, interval: usize, max: usize) -> Self {
        self.checkpoint_interval = interval.max(1);
        self.max_checkpoints = max.max(1);
        self
    }
    /// Sets the byte budget for other authors' feeds ([`Config::capacity_bytes`]).
    pub fn with_capacity_bytes(mut self, bytes: u64) -> Self {
        self.capacity_bytes = Some(bytes);
        self
    }
    /// Sets how long evicted feeds are refused, and how many tombstones are kept.
    pub fn with_tombstones(mut self, ttl_ms: u64, max: usize) -> Self {
        self.tombstone_ttl_ms = ttl_ms;
        self.max_tombstones = max;
        self
    }
    /// Sets [`Config::snapshot_interval`] (at least 1).
    pub fn with_snapshot_interval(mut self, changes: usize) -> Self {
        self.snapshot_interval = changes.max(1);
        self
    }
    /// Sets [`Config::parallel_verify_threshold`] (`usize::MAX` verifies on one core).
    pub fn with_parallel_verify_threshold(mut self, threshold: usize) -> Self {
        self.parallel_verify_threshold = threshold;
        self
    }
}
