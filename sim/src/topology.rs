//! Connection graphs and the initial gossip mesh over them.

use std::collections::BTreeSet;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::config::{Topology, TopologyKind};
use crate::error::Error;

/// A peer's index in the simulation.
pub type PeerId = u32;

/// Most peers for the full topology: it has N(N-1)/2 connections.
pub const MAX_FULL_PEERS: usize = 2_000;

/// Builds the connection graph: for each peer, its neighbours, sorted. The graph is made
/// connected (components are joined by one link each) so every scenario can converge.
///
/// # Errors
/// [`Error::Invalid`] for a full topology over [`MAX_FULL_PEERS`] or a degree that cannot fit.
pub fn build(
    topology: &Topology,
    n: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Vec<PeerId>>, Error> {
    let mut edges = BTreeSet::new();
    let mut add = |a: usize, b: usize| {
        if a != b {
            edges.insert((a.min(b) as PeerId, a.max(b) as PeerId));
        }
    };
    match topology.kind {
        TopologyKind::Full => {
            if n > MAX_FULL_PEERS {
                return Err(Error::Invalid {
                    reason: format!("a full topology is limited to {MAX_FULL_PEERS} peers"),
                });
            }
            for a in 0..n {
                for b in a + 1..n {
                    add(a, b);
                }
            }
        }
        TopologyKind::Ring | TopologyKind::Line => {
            for a in 0..n - 1 {
                add(a, a + 1);
            }
            if topology.kind == TopologyKind::Ring && n > 2 {
                add(n - 1, 0);
            }
        }
        TopologyKind::RandomRegular => {
            let degree = topology.degree.clamp(1, n - 1);
            let mut stubs: Vec<usize> = (0..n)
                .flat_map(|p| std::iter::repeat_n(p, degree))
                .collect();
            stubs.shuffle(rng);
            for pair in stubs.chunks_exact(2) {
                add(pair[0], pair[1]);
            }
        }
        TopologyKind::SmallWorld => {
            let half = (topology.degree / 2).clamp(1, (n - 1) / 2 + 1);
            for a in 0..n {
                for k in 1..=half {
                    let b = (a + k) % n;
                    if rng.gen_bool(topology.rewire.clamp(0.0, 1.0)) {
                        add(a, rng.gen_range(0..n));
                    } else {
                        add(a, b);
                    }
                }
            }
        }
    }
    join_components(n, &mut edges);
    let mut adjacency = vec![Vec::new(); n];
    for &(a, b) in &edges {
        adjacency[a as usize].push(b);
        adjacency[b as usize].push(a);
    }
    for list in &mut adjacency {
        list.sort_unstable();
    }
    Ok(adjacency)
}

fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// Links each connected component to the one holding peer 0.
fn join_components(n: usize, edges: &mut BTreeSet<(PeerId, PeerId)>) {
    let mut parent: Vec<usize> = (0..n).collect();
    for &(a, b) in edges.iter() {
        let (ra, rb) = (find(&mut parent, a as usize), find(&mut parent, b as usize));
        parent[ra] = rb;
    }
    let mut joined = BTreeSet::new();
    for p in 0..n {
        let root = find(&mut parent, p);
        let zero = find(&mut parent, 0);
        if root != zero && joined.insert(root) {
            edges.insert((0, p as PeerId));
            parent[root] = zero;
        }
    }
}

/// Picks the initial mesh: a random subgraph of the connections in which no peer has more
/// than `d` mesh peers (links are symmetric, as gossipsub's GRAFTs are).
pub fn mesh(adjacency: &[Vec<PeerId>], d: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<PeerId>> {
    let n = adjacency.len();
    let mut mesh: Vec<Vec<PeerId>> = vec![Vec::new(); n];
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    for p in order {
        let mut candidates = adjacency[p].clone();
        candidates.shuffle(rng);
        for q in candidates {
            if mesh[p].len() >= d {
                break;
            }
            let qi = q as usize;
            if mesh[qi].len() < d && !mesh[p].contains(&q) {
                mesh[p].push(q);
                mesh[qi].push(p as PeerId);
            }
        }
    }
    mesh
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn connected(adjacency: &[Vec<PeerId>]) -> bool {
        let mut seen = vec![false; adjacency.len()];
        let mut stack = vec![0usize];
        seen[0] = true;
        while let Some(p) = stack.pop() {
            for &q in &adjacency[p] {
                if !std::mem::replace(&mut seen[q as usize], true) {
                    stack.push(q as usize);
                }
            }
        }
        seen.iter().all(|s| *s)
    }

    #[test]
    fn every_topology_is_connected_and_symmetric() {
        for kind in [
            TopologyKind::Full,
            TopologyKind::RandomRegular,
            TopologyKind::Ring,
            TopologyKind::Line,
            TopologyKind::SmallWorld,
        ] {
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            let topology = Topology {
                kind,
                degree: 4,
                rewire: 0.3,
            };
            let adjacency = build(&topology, 50, &mut rng).expect("fits");
            assert!(connected(&adjacency), "{kind:?} is not connected");
            for (p, list) in adjacency.iter().enumerate() {
                for &q in list {
                    assert!(adjacency[q as usize].contains(&(p as PeerId)));
                }
            }
            let mesh = mesh(&adjacency, 3, &mut rng);
            assert!(mesh.iter().all(|m| m.len() <= 3));
        }
    }

    #[test]
    fn line_has_ends_and_ring_does_not() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let line = build(
            &Topology {
                kind: TopologyKind::Line,
                degree: 2,
                rewire: 0.0,
            },
            5,
            &mut rng,
        )
        .expect("fits");
        assert_eq!(line[0], vec![1]);
        assert_eq!(line[4], vec![3]);
        let ring = build(
            &Topology {
                kind: TopologyKind::Ring,
                degree: 2,
                rewire: 0.0,
            },
            5,
            &mut rng,
        )
        .expect("fits");
        assert_eq!(ring[0], vec![1, 4]);
    }
}
