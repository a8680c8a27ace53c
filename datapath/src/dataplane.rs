//! The data plane of one router, sans-IO: sleeve sessions per neighbour, the switch,
//! the receiver-index map, UDP path confirmation and counters.
//!
//! The driver feeds it frames captured on the TAP device, datagrams from the UDP
//! socket, control-link messages (rekey offers, "I hear you") and the time; it returns
//! datagrams to send in a reusable [`TxBuffer`], frames to deliver through a callback,
//! and [`Event`]s for the control link. Nothing here allocates per packet: datagrams
//! are sealed into the buffer's fixed slots, and received ones are opened in place.
//!
//! Frames that queue up share datagrams: each neighbour has a staging buffer (one
//! datagram, allocated when the neighbour is added) that frames for it are appended to
//! until the next would not fit in [`DataplaneConfig::max_datagram`]; the driver calls
//! [`Dataplane::flush`] at the end of each wake-up, which seals what is staged into the
//! [`TxBuffer`]. So a lone frame leaves at once, and a burst leaves in full datagrams.
//!
//! Path confirmation: each side sends sealed keepalives; whoever receives an
//! authenticated datagram tells the sender. A peer's path is `established` while we
//! hear it and it hears us, both within [`DataplaneConfig::path_timeout`]; before that
//! it is `pending`. While pending, a keepalive goes every [`DataplaneConfig::probe`],
//! and "I hear you" goes over the control link at once ([`Event::SendHeard`]); once
//! established, a keepalive goes when nothing else was sent to the peer for
//! [`DataplaneConfig::keepalive`] (25 s: often enough to hold a UDP mapping in a NAT
//! between us open, and no more), and "I hear you" rides in a keepalive (a "heard"
//! keepalive, at most every keepalive interval, see [`crate::sleeve::codec`]). A path
//! needs datagrams both ways to be up at all, so the keepalive reaches the peer
//! whenever the news matters, and an idle path costs the control links nothing.
//!
//! Roaming: a neighbour's endpoint starts as the control link's address (with its
//! announced port) and moves to the source address of a datagram that opened under one
//! of its live keys, passed the replay window and carries the newest counter seen under
//! that key ([`Event::EndpointChanged`]). So a host behind a NAT, whose datagrams come
//! from the NAT's address and a port the NAT chose, is answered there, and a mapping
//! the NAT renumbers is followed. A datagram that fails authentication or the replay
//! check, or an older one that arrives late, never moves it.
//!
//! TCP fallback ([`fallback`]): a neighbour whose UDP path does not confirm within
//! [`DataplaneConfig::fallback_after`] of being added, or whose confirmed path is lost,
//! gets its frames sealed exactly as for UDP but queued for the control link
//! ([`Dataplane::poll_tcp`]) instead of the socket ([`Event::Fallback`] each switch).
//! Keepalives and path MTU probes keep going by UDP, so the path comes back by itself
//! once it confirms. Datagrams that arrive over the control link
//! ([`Dataplane::handle_tcp_datagram`]) are opened and checked against the replay window
//! like any other, but never move the endpoint and never confirm the UDP path. The
//! fallback path allocates one buffer per datagram; the UDP path still allocates nothing.
//!
//! Path MTU: each neighbour's path is measured with padded probes ([`path_mtu`]); the
//! neighbour acknowledges each probe over the control link ([`Event::SendProbeAck`]).
//! A frame larger than its next hop carries is dropped and counted as `mtu`; if it
//! was captured here and is IPv4 with DF, or IPv6, an ICMP "fragmentation needed" /
//! "packet too big" goes back to its sender through [`Dataplane::poll_local_frames`].
//!
//! Fast path: neighbours marked with [`Dataplane::set_fastdp`] exchange their own frames
//! through the kernel VXLAN device, which the bridge keeps isolated from the TAP port.
//! A captured frame for such a neighbour's MAC is left to the kernel (the bridge sends
//! unknown destinations to both ports), and so are our own floods while every peer we
//! reach is a direct neighbour (full mesh: nobody relays). Otherwise a flood still goes
//! to it by sleeve, because it may have to relay it to peers we have no direct path to;
//! it then does not deliver a flood that its fast-path neighbour originated, since the
//! VXLAN copy has been delivered. Relayed frames are never held back.

use crate::mac_table::MacTableConfig;
use crate::sleeve::codec::{InnerFrame, OpenError, OpenJob, SealError, BROADCAST};
use crate::sleeve::keys::RekeyOffer;
use crate::sleeve::{
    datagram_len, IpVersion, Session, SessionConfig, HEADER_LEN, MIN_DATAGRAM_LEN,
};
use crate::switch::{Forward, Ingress, RouteView, Switch};
use gossip::peer::PeerId;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod counters;
pub mod fallback;
mod mtu_probes;
use mtu_probes::RelayBack;
pub mod path_mtu;
mod replies;
mod superframes;
mod tx;
pub use counters::{Counters, DropCounts, PeerCounters};
use fallback::{Change, Fallback, FallbackReason, TcpQueue};
use path_mtu::{PathMtu, PmtuConfig};
use replies::Replies;
pub use tx::TxBuffer;

/// Tunables of the data plane.
#[derive(Debug, Clone, Copy)]
pub struct DataplaneConfig {
    /// Sleeve session timers (rekey every 120 s by default).
    pub session: SessionConfig,
    /// Keepalive interval once a path is confirmed: a keepalive goes only when nothing
    /// else was sent to the peer for this long (the NAT keepalive, 25 s by default).
    pub keepalive: Duration,
    /// Keepalive interval while a path is still pending.
    pub probe: Duration,
    /// A direction not heard from for this long is down. At least twice
    /// [`DataplaneConfig::keepalive`], so that one lost keepalive does not take an idle
    /// path down (see [`path_timeout_for`]).
    pub path_timeout: Duration,
    /// The largest datagram (UDP payload) to fill with several frames: the underlay MTU
    /// less the IP and UDP headers. A single larger frame is still sent, alone.
    pub max_datagram: usize,
    /// The configured overlay MTU: the most any path is allowed.
    pub mtu: u16,
    /// Path MTU discovery timing.
    pub pmtu: PmtuConfig,
    /// How long a new neighbour's UDP path may take to confirm before its frames travel
    /// inside the control link (`None`: never).
    pub fallback_after: Option<Duration>,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            session: SessionConfig::default(),
            keepalive: DEFAULT_KEEPALIVE,
            probe: Duration::from_secs(1),
            path_timeout: path_timeout_for(DEFAULT_KEEPALIVE),
            max_datagram: 1500 - 20 - crate::sleeve::UDP_HEADER_LEN,
            mtu: crate::sleeve::overlay_mtu(1500, IpVersion::V4),
            pmtu: PmtuConfig::default(),
            fallback_after: Some(fallback::DEFAULT_FALLBACK_AFTER),
        }
    }
}

/// The keepalive interval of a confirmed path (WireGuard's persistent keepalive): below
/// the 30 s that many NATs keep an idle UDP mapping.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(25);

/// The path timeout that goes with a keepalive interval: two intervals and 10 s more
/// (one keepalive may be lost), and never under 30 s.
pub fn path_timeout_for(keepalive: Duration) -> Duration {
    (keepalive * 2 + Duration::from_secs(10)).max(Duration::from_secs(30))
}

/// How often the peers heard from are reported ([`Event::Alive`]): with the data
/// plane's tick (at most 2 s late) well under the silence after which a control link
/// asks for a heartbeat (35 s), so that a confirmed path's keepalives (one each way
/// every 25 s and a tick) spare the link its heartbeats.
pub const ALIVE_REPORT: Duration = Duration::from_secs(2);

/// How often [`Dataplane::handle_timeout`] runs while some peer is not settled (a path
/// coming up, a rotation under way, a path-MTU search).
pub const TICK: Duration = Duration::from_millis(250);

/// The longest tick while every peer is settled ([`Dataplane::quiet_tick`]): with the
/// default timers (keepalives every 25 s, keys rotated 120 s in and dead at 180 s) a
/// timer served up to 2 s late changes nothing, and a router with a hundred neighbours
/// walks them all at every tick.
pub const QUIET_TICK: Duration = Duration::from_secs(2);

/// Something the control link must carry, or the router must know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Send this rekey offer to `peer` over the control link.
    SendOffer {
        /// The neighbour.
        peer: PeerId,
        /// The offer.
        offer: RekeyOffer,
    },
    /// Tell `peer` over the control link that its datagrams reach us.
    SendHeard {
        /// The neighbour.
        peer: PeerId,
    },
    /// The UDP path to `peer` now works both ways (`true`) or stopped working (`false`).
    PathChanged {
        /// The neighbour.
        peer: PeerId,
        /// Whether the path is established.
        established: bool,
    },
    /// Tell `peer` over the control link that its path MTU probe of `size` bytes arrived.
    SendProbeAck {
        /// The neighbour.
        peer: PeerId,
        /// The probe's datagram length.
        size: u16,
    },
    /// The overlay MTU measured on the path to `peer` changed (at most the configured one).
    MtuChanged {
        /// The neighbour.
        peer: PeerId,
        /// The overlay (IP) MTU of the path.
        mtu: u16,
    },
    /// `peer`'s frames now travel inside the control link, for this reason (`Some`), or
    /// by UDP again (`None`).
    Fallback {
        /// The neighbour.
        peer: PeerId,
        /// Why it is on TCP, or `None` when back on UDP.
        reason: Option<FallbackReason>,
    },
    /// Authentic datagrams arrived from these peers since the last report: they are
    /// alive, and their control links need no heartbeat. At most every
    /// [`ALIVE_REPORT`], and only when there is news.
    Alive(Vec<PeerId>),
    /// `peer`'s datagrams now come from, and ours now go to, `endpoint` (roaming).
    EndpointChanged {
        /// The neighbour.
        peer: PeerId,
        /// The endpoint it had.
        from: SocketAddr,
        /// The endpoint it has now.
        to: SocketAddr,
    },
}

struct PeerEntry {
    session: Session,
    endpoint: SocketAddr,
    indices: Vec<u32>,
    last_rx: Option<Instant>,
    heard_by_peer: Option<Instant>,
    /// When we last told the peer that we hear it (over the control link or in a
    /// keepalive).
    heard_sent: Option<Instant>,
    /// A datagram from the peer arrived since we last told it.
    heard_owed: bool,
    /// An authentic datagram arrived since the last [`Event::Alive`].
    alive: bool,
    last_tx: Option<Instant>,
    established: bool,
    counters: PeerCounters,
    /// The datagram being filled: header room, then `staged` plaintext bytes.
    stage: Box<[u8]>,
    staged: usize,
    pmtu: PathMtu,
    /// The MTU last reported in [`Event::MtuChanged`] (0: none yet).
    reported_mtu: u16,
    /// Whether its frames go by TCP.
    fallback: Fallback,
    /// Reached by hole punching: no control link, so no TCP fallback.
    punched: bool,
}

/// The data plane state of one router.
pub struct Dataplane {
    us: PeerId,
    config: DataplaneConfig,
    switch: Switch,
    peers: BTreeMap<PeerId, PeerEntry>,
    index: HashMap<u32, PeerId>,
    events: VecDeque<Event>,
    drops: DropCounts,
    /// Neighbours with staged frames, in the order they were first staged.
    staged_peers: Vec<PeerId>,
    replies: Replies,
    /// Neighbours whose own frames travel by the kernel VXLAN device.
    fastdp: std::collections::BTreeSet<PeerId>,
    /// Some peer is reached only through another: our floods may need relaying.
    flood_relay: bool,
    /// Where a flooded superframe's segments are cut (allocated once).
    scratch: Box<[u8]>,
    /// TCP superframes read from the TAP device.
    superframes: u64,
    /// Sealed datagrams for neighbours in TCP fallback.
    tcp_out: TcpQueue,
    /// See [`Dataplane::is_quiet`].
    quiet: bool,
    /// When the last [`Event::Alive`] was due.
    alive_reported: Option<Instant>,
}

impl Dataplane {
    /// A data plane for peer `us`.
    pub fn new(us: PeerId, config: DataplaneConfig) -> Dataplane {
        Dataplane {
            us,
            config,
            switch: Switch::new(us, MacTableConfig::default()),
            peers: BTreeMap::new(),
            index: HashMap::new(),
            events: VecDeque::new(),
            drops: DropCounts::default(),
            staged_peers: Vec::with_capacity(64),
            replies: Replies::default(),
            fastdp: std::collections::BTreeSet::new(),
            flood_relay: true,
            scratch: vec![0; crate::offload::coalesce::MAX_SUPERFRAME].into_boxed_slice(),
            superframes: 0,
            tcp_out: TcpQueue::new(fallback::TCP_QUEUE),
            quiet: false,
            alive_reported: None,
        }
    }

    /// A neighbour whose control link is established: its UDP endpoint (the first
    /// guess; it moves only by roaming, see the module doc) and the link's handshake
    /// hash. Replaces any earlier session with it. The initiator's first offer follows
    /// at the next timeout.
    pub fn add_peer(&mut self, now: Instant, peer: PeerId, endpoint: SocketAddr, hash: [u8; 32]) {
        self.remove_peer(peer);
        let session = Session::new(now, self.config.session, self.us, peer, hash);
        let ip = IpVersion::of(&endpoint);
        let pmtu = PathMtu::new(now, self.config.pmtu, ip, self.config.mtu);
        self.peers.insert(
            peer,
            PeerEntry {
                session,
                endpoint,
                indices: Vec::new(),
                last_rx: None,
                heard_by_peer: None,
                heard_sent: None,
                heard_owed: false,
                alive: false,
                last_tx: None,
                established: false,
                counters: PeerCounters::default(),
                stage: vec![0; self.config.max_datagram.max(MIN_DATAGRAM_LEN)].into_boxed_slice(),
                staged: 0,
                pmtu,
                reported_mtu: 0,
                fallback: Fallback::new(now),
                punched: false,
            },
        );
        self.handle_timeout(now);
    }

    /// A peer we have no control link to, reached by hole punching: its endpoint as a
    /// common neighbour sees it, and a salt both ends derived from the attempt. Like a
    /// neighbour, except that its frames never fall back to TCP (there is no control
    /// link to carry them); its messages travel as mesh unicasts through the relay.
    /// While its path is established, unicast frames for it go to it directly, whatever
    /// the mesh's routes say.
    pub fn add_punched_peer(
        &mut self,
        now: Instant,
        peer: PeerId,
        endpoint: SocketAddr,
        salt: [u8; 32],
    ) {
        self.add_peer(now, peer, endpoint, salt);
        if let Some(entry) = self.peers.get_mut(&peer) {
            entry.punched = true;
        }
    }

    /// The control link to `peer` is gone: drop its session and the MACs behind it.
    pub fn remove_peer(&mut self, peer: PeerId) {
        if let Some(entry) = self.peers.remove(&peer) {
            self.staged_peers.retain(|p| *p != peer);
            self.tcp_out.forget(&peer);
            for idx in entry.indices {
                self.index.remove(&idx);
            }
            self.switch.macs().forget_peer(&peer);
        }
    }

    /// Whether the neighbour `peer` currently uses the kernel fast path.
    pub fn set_fastdp(&mut self, peer: PeerId, on: bool) {
        if on {
            self.fastdp.insert(peer);
        } else {
            self.fastdp.remove(&peer);
        }
    }

    /// Whether `peer` currently uses the kernel fast path.
    pub fn is_fastdp(&self, peer: &PeerId) -> bool {
        self.fastdp.contains(peer)
    }

    /// Whether some reachable peer is not a direct neighbour (so a fast-path neighbour
    /// may have to relay our floods). True until told otherwise: the safe side.
    pub fn set_flood_relay(&mut self, needed: bool) {
        self.flood_relay = needed;
    }

    /// A rekey offer from `peer`, received over the control link.
    pub fn handle_offer(&mut self, now: Instant, peer: PeerId, offer: RekeyOffer) {
        self.quiet = false;
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        let epoch_before = entry.session.epoch();
        match entry.session.handle_offer(now, offer) {
            Ok(Some(answer)) => self.events.push_back(Event::SendOffer {
                peer,
                offer: answer,
            }),
            Ok(None) => {}
            Err(_) => self.drops.rekey_refused += 1,
        }
        if epoch_before > 0 && entry.session.epoch() > epoch_before {
            entry.counters.rekeys += 1;
        }
        self.reindex(peer);
    }

    /// `peer` says, over the control link, that our datagrams reach it.
    pub fn handle_heard(&mut self, now: Instant, peer: PeerId) {
        if let Some(entry) = self.peers.get_mut(&peer) {
            entry.heard_by_peer = Some(now);
        }
        self.update_path(now, peer);
    }

    /// The next event for the control link or the router.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether the UDP path to `peer` is established.
    pub fn is_established(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|e| e.established)
    }

    /// Why `peer`'s frames travel inside the control link, if they do.
    pub fn fallback(&self, peer: &PeerId) -> Option<FallbackReason> {
        self.peers.get(peer).and_then(|e| e.fallback.reason())
    }

    /// The next sealed datagram for a neighbour in TCP fallback, for its control link.
    pub fn poll_tcp(&mut self) -> Option<(PeerId, Vec<u8>)> {
        self.tcp_out.pop()
    }

    /// Where datagrams to `peer` go now.
    pub fn endpoint(&self, peer: &PeerId) -> Option<SocketAddr> {
        self.peers.get(peer).map(|e| e.endpoint)
    }

    /// Counters, per peer and in total.
    pub fn counters(&self) -> Counters {
        Counters {
            peers: self.peers.iter().map(|(p, e)| (*p, e.counters)).collect(),
            drops: self.drops,
            mac_entries: self.switch.mac_len(),
            superframes: self.superframes,
            tcp_queue_full: self.tcp_out.dropped(),
        }
    }

    fn reindex(&mut self, peer: PeerId) {
        if let Some(entry) = self.peers.get_mut(&peer) {
            reindex(&mut self.index, peer, entry);
        }
    }

    /// Whether, as of the last [`Dataplane::handle_timeout`], every peer is settled: its
    /// path is up, no rekey is under way and no path-MTU search runs. The timers left
    /// are keepalives, the next rekey, key expiry and silent paths, and calling
    /// [`Dataplane::handle_timeout`] every [`Dataplane::quiet_tick`] is as good as more
    /// often.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// How often [`Dataplane::handle_timeout`] must run while [`Dataplane::is_quiet`]:
    /// [`QUIET_TICK`], or less where the timers are shorter, so that a timer served a
    /// tick late still holds. A rotation that starts a tick late must finish before
    /// the keys it replaces die (`reject_after_time`, which `--rekey-interval 2` puts
    /// 1 s after the rotation), and a keepalive a tick late must still beat the NAT's
    /// mapping (`--nat-keepalive`): the tick is at most a quarter of either span.
    pub fn quiet_tick(&self) -> Duration {
        let c = &self.config;
        let rotation_slack =
            (c.session.reject_after_time).saturating_sub(c.session.rekey_after_time);
        QUIET_TICK.min(rotation_slack / 4).min(c.keepalive / 4)
    }

    /// When the next [`Dataplane::handle_timeout`] is due after one: [`TICK`], or the
    /// quiet tick (never shorter than [`TICK`]) while [`Dataplane::is_quiet`].
    pub fn tick_interval(&self) -> Duration {
        if self.quiet {
            self.quiet_tick().max(TICK)
        } else {
            TICK
        }
    }

    /// Timers: key expiry, rekeys, keepalives, path state. Call again within
    /// [`Dataplane::tick_interval`].
    pub fn handle_timeout(&mut self, now: Instant) {
        // Every peer at every tick: one walk, no lookups.
        let Self {
            peers,
            index,
            events,
            config,
            ..
        } = self;
        let mut quiet = true;
        for (&peer, entry) in peers.iter_mut() {
            entry.session.handle_timeout(now);
            let taken = |idx: u32| index.contains_key(&idx);
            let offer = entry
                .session
                .poll_rekey_with(now, &mut rand::rngs::OsRng, taken);
            if let Some(offer) = offer {
                events.push_back(Event::SendOffer { peer, offer });
            }
            reindex(index, peer, entry);
            update_path(config, events, now, peer, entry);
            quiet &=
                entry.established && !entry.session.is_rekeying() && !entry.pmtu.is_searching();
        }
        self.quiet = quiet;
        self.report_alive(now);
        self.pmtu_timeout(now);
        self.switch.macs().expire(now);
    }

    /// Every [`ALIVE_REPORT`], the peers heard from since the last report, if any.
    fn report_alive(&mut self, now: Instant) {
        if self
            .alive_reported
            .is_some_and(|t| now.saturating_duration_since(t) < ALIVE_REPORT)
        {
            return;
        }
        self.alive_reported = Some(now);
        let alive: Vec<PeerId> = (self.peers.iter_mut())
            .filter_map(|(peer, entry)| std::mem::take(&mut entry.alive).then_some(*peer))
            .collect();
        if !alive.is_empty() {
            self.events.push_back(Event::Alive(alive));
        }
    }

    /// Keepalives that are due, sealed into `tx`: a "heard" one if the peer's path is
    /// up and it has not been told for a keepalive interval that we hear it.
    pub fn poll_keepalives(&mut self, now: Instant, tx: &mut TxBuffer) {
        let keepalive = self.config.keepalive;
        let stale = |t: Option<Instant>, after: Duration| {
            t.is_none_or(|t| now.saturating_duration_since(t) >= after)
        };
        for entry in self.peers.values_mut() {
            let interval = if entry.established {
                keepalive
            } else {
                self.config.probe
            };
            let heard = entry.established && entry.heard_owed && stale(entry.heard_sent, keepalive);
            let due = entry.session.poll_keepalive() || stale(entry.last_tx, interval) || heard;
            if !due || !entry.session.can_send() {
                continue;
            }
            let sealed = if heard {
                seal_heard(entry, tx, &mut self.drops)
            } else {
                seal_into(entry, &[], tx, None, &mut self.drops)
            };
            if sealed.is_ok() {
                entry.last_tx = Some(now);
                if heard {
                    entry.heard_sent = Some(now);
                    entry.heard_owed = false;
                }
            }
        }
    }

    fn update_path(&mut self, now: Instant, peer: PeerId) {
        if let Some(entry) = self.peers.get_mut(&peer) {
            update_path(&self.config, &mut self.events, now, peer, entry);
        }
    }

    /// A frame captured on our TAP device.
    pub fn handle_local_frame<R: RouteView + ?Sized>(
        &mut self,
        now: Instant,
        frame: &[u8],
        routes: &R,
        tx: &mut TxBuffer,
    ) {
        // Fast-path probes must only ever travel by VXLAN: carried by the sleeve, they
        // would confirm a VXLAN path that does not work.
        if is_probe(frame) {
            return;
        }
        match self.forward(now, frame, Ingress::Local, routes) {
            // The kernel carries frames to a fast-path neighbour's own MACs.
            Forward::Unicast { next_hop, dst_peer }
                if next_hop == dst_peer && self.fastdp.contains(&dst_peer) => {}
            Forward::Unicast { next_hop, dst_peer }
                if !self.fits(&next_hop, frame, dst_peer != next_hop) =>
            {
                self.refuse_too_big(&next_hop, frame, dst_peer != next_hop)
            }
            Forward::Unicast { next_hop, dst_peer } => {
                self.send(now, next_hop, dst_peer, self.us, frame, tx)
            }
            Forward::Flood { next_hops, .. } => {
                let mut too_big = None;
                for hop in next_hops.iter() {
                    if !self.flood_relay && self.fastdp.contains(&hop) {
                        // The VXLAN device floods to it, and it relays for nobody.
                        continue;
                    }
                    if self.fits(&hop, frame, false) {
                        self.send(now, hop, BROADCAST, self.us, frame, tx);
                    } else {
                        too_big = too_big.or(Some(hop));
                    }
                }
                if let Some(hop) = too_big {
                    self.refuse_too_big(&hop, frame, false);
                }
            }
            Forward::Deliver => {}
            Forward::Drop(reason) => self.drops.count(reason),
        }
    }

    /// The switch's decision, with one change: a unicast frame that the mesh routes
    /// through a relay goes straight to its peer when we have an established UDP path
    /// to it (a punched one: the routes only know control links).
    fn forward<'r, R: RouteView + ?Sized>(
        &mut self,
        now: Instant,
        frame: &[u8],
        ingress: Ingress,
        routes: &'r R,
    ) -> Forward<'r> {
        match self.switch.forward(now, frame, ingress, routes) {
            Forward::Unicast { next_hop, dst_peer }
                if next_hop != dst_peer
                    && self.peers.get(&dst_peer).is_some_and(|e| e.established) =>
            {
                Forward::Unicast {
                    next_hop: dst_peer,
                    dst_peer,
                }
            }
            other => other,
        }
    }

    /// Stages `frame` for `next_hop`, sealing what is staged first if it does not fit.
    fn send(
        &mut self,
        now: Instant,
        next_hop: PeerId,
        dst: PeerId,
        src: PeerId,
        frame: &[u8],
        tx: &mut TxBuffer,
    ) {
        let Some(entry) = self.peers.get_mut(&next_hop) else {
            self.drops.no_route += 1;
            return;
        };
        if !entry.session.can_send() {
            self.drops.count_seal_error(SealError::NoKey);
            return;
        }
        let f = InnerFrame { dst, src, frame };
        let max = self.config.max_datagram;
        let mut appended = entry
            .session
            .append(&mut entry.stage, entry.staged, &f, max);
        if matches!(appended, Ok(None)) && entry.staged > 0 {
            seal_stage(next_hop, entry, tx, &mut self.tcp_out, &mut self.drops);
            appended = entry.session.append(&mut entry.stage, 0, &f, max);
        }
        let sent = match appended {
            Ok(Some(inner)) => {
                if entry.staged == 0 {
                    self.staged_peers.push(next_hop);
                }
                entry.staged = inner;
                true
            }
            // Larger than a staging datagram: it goes alone (the stage is empty now).
            Ok(None) => {
                let tcp = Some((next_hop, &mut self.tcp_out));
                seal_into(entry, &[f], tx, tcp, &mut self.drops).is_ok()
            }
            Err(e) => {
                self.drops.count_seal_error(e);
                false
            }
        };
        if sent {
            // Frames by TCP do not stand in for the UDP keepalive that retries the path.
            if !entry.fallback.is_active() {
                entry.last_tx = Some(now);
            }
            entry.counters.tx_frames += 1;
            entry.counters.tx_bytes += frame.len() as u64;
            entry.session.note_frames();
        }
    }

    /// Seals every neighbour's staged frames into `tx`. Call before sending `tx`.
    pub fn flush(&mut self, tx: &mut TxBuffer) {
        for peer in self.staged_peers.drain(..) {
            if let Some(entry) = self.peers.get_mut(&peer) {
                seal_stage(peer, entry, tx, &mut self.tcp_out, &mut self.drops);
            }
        }
    }

    /// A datagram from the UDP socket. Frames for this host go to `deliver`.
    pub fn handle_datagram<R: RouteView + ?Sized>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &mut [u8],
        routes: &R,
        tx: &mut TxBuffer,
        deliver: &mut dyn FnMut(&[u8]),
    ) {
        self.receive(now, Via::Udp(from), datagram, routes, tx, deliver);
    }

    /// A sleeve datagram that came inside the control link to `link_peer` (its TCP
    /// fallback). Opened and replay-checked like one from the socket, it must be under
    /// `link_peer`'s own keys; it never moves the endpoint and never confirms the UDP path.
    pub fn handle_tcp_datagram<R: RouteView + ?Sized>(
        &mut self,
        now: Instant,
        link_peer: PeerId,
        datagram: &mut [u8],
        routes: &R,
        tx: &mut TxBuffer,
        deliver: &mut dyn FnMut(&[u8]),
    ) {
        self.receive(now, Via::Tcp(link_peer), datagram, routes, tx, deliver);
    }

    /// The first step of receiving a datagram from the UDP socket, for a driver that
    /// decrypts without holding the data plane: the checks before decryption (header,
    /// receiver index, replay window), each refusal counted as by
    /// [`Dataplane::handle_datagram`]. Then [`Decryption::run`], without the data plane,
    /// then [`Dataplane::handle_decrypted`].
    pub fn prepare_datagram(&mut self, now: Instant, datagram: &[u8]) -> Option<Decryption> {
        let (peer, job) = self.prepare(now, None, datagram)?;
        Some(Decryption {
            peer,
            job,
            result: None,
        })
    }

    /// The last step of receiving a datagram from `from` whose decryption `d` ran (it
    /// runs here if it has not): as [`Dataplane::handle_datagram`] from there on.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_decrypted<R: RouteView + ?Sized>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        mut d: Decryption,
        datagram: &mut [u8],
        routes: &R,
        tx: &mut TxBuffer,
        deliver: &mut dyn FnMut(&[u8]),
    ) {
        let decrypted = d.result.take().unwrap_or_else(|| d.job.run(datagram));
        let via = Via::Udp(from);
        self.finish(
            now, via, d.peer, &d.job, decrypted, datagram, routes, tx, deliver,
        );
    }

    fn receive<R: RouteView + ?Sized>(
        &mut self,
        now: Instant,
        via: Via,
        datagram: &mut [u8],
        routes: &R,
        tx: &mut TxBuffer,
        deliver: &mut dyn FnMut(&[u8]),
    ) {
        let link_peer = match via {
            Via::Tcp(peer) => Some(peer),
            Via::Udp(_) => None,
        };
        let Some((peer, job)) = self.prepare(now, link_peer, datagram) else {
            return;
        };
        let decrypted = job.run(datagram);
        self.finish(
            now, via, peer, &job, decrypted, datagram, routes, tx, deliver,
        );
    }

    /// The checks before decryption; `link_peer`: the datagram came inside that
    /// neighbour's control link.
    fn prepare(
        &mut self,
        now: Instant,
        link_peer: Option<PeerId>,
        datagram: &[u8],
    ) -> Option<(PeerId, OpenJob)> {
        let Some(idx) = crate::sleeve::header::peek_receiver_index(datagram) else {
            self.drops.malformed += 1;
            return None;
        };
        let Some(&peer) = self.index.get(&idx) else {
            self.drops.unknown_index += 1;
            return None;
        };
        if link_peer.is_some_and(|link_peer| link_peer != peer) {
            // Another neighbour's keys inside this link: never accepted.
            self.drops.tcp_wrong_peer += 1;
            return None;
        }
        let Some(entry) = self.peers.get_mut(&peer) else {
            self.drops.unknown_index += 1;
            return None;
        };
        match entry.session.prepare_open(now, datagram) {
            Ok(job) => Some((peer, job)),
            Err(e) => {
                entry.counters.count_open_error(e);
                None
            }
        }
    }

    /// Everything after the decryption (`decrypted`, its result): the replay mark, the
    /// endpoint, path confirmation, delivery.
    #[allow(clippy::too_many_arguments)]
    fn finish<R: RouteView + ?Sized>(
        &mut self,
        now: Instant,
        via: Via,
        peer: PeerId,
        job: &OpenJob,
        decrypted: Result<(), OpenError>,
        datagram: &mut [u8],
        routes: &R,
        tx: &mut TxBuffer,
        deliver: &mut dyn FnMut(&[u8]),
    ) {
        let Some(entry) = self.peers.get_mut(&peer) else {
            // Removed while the datagram was decrypted.
            self.drops.unknown_index += 1;
            return;
        };
        let datagram_len = datagram.len();
        let opened = match decrypted.and_then(|()| entry.session.finish_open(job, datagram)) {
            Ok(opened) => opened,
            Err(e) => {
                entry.counters.count_open_error(e);
                return;
            }
        };
        let from = match via {
            Via::Udp(from) => from,
            Via::Tcp(_) => {
                entry.counters.tcp_rx_datagrams += 1;
                self.deliver_frames(now, peer, &opened, routes, tx, deliver);
                return;
            }
        };
        if from != entry.endpoint {
            if opened.newest {
                // Authentic, fresh and the newest: the peer is there now (a NAT's
                // mapping, a new address). Answer it there.
                let old = std::mem::replace(&mut entry.endpoint, from);
                entry.counters.endpoint_changes += 1;
                if IpVersion::of(&old) == IpVersion::of(&from) {
                    entry.pmtu.restart(now);
                } else {
                    // Another family: another header and floor; measure afresh.
                    let ip = IpVersion::of(&from);
                    entry.pmtu = PathMtu::new(now, self.config.pmtu, ip, self.config.mtu);
                }
                self.events.push_back(Event::EndpointChanged {
                    peer,
                    from: old,
                    to: from,
                });
            } else {
                // Authentic but late, from elsewhere: the payload is accepted (it could
                // only come from the peer) and the endpoint stays.
                entry.counters.src_mismatch += 1;
            }
        }
        entry.last_rx = Some(now);
        entry.alive = true;
        entry.heard_owed = true;
        if opened.is_heard() {
            entry.heard_by_peer = Some(now);
        }
        // While the path is down the news goes at once, over the control link; once it
        // is up, in a keepalive ([`Dataplane::poll_keepalives`]).
        if !entry.established
            && entry
                .heard_sent
                .is_none_or(|t| now.saturating_duration_since(t) >= self.config.keepalive / 2)
        {
            entry.heard_sent = Some(now);
            entry.heard_owed = false;
            self.events.push_back(Event::SendHeard { peer });
        }
        if opened.is_keepalive() && !opened.is_heard() {
            self.ack_probe(peer, datagram_len);
        }
        self.deliver_frames(now, peer, &opened, routes, tx, deliver);
        // Opening only ever confirms a send key; receiver indices change with offers and
        // expiry (handled there), so there is nothing to re-index per datagram.
        self.update_path(now, peer);
    }

    /// Delivers or forwards the frames of an opened datagram from neighbour `peer`.
    fn deliver_frames<R: RouteView + ?Sized>(
        &mut self,
        now: Instant,
        peer: PeerId,
        opened: &crate::sleeve::codec::Opened<'_>,
        routes: &R,
        tx: &mut TxBuffer,
        deliver: &mut dyn FnMut(&[u8]),
    ) {
        // The frames borrow the datagram, not the session, so forwarding may use `self`.
        let mut answered_too_big = false;
        for f in opened.frames() {
            if let Some(e) = self.peers.get_mut(&peer) {
                e.counters.rx_frames += 1;
                e.counters.rx_bytes += f.frame.len() as u64;
                e.session.note_frames();
            }
            if is_probe(f.frame) {
                continue;
            }
            let ingress = Ingress::Peer {
                from: peer,
                src_peer: f.src,
                dst_peer: f.dst,
            };
            match self.forward(now, f.frame, ingress, routes) {
                Forward::Deliver => deliver(f.frame),
                // Relayed frames too large for the next hop (a narrower path than the
                // sender's first hop, e.g. IPv6 after IPv4) are dropped and counted, and
                // the sender's container is told, back through the sleeve (one reply
                // per datagram).
                Forward::Unicast { next_hop, dst_peer } if !self.fits(&next_hop, f.frame, true) => {
                    self.drops.mtu += 1;
                    if !answered_too_big {
                        let back = RelayBack {
                            from: peer,
                            src: f.src,
                            dst: dst_peer,
                        };
                        answered_too_big =
                            self.answer_relayed_too_big(now, back, &next_hop, f.frame, tx);
                    }
                }
                Forward::Unicast { next_hop, dst_peer } => {
                    self.send(now, next_hop, dst_peer, f.src, f.frame, tx)
                }
                Forward::Flood {
                    next_hops,
                    deliver_locally,
                } => {
                    // A fast-path neighbour's own flood was delivered by VXLAN already.
                    let by_vxlan = f.src == peer && self.fastdp.contains(&peer);
                    if deliver_locally && !by_vxlan {
                        deliver(f.frame);
                    }
                    for hop in next_hops.iter() {
                        if self.fits(&hop, f.frame, true) {
                            self.send(now, hop, BROADCAST, f.src, f.frame, tx);
                        } else {
                            self.drops.mtu += 1;
                        }
                    }
                }
                Forward::Drop(reason) => self.drops.count(reason),
            }
        }
    }
}

/// A received datagram between the checks before its decryption and the rest
/// ([`Dataplane::prepare_datagram`]): whose it is, and the decryption to run.
pub struct Decryption {
    peer: PeerId,
    job: OpenJob,
    /// The decryption's result, once it has run.
    result: Option<Result<(), OpenError>>,
}

impl Decryption {
    /// Decrypts `datagram` (the one [`Dataplane::prepare_datagram`] saw) in place; needs
    /// no data plane, so it may run on any thread, outside the owner's lock.
    pub fn run(&mut self, datagram: &mut [u8]) {
        self.result = Some(self.job.run(datagram));
    }
}

/// Where a received datagram came from.
#[derive(Clone, Copy)]
enum Via {
    /// The UDP socket, from this address.
    Udp(SocketAddr),
    /// Inside the control link to this neighbour.
    Tcp(PeerId),
}

/// Whether `frame` is a fast-path probe (by its EtherType), which the sleeve never
/// carries in either direction.
fn is_probe(frame: &[u8]) -> bool {
    frame.get(12..14) == Some(&crate::fastdp::probe::ETHERTYPE.to_be_bytes()[..])
}

/// Seals `entry`'s staged frames into a slot of `tx` (or, in TCP fallback, into a
/// datagram queued on `tcp`) and empties the stage.
fn seal_stage(
    peer: PeerId,
    entry: &mut PeerEntry,
    tx: &mut TxBuffer,
    tcp: &mut TcpQueue,
    drops: &mut DropCounts,
) {
    let inner = std::mem::take(&mut entry.staged);
    if inner == 0 {
        return;
    }
    let len = datagram_len(inner);
    if entry.fallback.is_active() {
        let mut d = vec![0u8; len];
        d[HEADER_LEN..HEADER_LEN + inner]
            .copy_from_slice(&entry.stage[HEADER_LEN..HEADER_LEN + inner]);
        match entry.session.seal_in_place(&mut d, inner) {
            Ok(n) => {
                d.truncate(n);
                queue_tcp(peer, entry, tcp, d);
            }
            Err(e) => drops.count_seal_error(e),
        }
        return;
    }
    let Some(slot) = tx.slot(len) else {
        drops.tx_full += 1;
        return;
    };
    slot[HEADER_LEN..HEADER_LEN + inner]
        .copy_from_slice(&entry.stage[HEADER_LEN..HEADER_LEN + inner]);
    match entry.session.prepare_in_place(slot, inner) {
        Ok((n, job)) => tx.commit_prepared(entry.endpoint, n, job),
        Err(e) => drops.count_seal_error(e),
    }
}

/// Seals `frames` for `entry` into a slot of `tx`; with `tcp` given and the neighbour in
/// TCP fallback, into a datagram queued there instead (keepalives pass no `tcp`: they
/// always go by UDP, to retry the path).
fn seal_into(
    entry: &mut PeerEntry,
    frames: &[InnerFrame<'_>],
    tx: &mut TxBuffer,
    tcp: Option<(PeerId, &mut TcpQueue)>,
    drops: &mut DropCounts,
) -> Result<(), SealError> {
    let len = entry.session.inner_len(frames).map(datagram_len);
    let len = match len {
        Ok(len) => len,
        Err(e) => {
            drops.count_seal_error(e);
            return Err(e);
        }
    };
    if let Some((peer, tcp)) = tcp.filter(|_| entry.fallback.is_active()) {
        let mut d = vec![0u8; len];
        return match entry.session.seal(frames, &mut d) {
            Ok(n) => {
                d.truncate(n);
                queue_tcp(peer, entry, tcp, d);
                Ok(())
            }
            Err(e) => {
                drops.count_seal_error(e);
                Err(e)
            }
        };
    }
    seal_slot(entry, len, tx, drops, |session, slot| {
        session.write(frames, slot)
    })
}

/// Queues a sealed datagram for `peer`'s control link; a full queue drops it (counted
/// by the queue).
fn queue_tcp(peer: PeerId, entry: &mut PeerEntry, tcp: &mut TcpQueue, datagram: Vec<u8>) {
    if tcp.push(peer, datagram) {
        entry.counters.tcp_tx_datagrams += 1;
    }
}

/// Seals a "heard" keepalive for `entry` into `tx`.
fn seal_heard(
    entry: &mut PeerEntry,
    tx: &mut TxBuffer,
    drops: &mut DropCounts,
) -> Result<(), SealError> {
    seal_slot(entry, datagram_len(1), tx, drops, Session::write_heard)
}

/// Takes a `len`-byte slot of `tx`, has `write` put the plaintext in it, and commits the
/// datagram to `entry`'s endpoint, its encryption prepared; failures are counted.
fn seal_slot(
    entry: &mut PeerEntry,
    len: usize,
    tx: &mut TxBuffer,
    drops: &mut DropCounts,
    write: impl FnOnce(&Session, &mut [u8]) -> Result<usize, SealError>,
) -> Result<(), SealError> {
    let Some(slot) = tx.slot(len) else {
        drops.tx_full += 1;
        return Err(SealError::BufferTooSmall { needed: len });
    };
    let prepared =
        write(&entry.session, slot).and_then(|inner| entry.session.prepare_in_place(slot, inner));
    match prepared {
        Ok((n, job)) => {
            tx.commit_prepared(entry.endpoint, n, job);
            Ok(())
        }
        Err(e) => {
            drops.count_seal_error(e);
            Err(e)
        }
    }
}

/// Re-indexes `peer`'s receiver indices in `index` if its session's changed (at a rekey).
fn reindex(index: &mut HashMap<u32, PeerId>, peer: PeerId, entry: &mut PeerEntry) {
    if entry
        .session
        .receiver_indices()
        .eq(entry.indices.iter().copied())
    {
        return;
    }
    for idx in entry.indices.drain(..) {
        index.remove(&idx);
    }
    entry.indices.extend(entry.session.receiver_indices());
    for idx in &entry.indices {
        index.insert(*idx, peer);
    }
}

/// Whether `peer`'s UDP path is up (we hear it, it hears us) and whether its frames
/// fall back to TCP; a change becomes an event.
fn update_path(
    config: &DataplaneConfig,
    events: &mut VecDeque<Event>,
    now: Instant,
    peer: PeerId,
    entry: &mut PeerEntry,
) {
    let timeout = config.path_timeout;
    let fresh = |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) < timeout);
    let up = fresh(entry.last_rx) && fresh(entry.heard_by_peer);
    if up != entry.established {
        entry.established = up;
        events.push_back(Event::PathChanged {
            peer,
            established: up,
        });
    }
    let after = config.fallback_after.filter(|_| !entry.punched);
    match entry.fallback.update(now, up, after) {
        Some(Change::ToTcp(reason)) => {
            entry.counters.fallbacks += 1;
            events.push_back(Event::Fallback {
                peer,
                reason: Some(reason),
            });
        }
        Some(Change::ToUdp) => {
            // Frames staged for TCP are sealed there; later ones go by UDP.
            events.push_back(Event::Fallback { peer, reason: None });
        }
        None => {}
    }
}

#[cfg(test)]
mod tests;
