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
//!   all slices fold canonically, because the accepted set is shared. A removal in a
//!   commutative kernel rewinds to a checkpoint taken in arrival order and replays what arrived
//!   after the removed block, so blocks removed soon after they arrived cost little.
//! - A block no slice accepts stays in the candidate set, uncounted, like a state-rejected one.
//! - Filters get no `now`; blocks dated beyond `now + max_clock_skew_ms` are held
//!   ([`Outcome::TimestampFromFuture`]) and applied by [`Kernel::poll`] when their time comes.
//! - Invalid blocks are remembered by [`Block::fingerprint`] (blake3 of id and signature), never
//!   by id alone.
//! - **Every way in applies the same rules.** The decoder's structural rules (genesis, and only
//!   genesis, has no parent: [`Block::check_structure`]) are checked again on admission, so a
//!   block built with [`Block::from_parts`] that breaks them is [`Outcome::Invalid`], never a
//!   panic.
//! - **A duplicate is the same block and brings nothing new**: same id, same signature, and not
//!   a full copy of a block held without its body. A copy with a known id and another signature
//!   is verified (a forgery is invalid and blamed, never passed on as a duplicate); a full copy
//!   restores a missing body wherever the header-only copy is (stored, waiting in the mempool,
//!   earlier in the same dispatch) unless the block expired here. Bodies that arrived missing
//!   are listed by [`Kernel::missing_bodies`] for sync to fetch.
//! - **Blame follows the block.** [`Kernel::dispatch_from`] names the sender ([`Source`]); the
//!   kernel remembers it for blocks that wait, and [`Report::blame`] names the sender of each
//!   invalid block, also when a waiting block is found invalid later because another peer sent
//!   its parent.
//! - **Every block of C links its feed** (DESIGN.md rule 4, changed): a block counts if no slice
//!   rejects it and one accepts it; its parent is in C by construction, whatever the parent's
//!   verdict. One rejected block no longer silences the rest of its feed, so an own feed stays
//!   writable after one of its blocks turns rejected.
//! - **State-rejected and ignored blocks are served on request** (DESIGN.md rule 5, decided):
//!   heads and wants cover the whole of C, so peers end with the same blocks and, without
//!   capacity pressure, the same `set_hash`; they are never pushed (only newly counted blocks
//!   are, and the node's gossipsub answers `Ignore` for them).
//! - **`set_hash` covers ids and bodies**: blake3 over C sorted by id, each id with whether its
//!   body is held. State is a function of exactly that, so equal `set_hash` means equal digests,
//!   whatever mix of header-only and full copies arrived. Snapshots record it and every slice's
//!   [`Slice::version`], so a snapshot is restored only onto exactly what it was taken of (not
//!   after a collection or a body restore that was committed after it, not after a reducer
//!   changed).
//! - **An own feed is never held**: [`Kernel::create_block`] dates its block by the clock, or at
//!   its parent's time if the clock went back, and never holds it as future-dated (its parent
//!   already counts), so the own feed stays writable after the clock steps back.
//!   [`Kernel::create_block_reported`] also returns what releasing held blocks first changed.
//! - **Tombstones hold for waiting blocks too**: a block released from the mempool (held or an
//!   orphan) of a tombstoned feed is [`Outcome::Tombstoned`], so an evicted feed cannot come
//!   back through the mempool.
//! - **One full re-fold per poll for peers' backdated blocks** (DESIGN.md rule 7, bounded): in an
//!   order-sensitive kernel, a peer's block sorting before every checkpoint re-folds everything;
//!   the first such dispatch since the last [`Kernel::poll`] runs at once, later ones are
//!   [`Outcome::Deferred`] to the next poll. Local dispatches are never deferred.
//! - **Forks below the heads are found** ([`Kernel::diverging_parent`]): an orphan whose parent
//!   differs from the block the feed holds at the parent's height proves its author signed two
//!   chains; the sync machine fetches parents down to where they part, where the fork is found.
//! - **A batch is the end state of its dispatch**: each block, timer and tombstone appears once,
//!   so a store may apply a batch's parts in any order.
//! - **Fork proofs count against capacity.** The pair is part of its feed's bytes; a fork found
//!   lower in a feed supersedes the pair above it, which is deleted; a feed frozen at genesis
//!   (only a proof left) is ranked and evicted like any other.
//! - Garbage collection ([`Kernel::gc`]): a collected block keeps its header and still links
//!   its feed; a block arriving without its body, or already expired as of the last `gc(t)`,
//!   enters collected ([`Outcome::Collected`]).
//! - Retention ranks feeds with [`Observed`] by default: followed authors, then this node's
//!   persisted arrival order, then length, never the authors' claimed times, so a flood of
//!   fresh or backdated identities cannot push out established feeds; blocks are ranked
//!   before they are admitted ([`Outcome::OverCapacity`]); see [`retention`].
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
    Application, BlockStatus, Error, FeedStanding, Head, Kernel, KernelBuilder, Outcome, Registry,
    Report, Source, Standing, Stats, MAX_FOLLOWS,
};
pub use retention::{FeedSummary, Observed, OldestLongest, Retention};
pub use slice::{Context, Digest, Slice, Subscription, Verdict};
pub use store::{BlockStore, MemoryStore};
