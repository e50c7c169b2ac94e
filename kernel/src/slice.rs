//! Slices: named pieces of derived state, each a filter and a reducer over blocks.
//!
//! A slice is pure: state and block in, state out, no IO and no clock. The kernel may replay it
//! from a checkpoint at any time (after a block arrives out of order, after a removal), so the
//! same retained blocks always give the same state. Effects belong to subscribers
//! ([`crate::Kernel::subscribe`]).

use std::any::Any;
use std::fmt;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;

use crate::block::Block;
use crate::identity::PublicKey;

/// A slice's judgement of a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The block is for this slice and valid: it will be reduced.
    Accept,
    /// The block is not for this slice.
    Ignore,
    /// The block is invalid for this slice in the current state. It stays stored and is judged
    /// again on every fold; only intrinsic faults keep a block out for good.
    Reject(String),
}

/// What a filter or reducer may look at: the block, its parent, and the earlier blocks of its
/// own feed. There is deliberately no `now`: verdicts must be the same on every replay. Blocks
/// dated in the future are held by the kernel until their time comes, so a slice never sees them.
pub struct Context<'a> {
    block: &'a Block,
    parent: Option<&'a Block>,
    feed: &'a dyn FeedLookup,
}

/// Lookup of a feed's earlier blocks, implemented by the kernel's index.
pub(crate) trait FeedLookup {
    fn block_at(&self, author: &PublicKey, seq: u64) -> Option<&Block>;
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        block: &'a Block,
        parent: Option<&'a Block>,
        feed: &'a dyn FeedLookup,
    ) -> Self {
        Self {
            block,
            parent,
            feed,
        }
    }
    /// The block being judged or reduced.
    pub fn block(&self) -> &'a Block {
        self.block
    }
    /// Its parent (`None` for genesis).
    pub fn parent(&self) -> Option<&'a Block> {
        self.parent
    }
    /// Its author.
    pub fn author(&self) -> PublicKey {
        self.block.author()
    }
    /// Its time (ms since the Unix epoch, by the author's clock).
    pub fn time(&self) -> u64 {
        self.block.time()
    }
    /// Its seq.
    pub fn seq(&self) -> u64 {
        self.block.seq()
    }
    /// Its body; empty once garbage-collected (collected blocks are never reduced).
    pub fn body(&self) -> &'a [u8] {
        self.block.body().unwrap_or(&[])
    }
    /// An earlier block of the same feed, by seq (`None` for `seq >= self.seq()`).
    pub fn earlier(&self, seq: u64) -> Option<&'a Block> {
        if seq >= self.block.seq() {
            return None;
        }
        // Safety of the lifetime: the lookup lives as long as the context.
        self.feed.block_at(&self.block.author(), seq)
    }
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("block", &self.block)
            .finish_non_exhaustive()
    }
}

/// A named piece of derived state: the Rust form of picostore's `{ name, initialValue, filter,
/// reducer }`.
///
/// # Determinism
/// `filter` and `reduce` must be pure functions of their arguments. A slice that declares
/// itself [`commutative`](Slice::commutative) promises that folding any set of blocks gives the
/// same state and verdicts in every order that keeps each feed's blocks in seq order; the kernel
/// then applies blocks as they arrive. Otherwise blocks are folded in the canonical order
/// (time, author, seq), with checkpoints and replay when a block arrives late.
pub trait Slice: Send + Sync + 'static {
    /// The derived state. Serialized with postcard for the state digest, so its serialization
    /// must be deterministic (use `BTreeMap`, not `HashMap`).
    type State: Clone
        + PartialEq
        + fmt::Debug
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static;

    /// The slice's name, unique within a kernel.
    fn name(&self) -> &str;

    /// The state before any block.
    fn initial(&self) -> Self::State;

    /// Judges a block against the current state.
    fn filter(&self, ctx: &Context<'_>, state: &Self::State) -> Verdict;

    /// Applies an accepted block to the state.
    fn reduce(&self, ctx: &Context<'_>, state: &mut Self::State);

    /// When this block's contribution dies, if ever (ms since the Unix epoch). Must depend on the
    /// block alone (e.g. its time plus a time-to-live), so every peer collects it at once.
    fn expires_at(&self, ctx: &Context<'_>) -> Option<u64> {
        let _ = ctx;
        None
    }

    /// The bodies this slice accepts, in a few words a user can act on, such as
    /// `{"value": <n>} with n above your last value`: what [`crate::Error::Ignored`] tells the
    /// author of a block no slice accepts. Defaults to `None` (the error then names no shape).
    fn expects(&self) -> Option<String> {
        None
    }

    /// Whether the slice is order-insensitive (see the trait docs). Defaults to `false`, the
    /// safe choice.
    fn commutative(&self) -> bool {
        false
    }

    /// The version of the slice's rules and state shape. Persisted state snapshots record it;
    /// a reopen with another version replays every block instead of restoring the old state.
    /// Raise it whenever `filter`, `reduce`, `expires_at` or `State` change. Defaults to 0.
    fn version(&self) -> u32 {
        0
    }
}

/// A 32-byte blake3 digest (of a slice state, or of a set of block ids).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The digest of a state: blake3 of its postcard encoding.
pub fn digest_of<T: Serialize>(state: &T) -> Digest {
    let bytes = postcard::to_allocvec(state).expect("serializing a state to a Vec cannot fail");
    Digest(*blake3::hash(&bytes).as_bytes())
}

/// A stream of a slice's state: the current state at once, then the state after each change.
///
/// A slow reader skips intermediate states and sees the latest one, so memory stays bounded.
pub struct Subscription<T> {
    inner: WatchStream<T>,
}

impl<T: Clone + Send + Sync + 'static> futures::Stream for Subscription<T> {
    type Item = T;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<T>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl<T> fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// A slice with its state, type-erased so the kernel can hold slices of different types.
pub(crate) trait AnySlice: Send + Sync {
    fn name(&self) -> &str;
    fn version(&self) -> u32;
    fn commutative(&self) -> bool;
    fn filter(&self, ctx: &Context<'_>) -> Verdict;
    fn reduce(&mut self, ctx: &Context<'_>);
    fn expires_at(&self, ctx: &Context<'_>) -> Option<u64>;
    fn expects(&self) -> Option<String>;
    fn snapshot(&self) -> Box<dyn Any + Send + Sync>;
    /// The state, postcard-encoded, for persisted snapshots.
    fn state_bytes(&self) -> Vec<u8>;
    /// Decodes a state written by `state_bytes` into a snapshot `restore` takes.
    fn decode_state(&self, bytes: &[u8]) -> Option<Box<dyn Any + Send + Sync>>;
    fn restore(&mut self, snapshot: &(dyn Any + Send + Sync));
    fn reset(&mut self);
    fn digest(&self) -> Digest;
    /// Sends the state to subscribers if it changed since the last publish.
    fn publish(&mut self);
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

pub(crate) struct Cell<S: Slice> {
    slice: S,
    state: S::State,
    watch: watch::Sender<S::State>,
    dirty: bool,
}

impl<S: Slice> Cell<S> {
    pub(crate) fn new(slice: S) -> Self {
        let state = slice.initial();
        let (watch, _) = watch::channel(state.clone());
        Self {
            slice,
            state,
            watch,
            dirty: false,
        }
    }

    pub(crate) fn state(&self) -> &S::State {
        &self.state
    }

    pub(crate) fn subscribe(&mut self) -> Subscription<S::State> {
        let state = &self.state;
        self.watch.send_if_modified(|seen| {
            if seen != state {
                *seen = state.clone();
                true
            } else {
                false
            }
        });
        self.dirty = false;
        Subscription {
            inner: WatchStream::new(self.watch.subscribe()),
        }
    }
}

impl<S: Slice> AnySlice for Cell<S> {
    fn name(&self) -> &str {
        self.slice.name()
    }
    fn version(&self) -> u32 {
        self.slice.version()
    }
    fn commutative(&self) -> bool {
        self.slice.commutative()
    }
    fn filter(&self, ctx: &Context<'_>) -> Verdict {
        self.slice.filter(ctx, &self.state)
    }
    fn reduce(&mut self, ctx: &Context<'_>) {
        self.slice.reduce(ctx, &mut self.state);
        self.dirty = true;
    }
    fn expires_at(&self, ctx: &Context<'_>) -> Option<u64> {
        self.slice.expires_at(ctx)
    }
    fn expects(&self) -> Option<String> {
        self.slice.expects()
    }
    fn snapshot(&self) -> Box<dyn Any + Send + Sync> {
        Box::new(self.state.clone())
    }
    fn state_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(&self.state).expect("serializing a state to a Vec cannot fail")
    }
    fn decode_state(&self, bytes: &[u8]) -> Option<Box<dyn Any + Send + Sync>> {
        let state: S::State = postcard::from_bytes(bytes).ok()?;
        Some(Box::new(state))
    }
    fn restore(&mut self, snapshot: &(dyn Any + Send + Sync)) {
        self.state = snapshot
            .downcast_ref::<S::State>()
            .expect("snapshots are taken from the same cell")
            .clone();
        self.dirty = true;
    }
    fn reset(&mut self) {
        self.state = self.slice.initial();
        self.dirty = true;
    }
    fn digest(&self) -> Digest {
        digest_of(&self.state)
    }
    fn publish(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        if self.watch.receiver_count() == 0 {
            return;
        }
        let state = &self.state;
        self.watch.send_if_modified(|seen| {
            if seen != state {
                *seen = state.clone();
                true
            } else {
                false
            }
        });
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
