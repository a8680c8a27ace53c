//! Drives IPAM on `gossip::sim` the way the daemon does: each node holds its IPAM (in
//! [`IpamChannels`]) and lends it to its node; a pump per node drains IPAM's outputs,
//! writes snapshots to a per-node store (then confirms), hands gossip to the mesh, and
//! records completions and events.

use crate::ipam::{
    Cidr, ContainerId, InitMode, Ipam, IpamConfig, IpamError, IpamEvent, IpamOutput, Reply,
    RequestId, IPAM_CHANNEL,
};
use gossip::channel::{Channels, GossipChannel};
use gossip::mesh::{Mesh, MeshConfig};
use gossip::peer::PeerId;
use gossip::sim::{node_id, node_identity, SimConfig, SimNode};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What the pumps record, shared with the test.
#[derive(Default)]
pub(super) struct Log {
    /// Last snapshot written by each node.
    pub(super) store: BTreeMap<usize, Vec<u8>>,
    /// Completions: (node, incarnation, request) → result.
    pub(super) done: Vec<(usize, u64, RequestId, Result<Reply, IpamError>)>,
    /// Events per node.
    pub(super) events: Vec<(usize, IpamEvent)>,
    /// Incarnation of each node (bumped on restart).
    pub(super) incarnation: BTreeMap<usize, u64>,
}

pub(super) type Shared = Rc<RefCell<Log>>;

/// A simulated node's application channels: its IPAM, once set up.
#[derive(Default)]
pub(super) struct IpamChannels {
    pub(super) ipam: Option<Ipam>,
}

impl Channels for IpamChannels {
    fn names(&self) -> &'static [&'static str] {
        &[IPAM_CHANNEL]
    }

    fn get(&self, name: &str) -> Option<&dyn GossipChannel> {
        let ipam = self.ipam.as_ref().filter(|_| name == IPAM_CHANNEL);
        ipam.map(|x| x as &dyn GossipChannel)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut dyn GossipChannel> {
        let ipam = self.ipam.as_mut().filter(|_| name == IPAM_CHANNEL);
        ipam.map(|x| x as &mut dyn GossipChannel)
    }
}

/// The simulated network of these tests.
pub(super) type Net = gossip::sim::Net<IpamChannels>;

/// Fast mesh timers so that partitions are noticed in seconds.
pub(super) fn sim_config() -> SimConfig {
    SimConfig {
        mesh: MeshConfig {
            gossip_interval: Duration::from_secs(6),
            heartbeat_ask_after: Duration::from_secs(2),
            control_ask_after: Duration::from_secs(2),
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(4),
            ..MeshConfig::default()
        },
        ..SimConfig::default()
    }
}

pub(super) fn ipam_config(range: &str, init: InitMode) -> IpamConfig {
    let range: Cidr = range.parse().expect("test range");
    IpamConfig {
        request_timeout: Duration::from_secs(10),
        donation_retry: Duration::from_millis(500),
        consensus_retry: Duration::from_secs(1),
        ..IpamConfig::new(range, init)
    }
}

/// Node `node`'s IPAM, if set up.
pub(super) fn ipam(node: &SimNode<IpamChannels>) -> Option<&Ipam> {
    node.channels.ipam.as_ref()
}

/// Installs node `i`'s pump.
pub(super) fn install_pump(net: &mut Net, i: usize, log: &Shared) {
    let log = log.clone();
    net.set_pump(
        i,
        Box::new(
            move |now: Instant, mesh: &mut Mesh, channels: &mut IpamChannels| {
                pump(i, now, mesh, channels, &log)
            },
        ),
    );
}

fn pump(
    i: usize,
    now: Instant,
    mesh: &mut Mesh,
    channels: &mut IpamChannels,
    log: &Shared,
) -> Option<Instant> {
    let reachable: Vec<PeerId> = mesh.routes().reachable().collect();
    let mut sends = Vec::new();
    let deadline = {
        let ipam = channels.ipam.as_mut()?;
        ipam.handle_reachable(now, reachable);
        if ipam.poll_timeout().is_some_and(|t| t <= now) {
            ipam.handle_timeout(now);
        }
        let mut log = log.borrow_mut();
        let inc = log.incarnation.get(&i).copied().unwrap_or(0);
        while let Some(out) = ipam.poll_output() {
            match out {
                IpamOutput::Persist { seq, snapshot } => {
                    log.store.insert(i, snapshot);
                    ipam.handle_persisted(seq);
                }
                IpamOutput::Completed { request, result } => {
                    log.done.push((i, inc, request, result))
                }
                IpamOutput::Event(e) => log.events.push((i, e)),
                other => sends.push(other),
            }
        }
        ipam.poll_timeout()
    };
    for s in sends {
        match s {
            IpamOutput::Broadcast(b) => mesh.broadcast(now, IPAM_CHANNEL, b),
            IpamOutput::Unicast { to, payload } => {
                mesh.send_unicast(to, IPAM_CHANNEL, payload);
            }
            _ => {}
        }
    }
    deadline
}

/// A network of `n` routers, each linked to one or two earlier ones, with IPAM from
/// `init(i)` on `range`.
pub(super) fn network(
    seed: u64,
    n: usize,
    range: &str,
    init: impl Fn(usize) -> InitMode,
) -> (Net, Shared) {
    let mut net = Net::new(seed, sim_config());
    let log = Shared::default();
    for i in 0..n {
        let targets: Vec<usize> = match i {
            0 => vec![],
            1 => vec![0],
            _ => vec![i - 1, (i * 7 + 3) % i],
        };
        let node = net.add_node(&targets);
        let cfg = ipam_config(range, init(node));
        net.with_node(node, |_, channels, now| {
            let ipam = Ipam::new(node_id(node), cfg, now, seed ^ node as u64)
                .with_identity(node_identity(node));
            channels.ipam = Some(ipam);
        });
        install_pump(&mut net, node, &log);
    }
    (net, log)
}

/// Issues a request on node `i`.
pub(super) fn request(
    net: &mut Net,
    i: usize,
    f: impl FnOnce(&mut Ipam, Instant) -> RequestId,
) -> RequestId {
    net.with_node(i, |_, channels, now| {
        f(channels.ipam.as_mut().expect("ipam set up"), now)
    })
}

/// Runs until request `id` of node `i` completes (or `limit` passes).
pub(super) fn await_result(
    net: &mut Net,
    log: &Shared,
    i: usize,
    id: RequestId,
    limit: Duration,
) -> Option<Result<Reply, IpamError>> {
    let find = |log: &Shared| {
        log.borrow()
            .done
            .iter()
            .find(|(n, _, r, _)| *n == i && *r == id)
            .map(|d| d.3.clone())
    };
    if let Some(r) = find(log) {
        return Some(r);
    }
    net.run_until(limit, Duration::from_millis(10), |_| find(log).is_some());
    find(log)
}

/// Allocates for `container` on node `i` and waits.
pub(super) fn allocate(
    net: &mut Net,
    log: &Shared,
    i: usize,
    container: &str,
) -> Option<Result<Reply, IpamError>> {
    let c = ContainerId(container.to_string());
    let id = request(net, i, |ipam, now| ipam.allocate(now, c, None));
    await_result(net, log, i, id, Duration::from_secs(30))
}
