//! A deterministic, seeded network of N routers in one process.
//!
//! [`Net`] runs N [`crate::node::Node`]s — the very state machine the router's owner
//! task drives (mesh, connection maker and link table) — on a virtual clock. Links skip the crypto handshake: a dial that
//! reaches a live listener calls `handle_link_up` on both ends with the authenticated
//! ids. Messages are delivered in order after the link's latency. Faults follow TCP:
//! - **loss**: each message may, with the configured probability, break its link; both
//!   ends then see it go down (an ordered stream cannot silently skip a message);
//! - **partitions**: links across groups stall silently and dials across them time out,
//!   so heartbeats are what detect the break; `heal` lifts it;
//! - **crash**: the host vanishes silently; `restart` brings it back with the same id,
//!   a new uid and its original explicit targets.
//!
//! Each node holds the application's gossip channels, an `A:` [`Channels`] of the test's
//! choosing (none by default), and lends them to its node as the daemon's owner does.
//! A node may carry a [`Pump`]: the application glue its real driver would run after each
//! mesh step (for a gossip channel that produces its own outputs, such as IPAM). The pump
//! runs after every step of a live node and reports its next deadline.
//!
//! Everything random comes from the seed, so a failing scenario replays exactly. Large
//! converged meshes can be built directly ([`Net::build_converged`]) instead of by
//! gossiping their whole history.

mod driver;
#[cfg(test)]
mod measure;
#[cfg(test)]
mod scale;
#[cfg(test)]
mod tests;

use crate::channel::Channels;
use crate::connection_maker::{ConnectionMaker, MakerConfig};
use crate::mesh::{CloseReason, ConnId, LocalPeer, Mesh, MeshConfig, MeshEvent};
use crate::node::Node;
use crate::peer::{PeerId, PeerUid};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The port every simulated router listens on.
pub const SIM_PORT: u16 = 6783;

/// Simulation settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Settings of every mesh.
    pub mesh: MeshConfig,
    /// Settings of every connection maker.
    pub maker: MakerConfig,
    /// Each link's one-way latency is drawn from this range when it is created.
    pub latency: (Duration, Duration),
    /// How long a dial to nowhere takes to fail.
    pub connect_timeout: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            mesh: MeshConfig::default(),
            maker: MakerConfig::default(),
            latency: (Duration::from_millis(1), Duration::from_millis(5)),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// Application glue run after every step of a live node, as its driver would: it may
/// poll the node's channels, call [`Mesh::broadcast`] / [`Mesh::send_unicast`], and
/// returns when it wants to run again (`None`: only after the next step).
pub type Pump<A> = Box<dyn FnMut(Instant, &mut Mesh, &mut A) -> Option<Instant>>;

/// One simulated router: the daemon's [`Node`], its application channels, and what the
/// simulation records of it.
pub struct SimNode<A = ()> {
    /// Its node (mesh, connection maker, links).
    pub node: Node,
    /// Its application channels (fresh, `A::default()`, after a restart).
    pub channels: A,
    /// Its listen address.
    pub addr: SocketAddr,
    /// Whether it is running.
    pub alive: bool,
    /// Every close its node asked for, in order.
    pub closes: Vec<CloseReason>,
    /// Every event its mesh reported, in order.
    pub events: Vec<MeshEvent>,
    /// How many dials it started.
    pub dials: u64,
    explicit: Vec<SocketAddr>,
    conns: BTreeMap<ConnId, LinkId>,
    next_conn: u64,
    pump: Option<Pump<A>>,
    pump_deadline: Option<Instant>,
}

impl<A> SimNode<A> {
    /// Its mesh.
    pub fn mesh(&self) -> &Mesh {
        self.node.mesh()
    }

    /// Its mesh, mutably.
    pub fn mesh_mut(&mut self) -> &mut Mesh {
        self.node.mesh_mut()
    }

    /// Its connection maker.
    pub fn maker(&self) -> &ConnectionMaker {
        self.node.maker()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct LinkId(u64);

struct SimLink {
    /// (node, its ConnId) for each end; end 0 dialled.
    ends: [(usize, ConnId); 2],
    latency: Duration,
    up: bool,
}

#[derive(Debug)]
enum Event {
    Deliver {
        link: LinkId,
        to: usize,
        bytes: Vec<u8>,
    },
    Connect {
        from: usize,
        addr: SocketAddr,
    },
    DialFailed {
        node: usize,
        addr: SocketAddr,
        error: &'static str,
    },
    LinkDown {
        link: LinkId,
        end: usize,
    },
}

/// The simulated network; each node holds application channels `A`.
pub struct Net<A = ()> {
    config: SimConfig,
    rng: StdRng,
    start: Instant,
    now: Instant,
    nodes: Vec<SimNode<A>>,
    by_addr: BTreeMap<SocketAddr, usize>,
    links: BTreeMap<LinkId, SimLink>,
    next_link: u64,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    events: BTreeMap<u64, Event>,
    next_seq: u64,
    wakeups: BTreeSet<(Instant, usize)>,
    wakeup_of: Vec<Option<Instant>>,
    group: Option<Vec<usize>>,
    loss: f64,
    /// While set, gossip messages are dropped (only Hellos and heartbeats flow).
    mute_gossip: bool,
    /// Deliveries of broadcasts, counted by (source, receiving node), when tracing.
    broadcast_trace: Option<BTreeMap<(PeerId, usize), usize>>,
    /// Bytes of every message put on a link.
    pub bytes_sent: u64,
    /// Bytes put on links by message kind (and channel), when tallied
    /// ([`Net::tally_kinds`]).
    kinds: Option<BTreeMap<String, u64>>,
}

/// The id of simulated node `i`.
pub fn node_id(i: usize) -> PeerId {
    node_identity(i).id()
}

/// The key of node `i` (deterministic).
pub fn node_identity(i: usize) -> crate::identity::Identity {
    crate::identity::Identity::for_test(i as u64)
}

impl<A: Channels + Default> Net<A> {
    /// An empty network.
    pub fn new(seed: u64, config: SimConfig) -> Net<A> {
        let start = Instant::now();
        Net {
            config,
            rng: StdRng::seed_from_u64(seed),
            start,
            now: start,
            nodes: Vec::new(),
            by_addr: BTreeMap::new(),
            links: BTreeMap::new(),
            next_link: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            next_seq: 0,
            wakeups: BTreeSet::new(),
            wakeup_of: Vec::new(),
            group: None,
            loss: 0.0,
            mute_gossip: false,
            broadcast_trace: None,
            bytes_sent: 0,
            kinds: None,
        }
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The current virtual instant.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Number of nodes ever added.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &SimNode<A> {
        &self.nodes[i]
    }

    /// Node `i`, mutably.
    pub fn node_mut(&mut self, i: usize) -> &mut SimNode<A> {
        &mut self.nodes[i]
    }

    /// Indices of the running nodes.
    pub fn alive(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive)
            .collect()
    }

    /// The listen address of node `i`.
    pub fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([198, 18, (i / 250) as u8, (i % 250) as u8 + 1], SIM_PORT))
    }

    /// A fresh node `i` (mesh and connection maker) that will dial `explicit`.
    fn fresh_node(&mut self, i: usize, uid: Option<PeerUid>, explicit: &[SocketAddr]) -> Node {
        let uid = uid.unwrap_or_else(|| PeerUid(self.rng.gen()));
        let local = LocalPeer {
            id: node_id(i),
            identity: node_identity(i),
            uid,
            nickname: format!("node{i}"),
            listen_port: SIM_PORT,
        };
        let mesh = Mesh::new(local, self.config.mesh.clone(), self.rng.gen(), self.now);
        let maker = ConnectionMaker::new(self.config.maker.clone(), self.rng.gen());
        let mut node = Node::new(mesh, maker, self.now);
        node.handle(
            self.now,
            crate::node::Input::Connect {
                targets: explicit.to_vec(),
                replace: false,
            },
            &mut (),
        );
        node
    }

    /// Launches a router that knows the addresses of nodes `targets`; returns its index.
    pub fn add_node(&mut self, targets: &[usize]) -> usize {
        let explicit: Vec<SocketAddr> = targets.iter().map(|&t| Self::addr(t)).collect();
        self.add_node_with_targets(&explicit)
    }

    /// Launches a router with these explicit targets; returns its index.
    pub fn add_node_with_targets(&mut self, explicit: &[SocketAddr]) -> usize {
        let i = self.nodes.len();
        let node = SimNode {
            node: self.fresh_node(i, None, explicit),
            channels: A::default(),
            addr: Self::addr(i),
            alive: true,
            closes: Vec::new(),
            events: Vec::new(),
            dials: 0,
            explicit: explicit.to_vec(),
            conns: BTreeMap::new(),
            next_conn: 1,
            pump: None,
            pump_deadline: None,
        };
        self.nodes.push(node);
        self.wakeup_of.push(None);
        self.by_addr.insert(Self::addr(i), i);
        self.drive(i);
        i
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.events.insert(seq, event);
        self.queue.push(Reverse((at, seq)));
    }

    /// Messages (and link events) in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Advances to the next event or timer; `false` if nothing is scheduled before `limit`.
    fn step(&mut self, limit: Instant) -> bool {
        let next_event = self.queue.peek().map(|Reverse((at, _))| *at);
        let next_wakeup = self.wakeups.first().map(|(at, _)| *at);
        let Some(at) = next_event.into_iter().chain(next_wakeup).min() else {
            return false;
        };
        if at > limit {
            return false;
        }
        self.now = self.now.max(at);
        if next_event == Some(at) {
            if let Some(Reverse((_, key))) = self.queue.pop() {
                if let Some(event) = self.events.remove(&key) {
                    self.process(event);
                }
            }
        } else if let Some((_, i)) = self.wakeups.pop_first() {
            self.wakeup_of[i] = None;
            let node = &mut self.nodes[i];
            if node.alive {
                node.node.handle_timeout(self.now, &node.channels);
                self.drive(i);
            }
        }
        true
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        while self.step(limit) {}
        self.now = limit;
    }

    /// Runs until no message is in flight (timers keep firing meanwhile); `false` if that
    /// took longer than `limit`.
    pub fn run_until_quiet(&mut self, limit: Duration) -> bool {
        let deadline = self.now + limit;
        while !self.queue.is_empty() {
            if !self.step(deadline) {
                return false;
            }
        }
        true
    }

    /// Runs in steps of `every` until `done` holds or `limit` passes; returns whether it held.
    pub fn run_until(
        &mut self,
        limit: Duration,
        every: Duration,
        mut done: impl FnMut(&Net<A>) -> bool,
    ) -> bool {
        let deadline = self.now + limit;
        while self.now < deadline {
            self.run_for(every);
            if done(self) {
                return true;
            }
        }
        false
    }
}
