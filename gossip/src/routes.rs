//! Unicast next hops and per-source broadcast trees, computed from a topology snapshot.
//!
//! The graph has an edge between two peers only when *both* report a live link to each
//! other (a symmetric connection), so a half-known link is never used. Everything is a
//! pure function of the topology: neighbours are visited in [`PeerId`] order, so every
//! peer holding the same topology computes the same trees.
//!
//! - **Unicast**: breadth-first search from us; the next hop to a peer is the first hop
//!   on the shortest path, ties going to the lower id.
//! - **Broadcast**: for a source `S`, breadth-first search from `S`; each peer's parent is
//!   the first peer to reach it. Our next hops for `S` are our children in that tree. Since
//!   every peer computes the same tree, a broadcast from `S` relayed along it reaches
//!   every peer in `S`'s component exactly once on a stable topology (mesh `routes.go`
//!   states the same invariant). Trees are computed lazily, per source, on first use.
//! - **Relays**: a frame that entered the overlay at `S` only ever travels away from `S`
//!   along a shortest path (a unicast path from `S` is a shortest path, and so is every
//!   branch of `S`'s tree), so the neighbour that hands it to us is one hop closer to `S`
//!   than we are. [`Routes::may_relay`] says whether a neighbour is; the data plane drops
//!   relayed frames from any other (a forged or stale source peer).

use crate::peer::PeerId;
use crate::topology::Topology;
use std::collections::VecDeque;
use std::sync::OnceLock;

/// Routes as seen from one peer.
#[derive(Clone, Debug)]
pub struct Routes {
    local: u32,
    /// Peers with a record, sorted; a peer's index is its position here.
    ids: Vec<PeerId>,
    /// Symmetric neighbours of each peer, as sorted indices.
    adjacency: Vec<Vec<u32>>,
    /// Next hop (index) towards each peer, if reachable.
    next_hop: Vec<Option<u32>>,
    /// Our children and our possible relays in each source's tree, computed on first use.
    trees: Vec<OnceLock<Tree>>,
}

impl Routes {
    /// Routes for `local` over the symmetric links of `topology`.
    pub fn new(local: PeerId, topology: &Topology) -> Routes {
        let mut ids: Vec<PeerId> = topology.peers().map(|(id, _)| *id).collect();
        if let Err(at) = ids.binary_search(&local) {
            ids.insert(at, local);
        }
        let index = |id: &PeerId| ids.binary_search(id).ok().map(|i| i as u32);
        // Every live link each peer reports, as indices. A record lists its links in
        // id order, so each list is sorted: the reverse link is a binary search away.
        let mut reported = vec![Vec::new(); ids.len()];
        for (owner, record) in topology.peers() {
            let Some(u) = index(owner) else { continue };
            reported[u as usize] = record.links().filter_map(|(r, _)| index(r)).collect();
        }
        let mut adjacency = vec![Vec::new(); ids.len()];
        for (u, remotes) in reported.iter().enumerate() {
            // Each symmetric edge once, from its lower end, to both lists.
            for &v in remotes.iter().filter(|&&v| v as usize > u) {
                if reported[v as usize].binary_search(&(u as u32)).is_ok() {
                    adjacency[u].push(v);
                    adjacency[v as usize].push(u as u32);
                }
            }
        }
        adjacency.iter_mut().for_each(|a| a.sort_unstable());
        let local = index(&local).unwrap_or(0);
        let mut routes = Routes {
            local,
            trees: (0..ids.len()).map(|_| OnceLock::new()).collect(),
            next_hop: vec![None; ids.len()],
            ids,
            adjacency,
        };
        routes.next_hop = routes.compute_unicast();
        routes
    }

    /// Routes of a peer that knows nobody.
    pub fn empty(local: PeerId) -> Routes {
        Routes {
            local: 0,
            ids: vec![local],
            adjacency: vec![Vec::new()],
            next_hop: vec![None],
            trees: vec![OnceLock::new()],
        }
    }

    /// The peer these routes are for.
    pub fn local(&self) -> PeerId {
        self.ids[self.local as usize]
    }

    fn index(&self, id: &PeerId) -> Option<usize> {
        self.ids.binary_search(id).ok()
    }

    /// The neighbour to send to for `dest`, or `None` if `dest` is us or unreachable.
    pub fn unicast(&self, dest: &PeerId) -> Option<PeerId> {
        let hop = self.next_hop[self.index(dest)?]?;
        Some(self.ids[hop as usize])
    }

    /// Whether `source`'s broadcast tree reaches us (so [`Routes::broadcast_next_hops`]
    /// is meaningful for it): `source` is us or reachable over symmetric links.
    pub fn has_tree(&self, source: &PeerId) -> bool {
        *source == self.local() || self.unicast(source).is_some()
    }

    /// Our children in `source`'s broadcast tree: where to relay its broadcasts.
    /// Empty if we are a leaf or `source` is not in our component.
    pub fn broadcast_next_hops(&self, source: &PeerId) -> &[PeerId] {
        match self.index(source) {
            Some(s) if self.has_tree(source) => &self.tree(s).children,
            _ => &[],
        }
    }

    /// Whether neighbour `from` may hand us a frame that entered the overlay at `source`:
    /// `from` is a symmetric neighbour one hop closer to `source` than we are (see the
    /// module doc). False for an unreachable or unknown `source`, and for `source` = us.
    pub fn may_relay(&self, source: &PeerId, from: &PeerId) -> bool {
        match self.index(source) {
            Some(s) if *source != self.local() && self.has_tree(source) => {
                self.tree(s).relays.binary_search(from).is_ok()
            }
            _ => false,
        }
    }

    fn tree(&self, source: usize) -> &Tree {
        self.trees[source].get_or_init(|| self.compute_tree(source))
    }

    /// Our symmetric neighbours, by id.
    pub fn neighbours(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.adjacency[self.local as usize]
            .iter()
            .map(|&i| self.ids[i as usize])
    }

    /// Whether the link between us and `peer` is symmetric (part of the graph).
    pub fn is_neighbour(&self, peer: &PeerId) -> bool {
        self.index(peer).is_some_and(|p| {
            self.adjacency[self.local as usize]
                .binary_search(&(p as u32))
                .is_ok()
        })
    }

    /// Peers we have a route to (excluding us).
    pub fn reachable(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.next_hop
            .iter()
            .enumerate()
            .filter(|(_, h)| h.is_some())
            .map(|(i, _)| self.ids[i])
    }

    fn compute_unicast(&self) -> Vec<Option<u32>> {
        let parents = self.bfs(self.local as usize);
        let mut next_hop: Vec<Option<u32>> = vec![None; self.ids.len()];
        // BFS order guarantees a parent's next hop is known before its children's.
        for &v in &parents.order {
            let p = parents.parent[v as usize];
            if p == Some(self.local) {
                next_hop[v as usize] = Some(v);
            } else if let Some(p) = p {
                next_hop[v as usize] = next_hop[p as usize];
            }
        }
        next_hop
    }

    fn compute_tree(&self, source: usize) -> Tree {
        let tree = self.bfs(source);
        let children = tree
            .order
            .iter()
            .filter(|&&v| tree.parent[v as usize] == Some(self.local))
            .map(|&v| self.ids[v as usize])
            .collect();
        // Depths from the BFS order: a parent is always visited before its children.
        let mut depth = vec![u32::MAX; self.ids.len()];
        depth[source] = 0;
        for &v in &tree.order {
            if let Some(p) = tree.parent[v as usize] {
                depth[v as usize] = depth[p as usize].saturating_add(1);
            }
        }
        let ours = depth[self.local as usize];
        let mut relays: Vec<PeerId> = self.adjacency[self.local as usize]
            .iter()
            .filter(|&&n| ours != u32::MAX && depth[n as usize].saturating_add(1) == ours)
            .map(|&n| self.ids[n as usize])
            .collect();
        relays.sort_unstable();
        Tree { children, relays }
    }

    /// Breadth-first search from `root`; neighbours in id order.
    fn bfs(&self, root: usize) -> Bfs {
        let mut parent = vec![None; self.ids.len()];
        let mut seen = vec![false; self.ids.len()];
        let mut order = Vec::new();
        let mut queue = VecDeque::from([root as u32]);
        seen[root] = true;
        while let Some(u) = queue.pop_front() {
            for &v in &self.adjacency[u as usize] {
                if !seen[v as usize] {
                    seen[v as usize] = true;
                    parent[v as usize] = Some(u);
                    order.push(v);
                    queue.push_back(v);
                }
            }
        }
        Bfs { parent, order }
    }
}

/// What one source's tree means to us.
#[derive(Clone, Debug)]
struct Tree {
    /// Our children in the tree, in visiting order.
    children: Vec<PeerId>,
    /// Our symmetric neighbours one hop closer to the source than we are, sorted.
    relays: Vec<PeerId>,
}

struct Bfs {
    parent: Vec<Option<u32>>,
    /// Reached peers (root excluded) in visiting order.
    order: Vec<u32>,
}

#[cfg(test)]
mod tests;
