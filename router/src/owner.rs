//! The owner: the one task that owns this router's control plane, a [`Node`], and what
//! hangs off it: the application channels ([`RouterChannels`]: IPAM and the sleeve's
//! messages), lent to the node with each input, the data plane's view of the neighbours
//! ([`Neighbours`]), the handshake counters.
//!
//! It is a select loop that only moves data: [`Input`]s from link tasks, the listener
//! and the API, the two data-plane tasks' events and the clock go into the sans-IO
//! machines; their outputs go to link tasks (send, close), new dial tasks, the data-plane
//! tasks, the route snapshot and the store. Queries are answered with oneshot replies.

mod link_table;
mod peers;
mod relay;

use crate::channels::RouterChannels;
use crate::control_links::{self, LinkContext};
use crate::dataplane_driver::DataplaneHandle;
use crate::fastdp_driver::{Event as FpEvent, FastdpHandle};
use crate::handshakes::HandshakeStats;
use crate::inbound::InboundLinks;
use crate::ipam::Ipam;
use crate::ipam_driver::IpamDriver;
use crate::neighbours::{self, Neighbours};
use crate::report::{self, RouterInfo};
use crate::status::Report;
use crate::store::Write;
use datapath::dataplane::Event as DpEvent;
use gossip::mesh::{ConnId, MeshEvent};
use gossip::node::{Event, Input as NodeInput, Node, Output};
use gossip::peer::PeerId;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info, warn};

pub use crate::handle::{channel, Input, LinkCmd, OwnerHandle, OwnerQueues};

/// The ends of the data-plane tasks that the owner talks to.
pub struct DataplaneTasks {
    /// The sleeve task.
    pub sleeve: DataplaneHandle,
    /// Its events (messages for neighbours, path changes).
    pub sleeve_events: mpsc::UnboundedReceiver<DpEvent>,
    /// Route snapshots for it.
    pub routes: crate::dataplane_driver::RoutesSender,
    /// The fast-path task (a disabled handle when the fast path is off).
    pub fastdp: FastdpHandle,
    /// Its events.
    pub fastdp_events: mpsc::UnboundedReceiver<FpEvent>,
}

/// The owner's state. Built by the daemon, run with [`Owner::run`].
pub struct Owner {
    info: RouterInfo,
    node: Node,
    /// Where to send each authenticated link's commands.
    links: HashMap<ConnId, mpsc::Sender<LinkCmd>>,
    /// Each authenticated link's queue of sleeve datagrams (TCP fallback).
    data_links: HashMap<ConnId, mpsc::Sender<Vec<u8>>>,
    /// The link whose datagram queue the sleeve task has for each neighbour.
    tcp_paths: HashMap<PeerId, ConnId>,
    ctx: Weak<LinkContext>,
    rx: OwnerQueues,
    tasks: DataplaneTasks,
    neighbours: Neighbours,
    channels: RouterChannels,
    ipam: IpamDriver,
    /// The store thread (for the user's connection targets).
    store: std::sync::mpsc::Sender<Write>,
    handshakes: HandshakeStats,
    inbound: InboundLinks,
    peers: peers::Peers,
}

impl Owner {
    /// An owner for this node; IPAM comes with the store thread its snapshots go to.
    pub fn new(
        info: RouterInfo,
        node: Node,
        ctx: &Arc<LinkContext>,
        rx: OwnerQueues,
        (tasks, neighbours): (DataplaneTasks, Neighbours),
        (ipam, store): (Box<Ipam>, std::sync::mpsc::Sender<Write>),
    ) -> Owner {
        let channels = RouterChannels::new(ipam);
        let ipam = IpamDriver::new(store.clone());
        tasks.routes.send(Arc::new(node.mesh().routes().clone()));
        Owner {
            info,
            node,
            links: HashMap::new(),
            data_links: HashMap::new(),
            tcp_paths: HashMap::new(),
            ctx: Arc::downgrade(ctx),
            rx,
            tasks,
            neighbours,
            channels,
            ipam,
            store,
            handshakes: HandshakeStats::default(),
            inbound: InboundLinks::new(gossip::connection_maker::MakerConfig::default().conn_limit),
            peers: peers::Peers::default(),
        }
    }

    /// Caps authenticated inbound links at connection limit `conn_limit`
    /// ([`InboundLinks`]).
    pub fn with_conn_limit(mut self, conn_limit: usize) -> Owner {
        self.inbound = InboundLinks::new(conn_limit);
        self
    }

    /// Runs until every handle is dropped.
    pub async fn run(mut self) {
        self.store_targets();
        loop {
            self.drain(Instant::now());
            let ipam_next = self.channels.ipam.poll_timeout();
            let next = [
                self.node.poll_timeout(),
                ipam_next,
                self.reclaim_timeout(),
                self.neighbours.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(next));
            tokio::select! {
                // In this order, so that a link queue that is never empty (a peer that
                // sends as fast as the owner reads) delays no local input and no timer.
                biased;
                input = self.rx.control.recv() => match input {
                    Some(input) => self.handle(Instant::now(), input),
                    None => return,
                },
                Some(event) = self.tasks.sleeve_events.recv() => match event {
                    DpEvent::Alive(peers) => self.handle(Instant::now(), Input::Node(NodeInput::Alive { peers })),
                    event => self.neighbours.handle_dataplane(Instant::now(), event),
                },
                Some(event) = self.tasks.fastdp_events.recv() => {
                    self.neighbours.handle_fastdp(event);
                }
                _ = sleep => {
                    let now = Instant::now();
                    self.node.handle_timeout(now, &self.channels);
                    self.channels.ipam.handle_timeout(now);
                    self.neighbours_timeout(now);
                }
                // The permit (the message's share of the byte budget) is given back
                // once the message is handled.
                Some(queued) = self.rx.links.recv() => {
                    self.handle(Instant::now(), queued.input);
                }
            }
        }
    }

    fn handle(&mut self, now: Instant, input: Input) {
        let input = match input {
            Input::LinkUp { link, tx, data } => match self.link_up(link, tx, data) {
                Some(up) => up,
                None => return,
            },
            Input::Node(input) => input,
            Input::Forget { targets, reply } => {
                let _ = reply.send(self.node.forget(&targets));
                return self.store_targets();
            }
            Input::HandshakeRefused { outbound, reason } => {
                return self.handshakes.refused(outbound, reason);
            }
            Input::Report(reply) => return drop(reply.send(self.report())),
            Input::Ipam(op) => return self.ipam.request(&mut self.channels.ipam, now, op),
            Input::IpamPersisted(seq) => return self.channels.ipam.handle_persisted(seq),
            Input::DnsAnswer { name, ips } => return self.dns_answer(now, name, ips),
            Input::PeerKeys(ids) => return self.peer_keys(now, ids),
            Input::Reclaimed { dead, result } => return self.reclaimed(now, dead, result),
        };
        if let NodeInput::LinkDown { conn, .. } = &input {
            self.links.remove(conn);
            self.data_links.remove(conn);
            self.inbound.gone(*conn);
        }
        let connect = matches!(input, NodeInput::Connect { .. });
        self.node.handle(now, input, &mut self.channels);
        if connect {
            self.store_targets();
        }
    }

    /// Carries out every output of the node, IPAM and the neighbours until none has
    /// more to say.
    fn drain(&mut self, now: Instant) {
        loop {
            let (mut reachability, mut neighbours_changed) = (false, false);
            while let Some(out) = self.node.poll_output() {
                match out {
                    Output::Send { conn, message } => self.send(conn, message),
                    Output::Close {
                        conn,
                        peer,
                        addr,
                        reason,
                    } => self.close(conn, peer, addr, reason),
                    Output::Dial(target) => {
                        if let Some(ctx) = self.ctx.upgrade() {
                            tokio::spawn(control_links::dial(ctx, target));
                        }
                    }
                    Output::Event(Event::Mesh(event)) => {
                        reachability |=
                            matches!(event, MeshEvent::TopologyChanged | MeshEvent::RoutesChanged);
                        neighbours_changed |= matches!(
                            event,
                            MeshEvent::TopologyChanged
                                | MeshEvent::ConnectionEstablished { .. }
                                | MeshEvent::ConnectionLost { .. }
                        );
                        self.mesh_event(event);
                    }
                    Output::Event(event) => control_links::log_down(&event),
                }
            }
            if reachability {
                let ipam = &mut self.channels.ipam;
                self.ipam.topology_changed(ipam, self.node.mesh(), now);
            }
            if neighbours_changed {
                let endpoints = neighbours::endpoints(&self.node);
                self.neighbours.handle_links(endpoints);
                self.update_tcp_paths();
            }
            self.take_sleeve_messages(now);
            self.reclaim_step(now);
            // Relayed messages and IPAM's gossip give the node output: go round again.
            let relayed = self.relay();
            let ipam = &mut self.channels.ipam;
            if !self.ipam.pump(ipam, self.node.mesh_mut(), now) && !relayed {
                break;
            }
        }
    }

    fn mesh_event(&mut self, event: MeshEvent) {
        match event {
            MeshEvent::RoutesChanged => {
                let routes = Arc::new(self.node.mesh().routes().clone());
                self.tasks.routes.send(routes);
                self.neighbours.handle_routes_changed();
            }
            MeshEvent::ConnectionEstablished { conn, peer } => {
                info!(%peer, conn = conn.0, "connection established with {peer}");
            }
            MeshEvent::PeerRemoved(peer) => info!(%peer, "peer {peer} removed from topology"),
            _ => {}
        }
    }

    fn report(&mut self) -> Report {
        let mut r = report::of_node(&self.info, &self.node, &self.neighbours);
        let nickname = &self.info.nickname;
        r.ipam = Some(
            self.ipam
                .report(&self.channels.ipam, self.node.mesh(), nickname),
        );
        let mut handshakes = self.handshakes.report();
        handshakes.gossip_throttled = self.ctx.upgrade().map_or(0, |c| c.throttled());
        r.handshakes = Some(handshakes);
        self.dns_report(Instant::now(), &mut r);
        r
    }

    /// Persists the targets the user gave, so a restart dials them again.
    fn store_targets(&self) {
        let targets = self.node.maker().targets().into_iter();
        let explicit = targets.filter(|t| t.explicit).map(|t| t.addr).collect();
        if self.store.send(Write::Targets(explicit)).is_err() {
            warn!("the store thread is gone; connection targets are not persisted");
        }
    }
}
