//! How new blocks spread live: the parameters the node (its gossipsub configuration) and the
//! simulator (its model of gossipsub's mesh) both read, so a figure from one holds for the
//! other.
//!
//! # The decision: a thin gossipsub mesh, repaired by reconciliation
//! Live push is gossipsub's mesh at degree **D = 3** (bounds 2 and 4), a publisher sending to
//! its mesh only (`flood_publish` off), and no IHAVE gossip (`gossip_lazy` 0): every peer
//! forwards a new block to the mesh peers that did not send it, and anything push misses is
//! found by the first reconciliation of heads ([`crate::sync`], every
//! [`Dissemination::tick_ms`]) after it is [`Dissemination::grace_ms`] old, which costs a few
//! hundred bytes a round when nothing is missing (so a repair takes up to grace + tick per
//! hop).
//!
//! Why not gossipsub's defaults: flooding over a mesh of degree D sends each block about
//! D - 1 times to each peer (RMR about D - 2; 3.8 measured at D = 6), and IHAVE gossip adds an
//! id per block per lazy peer per heartbeat, 32 bytes against a 118-byte counter block. Both
//! buy robustness that reconciliation now gives for a few hundred bytes a round. Why not an
//! eager tree with lazy repair (PlumTree, as iroh-gossip does): it would replace gossipsub,
//! and with it libp2p's peer scoring, validation pipeline and graylisting, which the node
//! relies on against flooders; a mesh of 3 is already near a tree (RMR about 1), and the lazy
//! half of PlumTree is what reconciliation does without a message per block. What D = 3
//! costs: more hops (last-delivery hop 13 instead of 8 at 300 peers) and a mesh that a peer
//! leaving breaks more often, repaired at the next heartbeat (graft) or reconciliation.
//!
//! Figures (simulator, release, seed 1, `all-senders`: 1,000 peers each writing one block at
//! about the same time; every byte a peer sends against the bytes of the blocks it holds):
//! before (D = 6, every head to every peer every tick) 9.5x, RMR 3.81; with reconciliation but
//! no grace, at 300 peers (debug build, `--peers 300`, `[mesh]` set in the file), 5.4x at D = 6
//! (bounds 4 and 12, RMR 3.85) against 2.2x at D = 3 (RMR 0.93); now 2.10x (blocks 1.96x,
//! reconciliation 0.015x, framing 0.12x), RMR 0.97, last-delivery hop 17, convergence p99
//! 1.65 s (1.29 s at D = 6). iroh-gossip: RMR 0.96, about 2.8x with its control messages. 100
//! peers x 1,000 blocks: 2.04x, RMR 0.96. The grace matters in bursts: without it the same
//! all-senders run spent 0.5x the block bytes on rounds that found blocks push was about to
//! deliver. The README's performance section has the table and the commands.

/// The dissemination parameters (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Dissemination {
    /// Mesh degree D: a new block is pushed to this many mesh peers (gossipsub `mesh_n`).
    pub mesh_n: usize,
    /// Below this many mesh peers a peer grafts more at the heartbeat (`mesh_n_low`).
    pub mesh_n_low: usize,
    /// Above this many it prunes (`mesh_n_high`).
    pub mesh_n_high: usize,
    /// Outbound connections kept in the mesh (`mesh_outbound_min`; at most `mesh_n / 2`).
    pub mesh_outbound_min: usize,
    /// Mesh maintenance period (`heartbeat_interval`).
    pub heartbeat_ms: u64,
    /// Whether a publisher sends its own blocks to every peer instead of its mesh
    /// (`flood_publish`). The simulator models it off.
    pub flood_publish: bool,
    /// Peers sent IHAVE gossip per heartbeat (`gossip_lazy`, with `gossip_factor` 0). The
    /// simulator models none.
    pub gossip_lazy: usize,
    /// Anti-entropy period: one reconciliation round with each peer, lost wants asked again,
    /// held blocks released, expired ones collected (the node's `Config::tick`).
    pub tick_ms: u64,
    /// Heads are reconciled as of this long ago ([`super::Config::grace_ms`]): younger blocks
    /// are push's to deliver. About push's time across the swarm (last-delivery hop 17 x 50
    /// ms at 1,000 simulated peers, plus a burst's spread).
    pub grace_ms: u64,
    /// How long a pushed block that waits in the kernel (an orphan, one from the future) keeps
    /// its gossip verdict open, so gossipsub forwards it once the kernel releases it; after
    /// that it is ignored (gossipsub keeps an unvalidated message for a few heartbeats). The
    /// node expires them on its tick, and so does the simulator's model.
    pub verdict_wait_ms: u64,
    /// At most this many such open verdicts per peer; a waiting block beyond them is ignored
    /// at once (reconciliation still finds it): valid orphans from an attacker fill it, they
    /// cannot grow it.
    pub max_open_verdicts: usize,
}

/// The parameters the node and the simulator use.
pub const DISSEMINATION: Dissemination = Dissemination {
    mesh_n: 3,
    mesh_n_low: 2,
    mesh_n_high: 4,
    mesh_outbound_min: 1,
    heartbeat_ms: 1_000,
    flood_publish: false,
    gossip_lazy: 0,
    tick_ms: 2_000,
    grace_ms: 2_000,
    verdict_wait_ms: 4_000,
    max_open_verdicts: 4_096,
};

impl Default for Dissemination {
    fn default() -> Self {
        DISSEMINATION
    }
}
