//! # blockend-sim
//!
//! A deterministic, virtual-time swarm simulator: thousands of real
//! [`Kernel`](blockend_kernel::Kernel)s on `MemoryStore`, each driven by the same sans-IO sync
//! machine as the node ([`blockend_kernel::sync::Protocol`]), over a virtual network with
//! latency, bandwidth, loss, duplication, reordering, partitions, churn and adversaries. One
//! seeded ChaCha generator is the only randomness and one virtual clock the only time, so a
//! run is a function of its scenario and seed: a failing run prints the one command line that
//! reproduces it, and the same seed gives the same trace hash.
//!
//! What it is not: a simulation of libp2p. **gossipsub cannot be stepped in virtual time**
//! (it runs on its own timers inside a swarm), so live push is a *model* of it: every peer
//! keeps a mesh of degree D ([`config::Mesh::d`], gossipsub's `mesh_n`, 3, as the node has it) over its
//! connections, publishes a new block to its mesh, and forwards each block it newly counts to
//! every mesh peer that did not send it (duplicate suppression is the kernel's own: a known
//! block is a duplicate and is not forwarded). Peers below `d_lo` mesh peers graft more at
//! every heartbeat ([`config::Mesh::heartbeat_ms`], 1 s), without messages: mesh management
//! costs no bytes in the [`Report`]. gossipsub's lazy IHAVE/IWANT gossip is not modelled;
//! the sync machine's anti-entropy ([`Event::Tick`] every [`config::Mesh::sync_every`]
//! heartbeats: heads reconciled then wants, lost wants asked again, held blocks released, garbage
//! collection, missing bodies fetched) repairs what push misses. The protocol runs with
//! `sync::Config::with_push(false)`, since the mesh model pushes; fork proofs still travel
//! through it.
//!
//! The engine is a thin shell around each peer's machine, like the node and the in-memory
//! wire: connects, sync messages, pushed blocks (as [`Event::Pushed`], one event per sender, so
//! the kernel blames the peer that sent an invalid block) and ticks all become
//! [`Event`]s, and the engine carries out the outputs. Sync messages travel decoded
//! ([`Event::Received`]) so blocks stay shared between kernels; adversaries' raw bytes are
//! decoded by the receiving machine.
//!
//! [`Event`]: blockend_kernel::sync::Event
//! [`Event::Tick`]: blockend_kernel::sync::Event::Tick
//! [`Event::Pushed`]: blockend_kernel::sync::Event::Pushed
//! [`Event::Received`]: blockend_kernel::sync::Event::Received
//!
//! Every delivery runs the real kernel path (dedup, signature, filter, reduce, store). To fit
//! a million deliveries in a minute, blocks are shared (`Arc`, through
//! `Kernel::dispatch_shared`), signature verdicts are shared through one
//! [`VerdictCache`](blockend_kernel::kernel::VerdictCache) (a verdict depends only on the id
//! and signature), and pushed blocks that reach a peer within [`config::Mesh::batch_ms`] are
//! dispatched together.
//!
//! After quiescence the invariants of DESIGN.md are checked on every honest peer online at
//! the end: equal `set_hash` => equal digests; without capacity pressure one `set_hash`; no
//! honest block lost. Violations are listed in the [`Report`].
//!
//! Under a Sybil flood ([`config::Sybil`]: peers that push thousands of fresh feeds, some
//! backdated to 1970, into a swarm whose kernels have a `capacity_bytes` budget) the run also
//! fails unless every long-standing honest peer still holds every honest feed whole
//! ([`Report::honest_feeds_kept_min`]). The simulator never follows an author, so the
//! kernel's ranking ([`config::Retention`]) alone decides.
//!
//! ## Layout
//! - [`config`]: the scenario (TOML) and every model parameter.
//! - [`topology`]: connection graphs and the initial mesh.
//! - [`network`]: what travels on a link, its size, its latency.
//! - [`workload`]: the application under test and the blocks its users write.
//! - `engine`: the event loop, deliveries, adversaries and Sybil floods, the checks after
//!   quiescence.
//! - [`report`]: the JSON report and the SVG plot; `html`: the self-contained HTML page
//!   ([`Report::html`]); [`cli`]: what `blockend sim` calls.
//!
//! ## Example
//! ```
//! use blockend_sim::{Scenario, Simulation};
//!
//! let scenario = Scenario::from_toml(r#"
//!     name = "doc"
//!     peers = 8
//!     [workload]
//!     senders = "all"
//!     blocks_per_sender = 2
//! "#)?;
//! let report = Simulation::new(scenario)?.run()?;
//! assert!(report.violations.is_empty(), "{:?}", report.violations);
//! assert_eq!(report.converged_peers, 8);
//! assert_eq!(report.blocks, 16);
//! # Ok::<(), blockend_sim::Error>(())
//! ```

pub mod cli;
pub mod config;
mod engine;
mod error;
mod html;
pub mod network;
mod progress;
pub mod report;
pub mod topology;
mod trace;
pub mod workload;

pub use config::Scenario;
pub use engine::{Simulation, EPOCH_MS};
pub use error::Error;
pub use report::Report;
pub use workload::Workload;
