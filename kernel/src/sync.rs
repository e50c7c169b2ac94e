//! The sync protocol, version 2, as a state machine without IO.
//!
//! # The event model
//! One entry point, [`Protocol::event`], in the style of iroh-gossip's `proto`: a driver turns
//! what happens to it into an [`Event`] and carries out the [`Step`] the machine returns
//! ([`Output::Send`] a message, [`Output::Disconnect`] a peer). Timers are events too: the
//! driver sends [`Event::Tick`] on its period and the machine does all periodic work itself.
//! There are no sockets, tasks or clocks in here; the kernel's clock is the only time and the
//! tick count the only timer. The in-memory [`wire`](crate::wire), the libp2p node and the
//! simulator are thin shells around this one machine, and every piece of peer bookkeeping
//! (known heads, wants in flight, penalties, proofs and body requests already sent) lives here
//! alone.
//!
//! | event | what the machine does |
//! |---|---|
//! | [`Event::Connected`] | gives the peer a [`Source`] number, opens a reconciliation of heads |
//! | [`Event::Disconnected`] | forgets the peer |
//! | [`Event::Message`] / [`Event::Received`] | decodes (bytes) and handles a sync message |
//! | [`Event::Pushed`] | dispatches blocks another channel delivered (gossipsub, a mesh model) |
//! | [`Event::Malformed`] | counts bytes another channel carried that did not decode |
//! | [`Event::Local`] | pushes what a local create / dispatch accepted, spreads fork proofs |
//! | [`Event::Tick`] | releases held blocks, collects expired ones, re-asks lost wants, reconciles heads with every peer, fetches missing bodies |
//!
//! # The protocol
//! 1. On connect and on every tick each side **reconciles heads** (newest block per feed) with
//!    each peer by range-based set reconciliation (Aljoscha Meyer's, as negentropy does it):
//!    fingerprints of ranges of authors, split where they differ, ids listed only for small
//!    ranges and heads sent only where they differ ([`Message::Reconcile`], see `reconcile.rs` for the conversation and its bounds).
//!    Peers in sync exchange one message of a few hundred bytes; peers that differ pay about
//!    log16(n) round trips and a few hundred bytes per difference. Feeds one side will not take
//!    (evicted, refused for capacity, frozen) are declined and left out of that connection's
//!    fingerprints for [`DECLINE_TICKS`] ticks. A peer that opened a round with us since our
//!    last tick is not sent an opening of ours: one round tells both sides what they lack
//!    (when both opened on one tick, the side with the lower rank, from its author key, goes
//!    on opening).
//!    (Version 1 sent every head to every peer on every tick: 65 bytes a feed. A
//!    [`Message::Heads`] is still understood, and answered like the heads of a round.)
//! 2. For every feed where the peer is ahead, a side sends **want** `{author, from_seq}`; the
//!    answer is a bounded batch of **blocks**, and the side wants more while it is still behind.
//!    A reconnect costs the difference, not everything. A want unanswered for two ticks is
//!    asked again, so a message lost on a full channel cannot stall a feed.
//! 3. Blocks the kernel newly accepts from a sync message or a local write are **pushed** to
//!    every other peer that is not known to have them ([`Config::push`]); blocks another
//!    channel pushed are left to that channel. Duplicates are recognised by id and cost no
//!    reducer work. An orphan (its parent unknown) makes the machine ask its sender for the gap.
//! 4. **Fork proofs** go to every peer that may hold blocks past the fork, each proof to each
//!    peer once per connection, and what one incoming message can make the machine send is
//!    bounded ([`Config::batch_bytes`], [`MAX_PROOFS_PER_EVENT`]); the rest follows on later
//!    rounds. A fork may also lie below the heads (an author that signed two chains
//!    into two partitions): a peer whose head has another id than ours at a height we hold is
//!    shown our block there (once per feed per 30 ticks, 16 per message); an orphan whose
//!    parent diverges from a feed we hold ([`Kernel::diverging_parent`]) makes the machine ask
//!    its sender for that parent by id, and so on down to where the chains part, where the
//!    kernel finds the fork and the proof spreads as above.
//! 5. A block the kernel holds without its body (a peer sent the header only) is asked for by
//!    **want bodies** on the tick, each id of one peer that claims the block per tick and of
//!    each peer at most once per 30 ticks; the answer is the full copies the peer holds. The
//!    scan over missing bodies resumes where the last tick stopped, so bodies nobody can give
//!    never hold the others back.
//! 6. Every outgoing message is cut to the receiver's [`Limits`] by count and by bytes.
//! 7. Intrinsically invalid blocks and undecodable messages count against the peer that sent
//!    them: the kernel names the sender of every invalid block in [`Report::blame`], also for
//!    blocks that waited in its mempool and were released by another peer's message, so an
//!    honest peer that forwards a missing parent is never charged for the orphans a liar
//!    parked. A peer over its budget ([`Config::max_invalid`]) is disconnected.

mod dissemination;
mod inbound;
pub mod lockstep;
mod message;
mod outbound;
mod peer;
mod range;
mod reconcile;
mod tick;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use dissemination::{Dissemination, DISSEMINATION};
pub use message::{Limits, Message, Want};
pub use peer::PeerStats;
pub use range::{
    id_prefix, salt_key, Fingerprint, IdPrefix, Part, Reconcile, FINGERPRINT_BYTES, ID_PREFIX_BYTES,
};
pub use reconcile::{
    BUCKETS, DECLINE_TICKS, ITEMS_MAX, MAX_DECLINED, RECONCILES_PER_TICK, RECONCILE_BYTES_PER_TICK,
    WALKS_PER_TICK, WALK_SLACK,
};

use self::peer::Peer;
use crate::block::{Block, BlockId, DecodeError};
use crate::kernel::{Error, Kernel, Report, Source};

/// Most fork-proof blocks one event makes the machine send to one peer (the byte budget is
/// [`Config::batch_bytes`]); at least one pair always goes.
pub const MAX_PROOFS_PER_EVENT: usize = 64;

/// Protocol configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Message size caps, for decoding and for every message sent.
    pub limits: Limits,
    /// Bytes of blocks one incoming message may buy: the answer to a want or a want-bodies, the
    /// fork proofs sent per peer per event (a soft cap; one block or proof pair is always
    /// sent). Default 1 MiB.
    pub batch_bytes: usize,
    /// Invalid blocks or malformed messages tolerated from one peer before it is dropped.
    /// Default 16.
    pub max_invalid: u32,
    /// Most peers at once. Default 128.
    pub max_peers: usize,
    /// Whether newly accepted blocks are pushed to every peer (from sync messages and
    /// [`Event::Local`]). Default on. Drivers with their own dissemination turn it off: the
    /// simulator pushes along its mesh model. Fork proofs are sent either way.
    pub push: bool,
    /// Missing bodies asked for per tick, over all peers. Default 64.
    pub bodies_per_tick: usize,
    /// Reconcile heads as of this many ms ago (see `reconcile.rs`): blocks younger than this
    /// are left to push. Default 0 (every head at once: what an in-process wire or a test
    /// wants); the node and the simulator use [`DISSEMINATION`]`.grace_ms`.
    pub grace_ms: u64,
    /// Seeds the salts of the rounds this machine opens (see `reconcile.rs`). Keep it secret
    /// where peers may lie: the node draws it at random. Default 0 (deterministic, for tests
    /// and the simulator).
    pub salt_seed: u64,
}

impl Config {
    /// Turns flooding push on or off (see [`Config::push`]).
    pub fn with_push(mut self, push: bool) -> Self {
        self.push = push;
        self
    }

    /// Sets the peer table size.
    pub fn with_max_peers(mut self, max_peers: usize) -> Self {
        self.max_peers = max_peers;
        self
    }

    /// Sets the budget of invalid blocks and malformed messages per peer.
    pub fn with_max_invalid(mut self, max_invalid: u32) -> Self {
        self.max_invalid = max_invalid;
        self
    }

    /// Sets the reconciliation grace (see [`Config::grace_ms`]).
    pub fn with_grace(mut self, grace_ms: u64) -> Self {
        self.grace_ms = grace_ms;
        self
    }

    /// Sets the seed of the reconciliation salts (see [`Config::salt_seed`]).
    pub fn with_salt_seed(mut self, seed: u64) -> Self {
        self.salt_seed = seed;
        self
    }

    /// Sets the size caps.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            batch_bytes: 1024 * 1024,
            max_invalid: 16,
            max_peers: 128,
            push: true,
            bodies_per_tick: 64,
            grace_ms: 0,
            salt_seed: 0,
        }
    }
}

/// Why the machine asks the driver to drop a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The peer sent more invalid blocks or malformed messages than allowed.
    TooManyInvalid,
    /// The peer table is full.
    TooManyPeers,
}

/// What the machine asks the driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output<P> {
    /// Send `message` to `to`.
    Send {
        /// The peer.
        to: P,
        /// The message.
        message: Message,
    },
    /// Drop the connection to `peer`. The machine has already forgotten it.
    Disconnect {
        /// The peer.
        peer: P,
        /// Why.
        reason: DisconnectReason,
    },
}

/// What happened to the driver, for [`Protocol::event`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event<P> {
    /// A peer connected.
    Connected(P),
    /// A peer went away.
    Disconnected(P),
    /// An encoded sync message arrived from `from` (decoded against [`Config::limits`]; bytes
    /// that do not decode count against the peer).
    Message {
        /// The sender.
        from: P,
        /// The encoded message.
        bytes: Vec<u8>,
    },
    /// A sync message that is already decoded arrived from `from`: for in-process drivers that
    /// pass blocks by `Arc` (the simulator) instead of bytes.
    Received {
        /// The sender.
        from: P,
        /// The message.
        message: Message,
    },
    /// Blocks another channel delivered from `from` (gossipsub in the node, the mesh model in
    /// the simulator). They are dispatched and judged like blocks in a sync message, but not
    /// pushed on: the other channel spreads them.
    Pushed {
        /// The peer that delivered them.
        from: P,
        /// The blocks.
        blocks: Vec<Arc<Block>>,
    },
    /// Bytes another channel carried from `from` did not decode (a gossip payload that is not
    /// a block). Counts against the peer.
    Malformed {
        /// The sender.
        from: P,
        /// Why the bytes did not decode.
        error: DecodeError,
    },
    /// What a local `create_block`, `dispatch` or `poll` did: the accepted blocks are pushed
    /// (if [`Config::push`]), fork proofs spread, and blamed senders of released blocks
    /// penalised.
    Local(Report),
    /// The driver's timer: everything periodic (see the module docs).
    Tick,
}

/// What the machine did with one event.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Step<P> {
    /// What the driver must carry out, in order.
    pub outputs: Vec<Output<P>>,
    /// The kernel's report when the event dispatched blocks (a blocks message, pushed blocks,
    /// held blocks released on a tick). The node reads it for gossipsub validation.
    pub report: Option<Report>,
    /// Ids of the blocks the event carried from a peer, in order.
    pub received: Vec<BlockId>,
    /// Set when the event was bytes that did not decode.
    pub malformed: Option<DecodeError>,
    /// Invalid blocks and malformed messages charged in this step, per peer (the sender of
    /// this event or, for blocks that waited in the mempool, their own sender).
    pub penalties: Vec<(P, u32)>,
    /// Blocks whose bodies garbage collection dropped during this step.
    pub collected: usize,
}

impl<P> Default for Step<P> {
    fn default() -> Self {
        Self {
            outputs: Vec::new(),
            report: None,
            received: Vec::new(),
            malformed: None,
            penalties: Vec::new(),
            collected: 0,
        }
    }
}

/// The sync state machine for one local kernel and its peers, named by `P`.
pub struct Protocol<P> {
    config: Config,
    peers: BTreeMap<P, Peer>,
    /// Who each [`Source`] number names; a number is never reused, so the kernel's memory of a
    /// gone peer's blocks blames nobody else.
    sources: BTreeMap<Source, P>,
    next_source: u64,
    /// Ticks so far: the machine's only notion of time.
    ticks: u64,
    /// The last missing body looked at: the next tick's scan resumes after it.
    body_cursor: Option<BlockId>,
}

impl<P: Ord + Clone> Default for Protocol<P> {
    fn default() -> Self {
        Self::new(Config::default())
    }
}

impl<P: Ord + Clone> Protocol<P> {
    /// A machine with no peers.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            peers: BTreeMap::new(),
            sources: BTreeMap::new(),
            next_source: 0,
            ticks: 0,
            body_cursor: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Connected peers.
    pub fn peers(&self) -> impl Iterator<Item = &P> {
        self.peers.keys()
    }

    /// A peer's counters.
    pub fn peer_stats(&self, peer: &P) -> Option<&PeerStats> {
        self.peers.get(peer).map(|p| &p.stats)
    }

    /// The number the kernel knows a connected peer by (see [`Kernel::dispatch_from`]).
    pub fn source(&self, peer: &P) -> Option<Source> {
        self.peers.get(peer).map(|p| p.source)
    }

    /// The one entry point: handles `event` and returns what to do.
    ///
    /// # Errors
    /// Only the kernel's [`Error::Store`]; the machine's state stays consistent.
    pub fn event(&mut self, kernel: &mut Kernel, event: Event<P>) -> Result<Step<P>, Error> {
        let mut step = Step::default();
        match event {
            Event::Connected(peer) => self.on_connect(kernel, peer, &mut step),
            Event::Disconnected(peer) => self.on_disconnect(&peer),
            Event::Message { from, bytes } => self.on_bytes(kernel, &from, &bytes, &mut step)?,
            Event::Received { from, message } => {
                if self.peers.contains_key(&from) {
                    self.on_message(kernel, &from, message, &mut step)?;
                }
            }
            Event::Pushed { from, blocks } => {
                self.receive(kernel, &from, blocks, inbound::Via::Pushed, &mut step)?;
            }
            Event::Malformed { from, error } => self.on_malformed(&from, error, &mut step),
            Event::Local(report) => {
                self.blame(&report, &mut step);
                self.spread(&report, None, true, &mut step);
            }
            Event::Tick => self.on_tick(kernel, &mut step)?,
        }
        Ok(step)
    }

    fn on_connect(&mut self, kernel: &Kernel, peer: P, step: &mut Step<P>) {
        if !self.peers.contains_key(&peer) {
            if self.peers.len() >= self.config.max_peers {
                step.outputs.push(Output::Disconnect {
                    peer,
                    reason: DisconnectReason::TooManyPeers,
                });
                return;
            }
            let source = Source(self.next_source);
            self.next_source += 1;
            self.sources.insert(source, peer.clone());
            self.peers.insert(peer.clone(), Peer::new(source));
        }
        self.open_reconcile(kernel, &peer, None, step);
    }

    fn on_disconnect(&mut self, peer: &P) {
        if let Some(state) = self.peers.remove(peer) {
            self.sources.remove(&state.source);
        }
    }

    // Today's methods, kept as thin wrappers over the handlers `event` dispatches to. Those
    // that take `&Kernel` do the part of their event that needs no write access.

    /// [`Event::Connected`]: greets the peer with the local heads.
    pub fn connect(&mut self, kernel: &Kernel, peer: P) -> Vec<Output<P>> {
        let mut step = Step::default();
        self.on_connect(kernel, peer, &mut step);
        step.outputs
    }

    /// [`Event::Disconnected`].
    pub fn disconnect(&mut self, peer: &P) {
        self.on_disconnect(peer);
    }

    /// The part of [`Event::Tick`] that needs no write access to the kernel: lost wants asked
    /// again, a reconciliation round with every peer (anti-entropy), missing bodies asked for. Releasing held
    /// blocks and garbage collection need [`Protocol::event`].
    pub fn tick(&mut self, kernel: &Kernel) -> Vec<Output<P>> {
        let mut step = Step::default();
        self.periodic(kernel, &mut step);
        step.outputs
    }

    /// The local heads, paged, addressed to `peer`: a version-1 heads exchange (a connect and
    /// a tick now open a reconciliation instead; peers still answer heads messages).
    pub fn heads(&self, kernel: &Kernel, peer: &P) -> Vec<Output<P>> {
        let mut pages = Message::heads_pages(kernel.heads(), &self.config.limits);
        if pages.is_empty() {
            pages.push(Message::Heads(Vec::new()));
        }
        pages
            .into_iter()
            .map(|message| Output::Send {
                to: peer.clone(),
                message,
            })
            .collect()
    }

    /// [`Event::Message`] for borrowed bytes: decodes and handles them. A message that does not
    /// decode counts against the peer like an invalid block.
    ///
    /// # Errors
    /// Only the kernel's [`Error::Store`].
    pub fn handle_bytes(
        &mut self,
        kernel: &mut Kernel,
        from: &P,
        bytes: &[u8],
    ) -> Result<(Vec<Output<P>>, Option<Report>), Error> {
        let mut step = Step::default();
        self.on_bytes(kernel, from, bytes, &mut step)?;
        Ok((step.outputs, step.report))
    }

    /// [`Event::Received`]: handles one decoded message from `from`. Returns what to send and,
    /// for blocks, the kernel's dispatch report. Messages from unknown peers are ignored.
    ///
    /// # Errors
    /// Only the kernel's [`Error::Store`].
    pub fn handle(
        &mut self,
        kernel: &mut Kernel,
        from: &P,
        message: Message,
    ) -> Result<(Vec<Output<P>>, Option<Report>), Error> {
        let step = self.event(
            kernel,
            Event::Received {
                from: from.clone(),
                message,
            },
        )?;
        Ok((step.outputs, step.report))
    }

    /// [`Event::Malformed`]: counts a malformed message against `from`.
    pub fn malformed(&mut self, from: &P, error: &DecodeError) -> Vec<Output<P>> {
        let mut step = Step::default();
        self.on_malformed(from, error.clone(), &mut step);
        step.outputs
    }

    /// [`Event::Local`] with an exception: pushes what a dispatch newly accepted (and any fork
    /// proofs it found) to every peer but `except` that is not known to hold it. Proofs go to
    /// every peer, each once per connection.
    pub fn announce(&mut self, report: &Report, except: Option<&P>) -> Vec<Output<P>> {
        let mut step = Step::default();
        self.spread(report, except, true, &mut step);
        step.outputs
    }

    /// Pushes `blocks` to every peer but `except` that is not known to hold them (whatever
    /// [`Config::push`] says).
    pub fn push(&mut self, blocks: &[Arc<Block>], except: Option<&P>) -> Vec<Output<P>> {
        let mut step = Step::default();
        self.push_to_all(blocks, except, &mut step);
        step.outputs
    }
}
