//! The sync protocol, version 1, as a state machine without IO.
//!
//! A driver tells the machine that a peer connected, hands it each message a peer sent, tells
//! it about blocks the local kernel accepted, and calls [`Protocol::tick`] now and then; the
//! machine answers with [`Output`]s (messages to send, peers to drop). The in-memory wire, the
//! libp2p node and the simulator are thin shells around this one machine.
//!
//! 1. On connect each side sends its **heads** (newest counted block per feed).
//! 2. For every feed where the peer is ahead, a side sends **want** `{author, from_seq}`; the
//!    answer is a bounded batch of **blocks**, and the side wants more while it is still behind.
//!    A reconnect costs the difference, not everything.
//! 3. Blocks the kernel newly accepts are **pushed** to every other peer that is not known to
//!    have them; duplicates are recognised by id and cost no reducer work.
//! 4. Intrinsically invalid blocks and undecodable messages count against their sender; a peer
//!    over its budget is disconnected.
//! 5. [`Protocol::tick`] re-sends heads to every peer (anti-entropy), repairing whatever a
//!    dropped message lost.

mod message;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use message::{Limits, Message, Want};

use crate::block::{Block, DecodeError};
use crate::identity::PublicKey;
use crate::kernel::{Error, Kernel, Report};

/// Protocol configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Message size caps.
    pub limits: Limits,
    /// Bytes of blocks per answer to a want (a soft cap; one block is always sent). Default 1 MiB.
    pub batch_bytes: usize,
    /// Invalid blocks or malformed messages tolerated from one peer before it is dropped.
    /// Default 16.
    pub max_invalid: u32,
    /// Most peers at once. Default 128.
    pub max_peers: usize,
    /// Whether newly accepted blocks are pushed to every peer ([`Protocol::push`]). Default
    /// on. Drivers with their own dissemination turn it off: the libp2p node pushes with
    /// gossipsub, the simulator along its mesh model. Fork proofs are sent either way.
    pub push: bool,
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            batch_bytes: 1024 * 1024,
            max_invalid: 16,
            max_peers: 128,
            push: true,
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
    /// Drop the connection to `peer`.
    Disconnect {
        /// The peer.
        peer: P,
        /// Why.
        reason: DisconnectReason,
    },
}

/// Per-peer counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStats {
    /// Blocks received from the peer.
    pub blocks_received: u64,
    /// Blocks sent to the peer.
    pub blocks_sent: u64,
    /// Invalid blocks and malformed messages from the peer.
    pub invalid: u32,
}

#[derive(Default)]
struct Peer {
    /// Highest seq per feed the peer is known to hold (from its heads, or what we exchanged).
    known: BTreeMap<PublicKey, u64>,
    /// The want in flight per feed: (from_seq asked, tick when asked). A heads message does not
    /// ask again for what is already asked, so a periodic heads exchange during a long
    /// catch-up does not start a second transfer of the same blocks. A want unanswered for
    /// [`WANT_TICKS`] ticks counts as lost and may be asked again.
    pending: BTreeMap<PublicKey, (u64, u64)>,
    stats: PeerStats,
}

/// Most feeds remembered per peer: the map grows from the peer's own claims, so it is capped.
const MAX_KNOWN_FEEDS: usize = 1 << 16;

/// Ticks after which an unanswered want counts as lost.
const WANT_TICKS: u64 = 2;

impl Peer {
    fn knows(&mut self, author: PublicKey, seq: u64) {
        if self.known.len() >= MAX_KNOWN_FEEDS && !self.known.contains_key(&author) {
            return;
        }
        let known = self.known.entry(author).or_insert(seq);
        *known = (*known).max(seq);
    }
    fn has(&self, block: &Block) -> bool {
        self.known
            .get(&block.author())
            .is_some_and(|&s| s >= block.seq())
    }
}

/// The sync state machine for one local kernel and its peers, named by `P`.
pub struct Protocol<P> {
    config: Config,
    peers: BTreeMap<P, Peer>,
    /// Calls to [`Protocol::tick`]: the machine's only notion of time.
    ticks: u64,
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
            ticks: 0,
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

    /// A peer connected: greets it with the local heads.
    pub fn connect(&mut self, kernel: &Kernel, peer: P) -> Vec<Output<P>> {
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.config.max_peers {
            return vec![Output::Disconnect {
                peer,
                reason: DisconnectReason::TooManyPeers,
            }];
        }
        self.peers.entry(peer.clone()).or_default();
        self.heads(kernel, &peer)
    }

    /// A peer went away.
    pub fn disconnect(&mut self, peer: &P) {
        self.peers.remove(peer);
    }

    /// Anti-entropy: re-sends the local heads to every peer.
    pub fn tick(&mut self, kernel: &Kernel) -> Vec<Output<P>> {
        self.ticks += 1;
        let peers: Vec<P> = self.peers.keys().cloned().collect();
        peers.iter().flat_map(|p| self.heads(kernel, p)).collect()
    }

    /// The local heads, paged, addressed to `peer` (what `connect` and `tick` send).
    pub fn heads(&self, kernel: &Kernel, peer: &P) -> Vec<Output<P>> {
        let heads = kernel.heads();
        if heads.is_empty() {
            return vec![Output::Send {
                to: peer.clone(),
                message: Message::Heads(Vec::new()),
            }];
        }
        heads
            .chunks(self.config.limits.max_heads.max(1))
            .map(|page| Output::Send {
                to: peer.clone(),
                message: Message::Heads(page.to_vec()),
            })
            .collect()
    }

    /// Decodes and handles bytes from `from`. A message that does not decode counts against
    /// the peer like an invalid block.
    ///
    /// # Errors
    /// Only the kernel's [`Error::Store`].
    pub fn handle_bytes(
        &mut self,
        kernel: &mut Kernel,
        from: &P,
        bytes: &[u8],
    ) -> Result<(Vec<Output<P>>, Option<Report>), Error> {
        match Message::decode(bytes, &self.config.limits) {
            Ok(message) => self.handle(kernel, from, message),
            Err(error) => Ok((self.malformed(from, &error), None)),
        }
    }

    /// Counts a malformed message against `from`.
    pub fn malformed(&mut self, from: &P, _error: &DecodeError) -> Vec<Output<P>> {
        self.penalise(from, 1)
    }

    fn penalise(&mut self, from: &P, count: u32) -> Vec<Output<P>> {
        let Some(peer) = self.peers.get_mut(from) else {
            return Vec::new();
        };
        peer.stats.invalid = peer.stats.invalid.saturating_add(count);
        if peer.stats.invalid > self.config.max_invalid {
            self.peers.remove(from);
            return vec![Output::Disconnect {
                peer: from.clone(),
                reason: DisconnectReason::TooManyInvalid,
            }];
        }
        Vec::new()
    }

    /// Handles one message from `from`. Returns what to send and, for blocks, the kernel's
    /// dispatch report. Messages from unknown peers are ignored.
    ///
    /// # Errors
    /// Only the kernel's [`Error::Store`].
    pub fn handle(
        &mut self,
        kernel: &mut Kernel,
        from: &P,
        message: Message,
    ) -> Result<(Vec<Output<P>>, Option<Report>), Error> {
        if !self.peers.contains_key(from) {
            return Ok((Vec::new(), None));
        }
        Ok(match message {
            Message::Heads(heads) => (self.on_heads(kernel, from, heads), None),
            Message::Want(wants) => (self.on_want(kernel, from, &wants), None),
            Message::Blocks(blocks) => {
                let (outputs, report) = self.on_blocks(kernel, from, blocks)?;
                (outputs, Some(report))
            }
        })
    }

    fn on_heads(
        &mut self,
        kernel: &Kernel,
        from: &P,
        heads: Vec<crate::kernel::Head>,
    ) -> Vec<Output<P>> {
        let peer = self.peers.get_mut(from).expect("checked by handle");
        let mut wants = Vec::new();
        let mut proofs = Vec::new();
        for head in heads {
            peer.knows(head.author, head.seq);
            if let Some((a, b)) = kernel.fork_proof(&head.author) {
                // We froze this feed; if the peer holds blocks past the fork, show it why.
                if head.seq >= a.seq() {
                    proofs.extend([a, b]);
                }
                continue;
            }
            let ours = kernel.head(&head.author);
            if kernel.is_tombstoned(&head.author) {
                continue;
            }
            let from_seq = ours.map_or(0, |h| h.seq + 1);
            let asked = peer.pending.get(&head.author).is_some_and(|&(seq, tick)| {
                seq == from_seq && self.ticks.saturating_sub(tick) < WANT_TICKS
            });
            if ours.is_none_or(|h| h.seq < head.seq) && !asked {
                wants.push(Want {
                    author: head.author,
                    from_seq,
                });
            }
        }
        let mut out = self.wants_to(from, wants);
        if !proofs.is_empty() {
            out.extend(self.blocks_to(from, proofs));
        }
        out
    }

    fn wants_to(&mut self, to: &P, wants: Vec<Want>) -> Vec<Output<P>> {
        if let Some(peer) = self.peers.get_mut(to) {
            for want in &wants {
                if peer.pending.len() < MAX_KNOWN_FEEDS || peer.pending.contains_key(&want.author) {
                    peer.pending
                        .insert(want.author, (want.from_seq, self.ticks));
                }
            }
        }
        wants
            .chunks(self.config.limits.max_wants.max(1))
            .map(|page| Output::Send {
                to: to.clone(),
                message: Message::Want(page.to_vec()),
            })
            .collect()
    }

    fn blocks_to(&mut self, to: &P, blocks: Vec<Arc<Block>>) -> Vec<Output<P>> {
        if let Some(peer) = self.peers.get_mut(to) {
            peer.stats.blocks_sent += blocks.len() as u64;
            for block in &blocks {
                peer.knows(block.author(), block.seq());
            }
        }
        blocks
            .chunks(self.config.limits.max_blocks.max(1))
            .map(|page| Output::Send {
                to: to.clone(),
                message: Message::Blocks(page.to_vec()),
            })
            .collect()
    }

    fn on_want(&mut self, kernel: &Kernel, from: &P, wants: &[Want]) -> Vec<Output<P>> {
        let max_blocks = self.config.limits.max_blocks.max(1);
        let mut budget = self.config.batch_bytes;
        let mut blocks = Vec::new();
        for want in wants {
            if blocks.len() >= max_blocks || budget == 0 {
                break;
            }
            let batch = kernel.blocks_from(
                &want.author,
                want.from_seq,
                max_blocks - blocks.len(),
                budget,
            );
            let bytes: usize = batch
                .iter()
                .map(|b| b.header().body_len as usize + 160)
                .sum();
            budget = budget.saturating_sub(bytes);
            blocks.extend(batch);
        }
        if blocks.is_empty() {
            return Vec::new();
        }
        self.blocks_to(from, blocks)
    }

    fn on_blocks(
        &mut self,
        kernel: &mut Kernel,
        from: &P,
        blocks: Vec<Arc<Block>>,
    ) -> Result<(Vec<Output<P>>, Report), Error> {
        let peer = self.peers.get_mut(from).expect("checked by handle");
        peer.stats.blocks_received += blocks.len() as u64;
        let mut authors = BTreeMap::new();
        for block in &blocks {
            peer.knows(block.author(), block.seq());
            authors.insert(block.author(), ());
        }
        let before: BTreeMap<PublicKey, Option<u64>> = authors
            .keys()
            .map(|a| (*a, kernel.head(a).map(|h| h.seq)))
            .collect();
        let report = kernel.dispatch_shared(blocks)?;
        let mut out = self.penalise(from, report.invalid() as u32);
        if out.is_empty() {
            // Still behind this peer on a feed this batch advanced? Ask for the next batch.
            let peer = &self.peers[from];
            let wants: Vec<Want> = before
                .iter()
                .filter_map(|(author, old)| {
                    let now = kernel.head(author).map(|h| h.seq);
                    let theirs = peer.known.get(author).copied();
                    (now > *old && theirs > now).then(|| Want {
                        author: *author,
                        from_seq: now.map_or(0, |s| s + 1),
                    })
                })
                .collect();
            out.extend(self.wants_to(from, wants));
        }
        out.extend(self.announce(&report, Some(from)));
        Ok((out, report))
    }

    /// Pushes what a dispatch newly accepted (and any fork proofs it found) to every peer but
    /// `except` that is not known to hold it.
    pub fn announce(&mut self, report: &Report, except: Option<&P>) -> Vec<Output<P>> {
        let mut out = if self.config.push {
            self.push(&report.accepted, except)
        } else {
            Vec::new()
        };
        if !report.proofs.is_empty() {
            // A proof must reach peers that hold a block at its height: that is its point. The
            // sender too, which may hold only one half of it.
            let peers: Vec<P> = self.peers.keys().cloned().collect();
            for peer in peers {
                out.extend(self.blocks_to(&peer, report.proofs.clone()));
            }
        }
        out
    }

    /// Pushes `blocks` to every peer but `except` that is not known to hold them.
    pub fn push(&mut self, blocks: &[Arc<Block>], except: Option<&P>) -> Vec<Output<P>> {
        let peers: Vec<P> = self
            .peers
            .keys()
            .filter(|p| Some(*p) != except)
            .cloned()
            .collect();
        let mut out = Vec::new();
        for peer in peers {
            let fresh: Vec<Arc<Block>> = {
                let state = &self.peers[&peer];
                blocks.iter().filter(|b| !state.has(b)).cloned().collect()
            };
            if !fresh.is_empty() {
                out.extend(self.blocks_to(&peer, fresh));
            }
        }
        out
    }
}
