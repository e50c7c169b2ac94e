//! The tick: everything periodic, driven by the driver's timer.

use std::collections::{BTreeMap, BTreeSet};

use super::peer::{BODY_RETRY_TICKS, MAX_BODIES_ASKED, WANT_TICKS};
use super::{Message, Protocol, Step, Want};
use crate::block::BlockId;
use crate::kernel::{Error, Kernel};

/// Missing bodies looked at per tick. The scan resumes where the last one stopped and wraps
/// around, so ids nobody can give (an attacker's headers with bodies that never existed) never
/// hold the others back for good: each id is reached within (missing ids / bodies per tick)
/// ticks.
const BODIES_SCANNED: usize = 1024;

impl<P: Ord + Clone> Protocol<P> {
    /// Releases held blocks whose time came, collects expired ones, then the periodic work.
    pub(super) fn on_tick(&mut self, kernel: &mut Kernel, step: &mut Step<P>) -> Result<(), Error> {
        let now = kernel.now();
        if kernel.next_wakeup().is_some_and(|t| t <= now) {
            let report = kernel.poll()?;
            self.blame(&report, step);
            self.spread(&report, None, true, step);
            step.report = Some(report);
        }
        if kernel.next_expiry().is_some_and(|t| t <= now) {
            step.collected = kernel.gc(now)?.collected;
        }
        self.periodic(kernel, step);
        Ok(())
    }

    /// Lost wants asked again, a reconciliation round with every peer, missing bodies asked for.
    pub(super) fn periodic(&mut self, kernel: &Kernel, step: &mut Step<P>) {
        self.ticks += 1;
        self.retry_wants(kernel, step);
        // A round with every peer, except one that opened one with us since our last tick
        // (see `Protocol::opens`): that round tells both sides what they lack.
        let now = self.ticks;
        for peer in self.peers.values_mut() {
            peer.expire_declines(now);
        }
        let peers: Vec<P> = self
            .peers
            .keys()
            .filter(|p| self.opens(kernel, p))
            .cloned()
            .collect();
        // Peers with nothing declined get the same opening: computed once per tick.
        let mut shared: Option<Vec<Message>> = None;
        for peer in &peers {
            let pages = if self.peers[peer].declined.is_empty() {
                Some(
                    shared
                        .get_or_insert_with(|| self.opening(kernel, peer))
                        .clone(),
                )
            } else {
                None
            };
            self.open_reconcile(kernel, peer, pages, step);
        }
        self.fetch_bodies(kernel, step);
    }

    /// A want unanswered for [`WANT_TICKS`] ticks counts as lost: asked again if the peer is
    /// still ahead, forgotten otherwise. A gap a peer pushed past (an orphan) that no delivery
    /// filled since is asked of that peer now.
    fn retry_wants(&mut self, kernel: &Kernel, step: &mut Step<P>) {
        let now = self.ticks;
        let max = self.config.limits.max_wants.max(1);
        let mut again: Vec<(P, Vec<Want>)> = Vec::new();
        for (p, peer) in &mut self.peers {
            let mut wants = Vec::new();
            for author in std::mem::take(&mut peer.gaps) {
                let ours = kernel.head(&author).map(|h| h.seq);
                let from_seq = ours.map_or(0, |s| s + 1);
                if wants.len() < max
                    && !peer.declined.contains_key(&author)
                    && peer.is_ahead(&author, ours)
                    && !peer.asked(&author, from_seq, now)
                    && kernel.fork_proof(&author).is_none()
                    && !kernel.refuses_feed(&author)
                {
                    wants.push(Want { author, from_seq });
                }
            }
            let (known, declined) = (&peer.known, &peer.declined);
            let gaps: BTreeSet<_> = wants.iter().map(|w: &Want| w.author).collect();
            peer.pending.retain(|author, &mut (_, at)| {
                if now.saturating_sub(at) < WANT_TICKS || gaps.contains(author) {
                    return true;
                }
                let ours = kernel.head(author).map(|h| h.seq);
                let behind = known.get(author).copied() > ours
                    && !declined.contains_key(author)
                    && kernel.fork_proof(author).is_none()
                    && !kernel.refuses_feed(author);
                if behind && wants.len() < max {
                    wants.push(Want {
                        author: *author,
                        from_seq: ours.map_or(0, |s| s + 1),
                    });
                }
                behind
            });
            if !wants.is_empty() {
                again.push((p.clone(), wants));
            }
        }
        for (peer, wants) in again {
            self.send_wants(&peer, wants, step);
        }
    }

    /// Asks for bodies the kernel lacks: each id of the first peer that may hold the block (it
    /// claims it, or showed nothing that says otherwise) and was not asked for it in the last
    /// [`BODY_RETRY_TICKS`], at most
    /// [`super::Config::bodies_per_tick`] ids, scanning on from where the last tick stopped.
    fn fetch_bodies(&mut self, kernel: &Kernel, step: &mut Step<P>) {
        if self.peers.is_empty() || self.config.bodies_per_tick == 0 {
            return;
        }
        let now = self.ticks;
        for peer in self.peers.values_mut() {
            peer.bodies_asked
                .retain(|_, at| now.saturating_sub(*at) < BODY_RETRY_TICKS);
        }
        let keys: Vec<P> = self.peers.keys().cloned().collect();
        let mut asks: BTreeMap<P, Vec<BlockId>> = BTreeMap::new();
        let mut asked = 0;
        for id in kernel.missing_bodies_after(self.body_cursor.as_ref(), BODIES_SCANNED) {
            if asked >= self.config.bodies_per_tick {
                break;
            }
            self.body_cursor = Some(id);
            let Some(block) = kernel.block(&id) else {
                continue;
            };
            // The peer tried first turns with each retry period, so one peer that claims the
            // block but cannot give the body (or lies about its heads) is not asked forever
            // while another that has it never is.
            let n = keys.len();
            let turn = (now / BODY_RETRY_TICKS).wrapping_add(u64::from(id.0[0]));
            let start = (turn % n as u64) as usize;
            let holder = (0..n).map(|i| &keys[(start + i) % n]).find(|p| {
                let peer = &self.peers[*p];
                peer.may_have(&block)
                    && !peer.bodies_asked.contains_key(&id)
                    && peer.bodies_asked.len() < MAX_BODIES_ASKED
            });
            if let Some(p) = holder.cloned() {
                if let Some(peer) = self.peers.get_mut(&p) {
                    peer.bodies_asked.insert(id, now);
                }
                asks.entry(p).or_default().push(id);
                asked += 1;
            }
        }
        for (peer, ids) in asks {
            let pages = Message::want_bodies_pages(ids, &self.config.limits);
            self.send(&peer, pages, step);
        }
    }
}
