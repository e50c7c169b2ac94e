//! # blockend-kernel
//!
//! The core of blockend: signed block feeds, filter/reducer *slices* that derive state from
//! them, a deterministic fold, a bounded mempool, and the sans-IO sync protocol. No sockets and
//! no runtime: drivers (the in-memory [`wire`], the libp2p node, the simulator) move bytes and
//! call in.
//!
//! What it is not: a network stack or a database. The [`store`] trait is where blocks persist:
//! `RocksStore` (feature `rocksdb`, on by default) for nodes, [`MemoryStore`] for tests and the
//! simulator.
//!
//! ## Layout
//! - [`identity`], [`block`], [`feed`]: the data model and its wire format.
//! - [`slice`](mod@slice): the [`Slice`] trait, verdicts, digests, subscriptions.
//! - [`kernel`]: [`Kernel`], the engine; [`Application`] is what a user implements.
//! - [`sync`]: the protocol state machine; [`wire`]: two kernels wired in one process.
//! - [`store`], [`clock`], [`config`], [`retention`]: what the kernel is built from.
//!
//! ## Decisions beyond DESIGN.md
//! - Canonical fold order is (time, author, seq); one feed per author inside a kernel (a
//!   parent by another author is [`BlockError::ForeignParent`]). Multi-author feeds exist at the
//!   [`Feed`] level.
//! - If every slice is [`Slice::commutative`], blocks are applied as they arrive; if any is not,
//!   all slices fold canonically, because the accepted set is shared.
//! - A block no slice accepts stays in the candidate set, uncounted, like a state-rejected one.
//! - Filters get no `now`; blocks dated beyond `now + max_clock_skew_ms` are held
//!   ([`Outcome::TimestampFromFuture`]) and applied by [`Kernel::poll`] when their time comes.
//! - Invalid blocks are remembered by [`Block::fingerprint`] (blake3 of id and signature), never
//!   by id alone.
//! - [`Subscription`]s coalesce: a slow reader sees the latest state.
//! - Garbage collection ([`Kernel::gc`]): a collected block keeps its header and still links
//!   its feed; a block arriving without its body, or already expired as of the last `gc(t)`,
//!   enters collected ([`Outcome::Collected`]).
//! - Retention ranks feeds with [`OldestLongest`] by default (age and length before recency,
//!   so fresh identities cannot push out established feeds); see [`retention`].
//! - A reopen restores the persisted state snapshot when it describes exactly the stored
//!   blocks, and otherwise replays every block (without re-checking signatures); see
//!   `kernel/snapshot.rs`. Snapshots are written every `Config::snapshot_interval` changes, in
//!   the same batch as the blocks, and on [`Kernel::close`].
//!
//! ## Example
//! ```
//! use blockend_kernel::{Application, Context, Kernel, Registry, Slice, Verdict};
//!
//! /// Sums the first byte of every block.
//! struct Sum;
//! impl Slice for Sum {
//!     type State = u64;
//!     fn name(&self) -> &str { "sum" }
//!     fn initial(&self) -> u64 { 0 }
//!     fn filter(&self, ctx: &Context<'_>, _: &u64) -> Verdict {
//!         match ctx.body() {
//!             [_] => Verdict::Accept,
//!             _ => Verdict::Reject("one byte please".into()),
//!         }
//!     }
//!     fn reduce(&self, ctx: &Context<'_>, sum: &mut u64) { *sum += u64::from(ctx.body()[0]) }
//!     fn commutative(&self) -> bool { true }
//! }
//!
//! struct App;
//! impl Application for App {
//!     fn register(&self, slices: &mut Registry) { slices.add(Sum); }
//! }
//!
//! let mut alice = Kernel::builder(&App).open()?;
//! let mut bob = Kernel::builder(&App).open()?;
//! alice.create_block(vec![2])?;
//! alice.create_block(vec![40])?;
//! assert!(alice.create_block(vec![1, 2]).is_err()); // rejected: state unchanged
//!
//! // Hand Alice's feed to Bob as one buffer.
//! let bytes = alice.feed(&alice.author()).encode();
//! let feed = blockend_kernel::Feed::decode(&bytes)?;
//! bob.dispatch(feed.into_blocks())?;
//! assert_eq!(bob.state::<Sum>(), Some(&42));
//! assert_eq!(bob.digest::<Sum>(), alice.digest::<Sum>());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod block;
pub mod clock;
pub mod config;
pub mod feed;
pub mod identity;
pub mod kernel;
pub mod retention;
pub mod slice;
pub mod store;
pub mod sync;
pub mod wire;

pub use block::{Block, BlockError, BlockId, DecodeError, Header, Signature};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
pub use feed::{Diff, Feed, FeedError, Merged};
pub use identity::{Identity, PublicKey};
pub use kernel::{
    Application, Error, Head, Kernel, KernelBuilder, Outcome, Registry, Report, Source, Stats,
};
pub use retention::{FeedSummary, OldestLongest, Retention};
pub use slice::{Context, Digest, Slice, Subscription, Verdict};
pub use store::{BlockStore, MemoryStore};
