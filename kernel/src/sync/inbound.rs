//! What arrives: messages, pushed blocks, and the penalties they earn.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::message::block_len;
use super::reconcile::Learned;
use super::{DisconnectReason, Message, Output, Protocol, Step, Want};
use crate::block::{Block, BlockId, DecodeError};
use crate::identity::PublicKey;
use crate::kernel::{Error, Head, Kernel, Outcome, Report, Source};

/// Most diverging blocks one heads message makes the machine show, and most diverging
/// parents one delivery makes it ask for: what a lying peer can buy per message.
const MAX_DIVERGING: usize = 16;

/// How blocks reached the machine.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    /// In a sync `Blocks` message: what the kernel newly accepts is pushed on.
    Sync,
    /// By another channel, which spreads them itself.
    Pushed,
}

impl<P: Ord + Clone> Protocol<P> {
    pub(super) fn on_bytes(
        &mut self,
        kernel: &mut Kernel,
        from: &P,
        bytes: &[u8],
        step: &mut Step<P>,
    ) -> Result<(), Error> {
        if !self.peers.contains_key(from) {
            return Ok(());
        }
        match Message::decode(bytes, &self.config.limits) {
            Ok(message) => self.on_message(kernel, from, message, step),
            Err(error) => {
                self.on_malformed(from, error, step);
                Ok(())
            }
        }
    }

    pub(super) fn on_malformed(&mut self, from: &P, error: DecodeError, step: &mut Step<P>) {
        step.malformed = Some(error);
        self.penalise(from, 1, step);
    }

    pub(super) fn on_message(
        &mut self,
        kernel: &mut Kernel,
        from: &P,
        message: Message,
        step: &mut Step<P>,
    ) -> Result<(), Error> {
        match message {
            Message::Heads(heads) => self.on_heads(kernel, from, heads, step),
            Message::Want(wants) => self.on_want(kernel, from, &wants, step),
            Message::WantBodies(ids) => self.on_want_bodies(kernel, from, &ids, step),
            Message::Blocks(blocks) => self.receive(kernel, from, blocks, Via::Sync, step)?,
            Message::Reconcile(reconcile) => self.on_reconcile(kernel, from, reconcile, step),
        }
        Ok(())
    }

    fn on_heads(&mut self, kernel: &Kernel, from: &P, heads: Vec<Head>, step: &mut Step<P>) {
        let mut learned = Learned::default();
        self.learn(kernel, from, &heads, &mut learned);
        self.send_wants(from, learned.wants, step);
        self.send_proofs(from, learned.proofs, step);
        self.send_blocks(from, learned.diverging, step);
    }

    /// What the heads `from` showed (a heads message, or heads in a reconciliation) make the
    /// machine do: note them, want what the peer has further, show fork proofs and diverging
    /// blocks, and decline the feeds shown with another head than ours that we will not take.
    pub(super) fn learn(
        &mut self,
        kernel: &Kernel,
        from: &P,
        heads: &[Head],
        learned: &mut Learned,
    ) {
        let now = self.ticks;
        let Some(peer) = self.peers.get_mut(from) else {
            return;
        };
        for head in heads {
            peer.knows(head.author, head.seq);
            let ours = kernel.head(&head.author);
            let same = ours.is_some_and(|h| h.id == head.id);
            if let Some((a, b)) = kernel.fork_proof(&head.author) {
                // We froze this feed; if the peer holds blocks past the fork, show it why.
                if head.seq >= a.seq() {
                    learned.proofs.push((a, b));
                }
                if !same && peer.decline(head.author, now) {
                    learned.declined.push(head.author);
                }
                continue;
            }
            if kernel.refuses_feed(&head.author) {
                if !same && peer.decline(head.author, now) {
                    learned.declined.push(head.author);
                }
                continue;
            }
            // A feed left out of this connection that the peer shows again: its side of the
            // decline ran out, and ours does not refuse the feed (any more), so it is back in.
            // Only the side that refuses a feed renews a decline, so two sides never keep one
            // alive for each other.
            peer.declined.remove(&head.author);
            let ours = ours.map(|h| h.seq);
            let from_seq = ours.map_or(0, |s| s + 1);
            if ours < Some(head.seq) {
                if !peer.asked(&head.author, from_seq, now) {
                    learned.wants.push(Want {
                        author: head.author,
                        from_seq,
                    });
                }
            } else if learned.diverging.len() < MAX_DIVERGING {
                // Another id at a height we hold: the author signed two chains (or the peer
                // lies). Our block there is an orphan for the peer that diverges from its
                // feed, so it fetches the parents down to the fork and spreads the proof.
                if let Some(block) = kernel
                    .block_at(&head.author, head.seq)
                    .filter(|b| b.id() != head.id)
                {
                    if peer.show_divergence(head.author, now) {
                        learned.diverging.push(block);
                    }
                }
            }
        }
    }

    fn on_want(&mut self, kernel: &Kernel, from: &P, wants: &[Want], step: &mut Step<P>) {
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
            let bytes: usize = batch.iter().map(|b| block_len(b)).sum();
            budget = budget.saturating_sub(bytes);
            blocks.extend(batch);
        }
        self.send_blocks(from, blocks, step);
    }

    /// Answers a want-bodies with the copies held, full where the body is held, within the
    /// batch budget. A header-only copy cannot restore a body, but it is what the fork walk
    /// needs (a fork is proved by headers), so a peer that asks for a parent below a
    /// divergence gets it even where garbage collection dropped the body.
    fn on_want_bodies(&mut self, kernel: &Kernel, from: &P, ids: &[BlockId], step: &mut Step<P>) {
        let max_blocks = self.config.limits.max_blocks.max(1);
        let mut budget = self.config.batch_bytes;
        let mut blocks = Vec::new();
        for id in ids {
            if blocks.len() >= max_blocks {
                break;
            }
            let Some(block) = kernel.block(id) else {
                continue;
            };
            let size = block_len(&block);
            if !blocks.is_empty() && size > budget {
                break;
            }
            budget = budget.saturating_sub(size);
            blocks.push(block);
        }
        self.send_blocks(from, blocks, step);
    }

    /// Dispatches blocks from `from` in its name, penalises the senders the kernel blames,
    /// asks `from` for what it still has and we lack, and spreads what is new.
    pub(super) fn receive(
        &mut self,
        kernel: &mut Kernel,
        from: &P,
        blocks: Vec<Arc<Block>>,
        via: Via,
        step: &mut Step<P>,
    ) -> Result<(), Error> {
        step.received = blocks.iter().map(|b| b.id()).collect();
        let source = self.peers.get(from).map(|p| p.source);
        if source.is_none() && via == Via::Sync {
            return Ok(());
        }
        let report = match source {
            Some(source) => kernel.dispatch_from(source, blocks.iter().cloned())?,
            // A channel may deliver from a peer the machine does not know (yet): the blocks
            // are judged all the same, but nobody can be charged for them.
            None => kernel.dispatch_shared(blocks.iter().cloned())?,
        };
        if let Some(source) = source {
            let peer = self
                .peers
                .get_mut(from)
                .expect("source of a connected peer");
            peer.stats.blocks_received += blocks.len() as u64;
            match via {
                Via::Sync => {
                    // The peer holds what it sent us, except what was invalid: a forgery in an
                    // honest author's name says nothing about what the peer holds.
                    let invalid: BTreeSet<BlockId> = report
                        .blame
                        .iter()
                        .filter(|(s, _)| *s == source)
                        .map(|(_, id)| *id)
                        .collect();
                    for block in blocks.iter().filter(|b| !invalid.contains(&b.id())) {
                        peer.knows(block.author(), block.seq());
                    }
                }
                // Pushes are the bulk of the traffic and their channel spreads them, so only
                // what reveals a gap is noted (a waiting block passed every check made so
                // far); the sender's heads tell the rest.
                Via::Pushed => {
                    for block in waiting(&blocks, &report) {
                        peer.knows(block.author(), block.seq());
                    }
                }
            }
        }
        self.blame(&report, step);
        self.decline_refused(from, &blocks, &report, step);
        // Blocks that wait and diverge from a feed we hold: ask their sender for the missing
        // ancestor, down to where the two chains part (see `Kernel::diverging_parent`). Copies
        // of blocks that already wait count too, so a request or answer lost on the way is
        // made good the next time the peer shows the block.
        let parents: BTreeSet<BlockId> = blocks
            .iter()
            .filter(|b| !matches!(report.outcome(&b.id()), Some(Outcome::Invalid(_)) | None))
            .filter_map(|b| kernel.diverging_parent(b))
            .take(MAX_DIVERGING)
            .collect();
        let parents: Vec<BlockId> = parents.into_iter().collect();
        if !parents.is_empty() && self.peers.contains_key(from) {
            let pages = Message::want_bodies_pages(parents, &self.config.limits);
            self.send(from, pages, step);
        }
        match via {
            Via::Sync => {
                let authors: BTreeSet<PublicKey> = blocks.iter().map(|b| b.author()).collect();
                self.ask_for_more(kernel, from, &authors, step);
            }
            Via::Pushed => {
                let waiting: BTreeSet<PublicKey> =
                    waiting(&blocks, &report).map(|b| b.author()).collect();
                self.note_gaps(kernel, from, &waiting);
            }
        }
        self.spread(&report, Some(from), via == Via::Sync, step);
        step.report = Some(report);
        Ok(())
    }

    /// Declines toward `from` the feeds whose blocks it sent were refused for room (over
    /// capacity, or tombstoned): both sides leave them out of this connection's
    /// reconciliation for a while, so they are not found and asked for again every round,
    /// whatever the kernel's own memory of refusals says.
    fn decline_refused(
        &mut self,
        from: &P,
        blocks: &[Arc<Block>],
        report: &Report,
        step: &mut Step<P>,
    ) {
        let now = self.ticks;
        let max = self.config.limits.max_wants.max(1);
        let Some(peer) = self.peers.get_mut(from) else {
            return;
        };
        let refused: BTreeSet<PublicKey> = blocks
            .iter()
            .filter(|b| {
                matches!(
                    report.outcome(&b.id()),
                    Some(Outcome::OverCapacity | Outcome::Tombstoned { .. })
                )
            })
            .map(|b| b.author())
            .filter(|a| !peer.declined.contains_key(a))
            .take(max)
            .collect();
        let declined: Vec<PublicKey> = refused
            .into_iter()
            .filter(|a| peer.decline(*a, now))
            .collect();
        if !declined.is_empty() {
            let pages = Message::reconcile_pages(Vec::new(), declined, 0, &self.config.limits);
            self.send(from, pages, step);
        }
    }

    /// Remembers the feeds in `authors` that `from` holds further than we do after its push
    /// (an orphan came before its parent): the next tick asks `from` for the gap if no other
    /// delivery filled it by then. Asking at once would mostly buy duplicates: a parent pushed
    /// along another path usually arrives a moment later.
    fn note_gaps(&mut self, kernel: &Kernel, from: &P, authors: &BTreeSet<PublicKey>) {
        let Some(peer) = self.peers.get_mut(from) else {
            return; // dropped for its invalid blocks
        };
        for author in authors {
            if peer.is_ahead(author, kernel.head(author).map(|h| h.seq)) {
                peer.note_gap(*author);
            }
        }
    }

    /// Wants the rest of every feed in `authors` that `from` holds further than we do: the next
    /// batch of a catch-up, or the gap below an orphan it sent.
    fn ask_for_more(
        &mut self,
        kernel: &Kernel,
        from: &P,
        authors: &BTreeSet<PublicKey>,
        step: &mut Step<P>,
    ) {
        let now = self.ticks;
        let Some(peer) = self.peers.get(from) else {
            return; // dropped for its invalid blocks
        };
        let wants: Vec<Want> = authors
            .iter()
            .filter(|a| {
                kernel.fork_proof(a).is_none()
                    && !kernel.refuses_feed(a)
                    && !peer.declined.contains_key(*a)
            })
            .filter_map(|author| {
                let ours = kernel.head(author).map(|h| h.seq);
                let from_seq = ours.map_or(0, |s| s + 1);
                (peer.is_ahead(author, ours) && !peer.asked(author, from_seq, now)).then_some(
                    Want {
                        author: *author,
                        from_seq,
                    },
                )
            })
            .collect();
        self.send_wants(from, wants, step);
    }

    /// Penalises exactly the peers the kernel blames for invalid blocks (a source whose peer
    /// is gone is ignored).
    pub(super) fn blame(&mut self, report: &Report, step: &mut Step<P>) {
        let mut counts: BTreeMap<Source, u32> = BTreeMap::new();
        for (source, _) in &report.blame {
            *counts.entry(*source).or_default() += 1;
        }
        for (source, count) in counts {
            if let Some(peer) = self.sources.get(&source).cloned() {
                self.penalise(&peer, count, step);
            }
        }
    }

    pub(super) fn penalise(&mut self, who: &P, count: u32, step: &mut Step<P>) {
        let Some(peer) = self.peers.get_mut(who) else {
            return;
        };
        peer.stats.invalid = peer.stats.invalid.saturating_add(count);
        step.penalties.push((who.clone(), count));
        if peer.stats.invalid > self.config.max_invalid {
            self.on_disconnect(who);
            step.outputs.push(Output::Disconnect {
                peer: who.clone(),
                reason: DisconnectReason::TooManyInvalid,
            });
        }
    }
}

/// The blocks of `blocks` that wait in the mempool after `report` (orphans, held blocks):
/// only a block that waits can leave a gap behind it.
fn waiting<'a>(
    blocks: &'a [Arc<Block>],
    report: &'a Report,
) -> impl Iterator<Item = &'a Arc<Block>> + 'a {
    let waits = |o: &Outcome| {
        matches!(
            o,
            Outcome::WaitingForParent | Outcome::TimestampFromFuture { .. }
        )
    };
    // The last outcome of a block is its fate (an orphan stitched in later is accepted).
    let any = report.outcomes().iter().any(|(_, o)| waits(o));
    blocks
        .iter()
        .filter(move |b| any && report.outcome(&b.id()).is_some_and(waits))
}
