//! Gossip bytes per topology change, measured on converged meshes of 50, 200 and 1000
//! peers.
//!
//! Every mesh is the same family of graphs: a ring plus three random chords per peer
//! (average degree about 8), built converged directly ([`Net::build_converged`]) rather
//! than by discovery, which would make a full mesh that 1000 simulated peers in one
//! debug-mode process cannot hold. A 50-peer full mesh is measured too, where Weave's
//! scheme (every change re-sends the changer's whole connection list to every peer)
//! costs O(N²).
//!
//! The 1000-peer case takes a while unoptimized, so it is `#[ignore]`d; run it with
//! `cargo test -p gossip --release --lib gossip_bytes_per_change -- --ignored --nocapture`.

use super::*;
use crate::codec;
use crate::topology::{full_delta, TopologyUpdate};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The cost of one change, summed over the whole mesh.
#[derive(Debug, Clone, Copy)]
struct Cost {
    bytes: u64,
    messages: u64,
}

fn gossip_totals(net: &Net) -> Cost {
    let (mut bytes, mut messages) = (0, 0);
    for i in 0..net.len() {
        let s = net.node(i).mesh().stats();
        bytes += s.gossip_bytes_sent;
        messages += s.gossip_messages_sent;
    }
    Cost { bytes, messages }
}

fn config(gossip_interval: Duration) -> SimConfig {
    let mut config = SimConfig::default();
    config.mesh.discovery = false;
    config.maker.discovery = false;
    config.mesh.gossip_interval = gossip_interval;
    config
}

/// A converged mesh of `n` peers over a ring plus three random chords per peer (or a
/// full mesh).
fn converged(n: usize, full: bool, gossip_interval: Duration) -> Net {
    let mut net = Net::new(n as u64, config(gossip_interval));
    let mut rng = StdRng::seed_from_u64(n as u64);
    let mut edges = BTreeSet::new();
    for i in 0..n {
        net.add_node(&[]);
        if full {
            edges.extend((i + 1..n).map(|j| (i, j)));
            continue;
        }
        edges.insert((i.min((i + 1) % n), i.max((i + 1) % n)));
        for _ in 0..3 {
            let j = rng.gen_range(0..n);
            if j != i {
                edges.insert((i.min(j), i.max(j)));
            }
        }
    }
    let edges: Vec<(usize, usize)> = edges.into_iter().collect();
    net.build_converged(&edges);
    net.run_for(Duration::from_secs(2));
    net
}

/// Gossip bytes from `change` until the mesh is quiet again.
fn cost_of(net: &mut Net, change: impl FnOnce(&mut Net)) -> Cost {
    let before = gossip_totals(net);
    change(net);
    // Past the batching of local changes and the routes debounce, until nothing is in
    // flight.
    net.run_for(Duration::from_millis(500));
    assert!(net.run_until_quiet(Duration::from_secs(10)));
    let after = gossip_totals(net);
    Cost {
        bytes: after.bytes - before.bytes,
        messages: after.messages - before.messages,
    }
}

fn agree(net: &Net) -> bool {
    let digest = net.node(0).mesh().topology().digest();
    (0..net.len()).all(|i| net.node(i).mesh().topology().digest() == digest)
}

/// Link down, then up again, between peers 0 and 1 (ring neighbours).
fn measure(n: usize, full: bool) -> (Cost, Cost) {
    let mut net = converged(n, full, Duration::from_secs(86_400));
    assert!(agree(&net), "built mesh of {n} does not agree");
    let down = cost_of(&mut net, |net| net.disconnect(0, 1));
    assert!(agree(&net), "{n}: topologies differ after a link went down");
    let up = cost_of(&mut net, |net| net.connect(0, 1));
    assert!(agree(&net), "{n}: topologies differ after a link came up");
    (down, up)
}

/// What Weave would send for the same change: the changer's whole record to every peer,
/// for both ends.
fn weave_estimate(net: &Net) -> u64 {
    let record = net.node(0).mesh().topology().local_record();
    let update = TopologyUpdate {
        records: vec![full_delta(&node_id(0), record)],
    };
    codec::encode(&update).len() as u64 * 2 * (net.len() as u64 - 1)
}

/// Anti-entropy when nothing changed: one gossip interval's worth of digests.
fn idle_round(n: usize) -> Cost {
    let mut net = converged(n, false, Duration::from_secs(30));
    let before = gossip_totals(&net);
    net.run_for(Duration::from_secs(30));
    let after = gossip_totals(&net);
    Cost {
        bytes: after.bytes - before.bytes,
        messages: after.messages - before.messages,
    }
}

fn report(n: usize) -> (Cost, Cost) {
    let (down, up) = measure(n, false);
    let idle = idle_round(n);
    let per_peer = |c: Cost| c.bytes as f64 / (n - 1) as f64;
    println!(
        "N={n:>4} (ring + chords): link down {:>7} B in {:>5} msgs ({:.0} B/peer); \
         link up {:>7} B in {:>5} msgs ({:.0} B/peer); idle anti-entropy {:>7} B per 30 s",
        down.bytes,
        down.messages,
        per_peer(down),
        up.bytes,
        up.messages,
        per_peer(up),
        idle.bytes,
    );
    (down, up)
}

#[test]
fn gossip_bytes_per_change() {
    let (d50, u50) = report(50);
    let (d200, u200) = report(200);
    let full = converged(50, true, Duration::from_secs(86_400));
    let weave = weave_estimate(&full);
    let (fd, fu) = measure(50, true);
    println!(
        "N=  50 (full mesh): link down {} B, link up {} B; Weave's scheme ≈ {weave} B",
        fd.bytes, fu.bytes
    );
    // Linear growth: 4x the peers, about 4x the bytes (allow 6x).
    assert!(d200.bytes < d50.bytes * 6, "{d200:?} vs {d50:?}");
    assert!(u200.bytes < u50.bytes * 6, "{u200:?} vs {u50:?}");
    // In a full mesh a change costs the same as in a sparse one, far below Weave's.
    assert!(fd.bytes * 5 < weave, "{fd:?} vs {weave}");
}

#[test]
#[ignore = "1000 peers is slow unoptimized; run with --release (see the module doc)"]
fn gossip_bytes_per_change_1000() {
    let (d50, u50) = report(50);
    let (d1000, u1000) = report(1000);
    println!(
        "growth 50 -> 1000: link down x{:.1}, link up x{:.1} (peers x20)",
        d1000.bytes as f64 / d50.bytes as f64,
        u1000.bytes as f64 / u50.bytes as f64
    );
    assert!(d1000.bytes < d50.bytes * 40, "{d1000:?} vs {d50:?}");
    assert!(u1000.bytes < u50.bytes * 40, "{u1000:?} vs {u50:?}");
}
