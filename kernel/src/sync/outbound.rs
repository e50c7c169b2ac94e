//! What leaves: wants, blocks and fork proofs, cut into pages within the limits, with the
//! bookkeeping of what each peer was sent.

use std::sync::Arc;

use super::message::block_len;
use super::peer::MAX_PROOFS_SENT;
use super::{Message, Output, Protocol, Step, Want, MAX_PROOFS_PER_EVENT};
use crate::block::Block;
use crate::kernel::Report;

impl<P: Ord + Clone> Protocol<P> {
    pub(super) fn send(&self, to: &P, pages: Vec<Message>, step: &mut Step<P>) {
        step.outputs
            .extend(pages.into_iter().map(|message| Output::Send {
                to: to.clone(),
                message,
            }));
    }

    /// Sends `wants` to `to` and remembers them as in flight.
    pub(super) fn send_wants(&mut self, to: &P, wants: Vec<Want>, step: &mut Step<P>) {
        if wants.is_empty() {
            return;
        }
        let now = self.ticks;
        let Some(peer) = self.peers.get_mut(to) else {
            return;
        };
        for want in &wants {
            peer.record_want(want.author, want.from_seq, now);
        }
        let pages = Message::want_pages(wants, &self.config.limits);
        self.send(to, pages, step);
    }

    /// Sends `blocks` to `to`; from then on the peer is known to hold them.
    pub(super) fn send_blocks(&mut self, to: &P, blocks: Vec<Arc<Block>>, step: &mut Step<P>) {
        if blocks.is_empty() {
            return;
        }
        let Some(peer) = self.peers.get_mut(to) else {
            return;
        };
        let (pages, left_out) = Message::blocks_pages(blocks, &self.config.limits);
        for page in &pages {
            let Message::Blocks(blocks) = page else {
                continue;
            };
            peer.stats.blocks_sent += blocks.len() as u64;
            for block in blocks {
                peer.knows(block.author(), block.seq());
            }
        }
        peer.stats.blocks_not_sent += left_out as u64;
        self.send(to, pages, step);
    }

    /// Sends `to` the halves of the fork proofs `pairs` it was not sent on this connection,
    /// within one event's budget: [`MAX_PROOFS_PER_EVENT`] blocks and `batch_bytes` (one pair
    /// always fits). What is left goes on a later round.
    pub(super) fn send_proofs(
        &mut self,
        to: &P,
        pairs: Vec<(Arc<Block>, Arc<Block>)>,
        step: &mut Step<P>,
    ) {
        let Some(peer) = self.peers.get_mut(to) else {
            return;
        };
        let mut budget = self.config.batch_bytes;
        let mut out: Vec<Arc<Block>> = Vec::new();
        for (a, b) in pairs {
            let fresh: Vec<Arc<Block>> = [a, b]
                .into_iter()
                .filter(|p| !peer.proofs_sent.contains(&p.id()))
                .collect();
            if fresh.is_empty() {
                continue;
            }
            let size: usize = fresh.iter().map(|p| block_len(p)).sum();
            let full = out.len() + fresh.len() > MAX_PROOFS_PER_EVENT || size > budget;
            if (!out.is_empty() && full) || peer.proofs_sent.len() + fresh.len() > MAX_PROOFS_SENT {
                break;
            }
            budget = budget.saturating_sub(size);
            peer.proofs_sent.extend(fresh.iter().map(|p| p.id()));
            out.extend(fresh);
        }
        self.send_blocks(to, out, step);
    }

    /// Spreads what a dispatch did: newly accepted blocks to every peer but `except` not known
    /// to hold them (when `push` and [`super::Config::push`]), fork proofs to every peer.
    pub(super) fn spread(
        &mut self,
        report: &Report,
        except: Option<&P>,
        push: bool,
        step: &mut Step<P>,
    ) {
        if push && self.config.push {
            self.push_to_all(&report.accepted, except, step);
        }
        if report.proofs.is_empty() {
            return;
        }
        let pairs: Vec<(Arc<Block>, Arc<Block>)> = report
            .proofs
            .chunks_exact(2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect();
        // A proof must reach peers that hold a block at its height: that is its point. The
        // sender too, which may hold only one half of it.
        let peers: Vec<P> = self.peers.keys().cloned().collect();
        for peer in peers {
            self.send_proofs(&peer, pairs.clone(), step);
        }
    }

    pub(super) fn push_to_all(
        &mut self,
        blocks: &[Arc<Block>],
        except: Option<&P>,
        step: &mut Step<P>,
    ) {
        if blocks.is_empty() {
            return;
        }
        let peers: Vec<P> = self
            .peers
            .keys()
            .filter(|p| Some(*p) != except)
            .cloned()
            .collect();
        for peer in peers {
            let fresh: Vec<Arc<Block>> = {
                let state = &self.peers[&peer];
                blocks.iter().filter(|b| !state.has(b)).cloned().collect()
            };
            self.send_blocks(&peer, fresh, step);
        }
    }
}
