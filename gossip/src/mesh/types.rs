//! The mesh's public value types: configuration, outputs, events, status and statistics.

use crate::message::PROTOCOL_VERSION;
use crate::peer::{PeerId, PeerUid};
use crate::timer::{GC_GRACE, ROUTES_DEBOUNCE, TOPOLOGY_BATCH};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Identifies one link; assigned by the driver, unique for the mesh's lifetime.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ConnId(pub u64);

/// Who we are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPeer {
    /// Our authenticated identity (`Mesh::new` sets it to `identity.id()`).
    pub id: PeerId,
    /// Our key: signs our topology record and our unicasts.
    pub identity: crate::identity::Identity,
    /// Random per process start.
    pub uid: PeerUid,
    /// Our nickname (at most 64 bytes; longer ones are cut at a character boundary).
    pub nickname: String,
    /// The TCP port we accept links on, announced for discovery.
    pub listen_port: u16,
}

/// A link that brought no sign of life from the peer for this long asks it for a
/// heartbeat ([`Message::Heartbeat`](crate::message::Message::Heartbeat)), which the
/// peer answers at once. A sign of life is any control message, or any authentic sleeve
/// datagram ([`Mesh::handle_alive`](crate::mesh::Mesh::handle_alive)): a confirmed
/// sleeve path carries a keepalive each way at least every 25 s (reported here within
/// a few seconds), so an idle link whose path works sends no heartbeats at all, and one
/// without (UDP blocked, a fast-path-only link) carries an ask and an answer about twice
/// a minute.
///
/// The side that needs proof asks, so the two ends never disagree about who must speak:
/// Weave sent a heartbeat every 30 s on every link, and at 99 links they were most of an
/// idle router's work.
pub const HEARTBEAT_ASK_AFTER: Duration = Duration::from_secs(35);
/// A link whose control stream carried nothing for this long asks too, even while the
/// peer's datagrams arrive: they prove its data plane, not its control plane (a hung
/// control plane, or a TCP connection a middlebox dropped, is found this way).
pub const CONTROL_ASK_AFTER: Duration = Duration::from_secs(150);
/// While a link waits for an answer it asks again every interval.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// A link is dead when it brought no sign of life for this long, or no control message
/// for [`CONTROL_ASK_AFTER`] and this long: an ask has had 25 s (or a minute) to be
/// answered, even if the peer's control plane lags by seconds (a join storm on a loaded
/// host). A peer that closes its end, or dies, is seen at once: its kernel closes the
/// connection; this catches the hosts that vanish.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(60);

/// Mesh tuning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshConfig {
    /// Period of anti-entropy rounds.
    pub gossip_interval: Duration,
    /// Silence after which a link asks for a heartbeat ([`HEARTBEAT_ASK_AFTER`]).
    pub heartbeat_ask_after: Duration,
    /// Control-stream silence after which a link asks ([`CONTROL_ASK_AFTER`]).
    pub control_ask_after: Duration,
    /// How often a link that waits for an answer asks again ([`HEARTBEAT_INTERVAL`]).
    pub heartbeat_interval: Duration,
    /// Silence after which a link is declared dead ([`HEARTBEAT_TIMEOUT`]).
    pub heartbeat_timeout: Duration,
    /// Whether to offer addresses of peers we know but are not linked to
    /// ([`crate::mesh::Mesh::discovery_candidates`]).
    pub discovery: bool,
    /// Delay before routes take newly added links into account.
    pub routes_debounce: Duration,
    /// Delay between a change and dropping peers that became unreachable.
    pub gc_grace: Duration,
    /// How long changes of our own links are collected into one broadcast delta.
    pub topology_batch: Duration,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            gossip_interval: Duration::from_secs(30),
            heartbeat_ask_after: HEARTBEAT_ASK_AFTER,
            control_ask_after: CONTROL_ASK_AFTER,
            heartbeat_interval: HEARTBEAT_INTERVAL,
            heartbeat_timeout: HEARTBEAT_TIMEOUT,
            discovery: true,
            routes_debounce: ROUTES_DEBOUNCE,
            gc_grace: GC_GRACE,
            topology_batch: TOPOLOGY_BATCH,
        }
    }
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MeshOutput {
    /// Seal `message` and send it on `conn`.
    Send {
        /// The link.
        conn: ConnId,
        /// An encoded [`crate::message::Message`].
        message: Vec<u8>,
    },
    /// Close `conn`. The mesh has already forgotten it; a later
    /// [`crate::mesh::Mesh::handle_link_down`] for it is ignored.
    Close {
        /// The link.
        conn: ConnId,
        /// Why; its `Display` is the user-facing text.
        reason: CloseReason,
    },
    /// Something happened that the driver may want to know.
    Event(MeshEvent),
}

/// Why the mesh closes a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Another link to the same peer was kept instead.
    Duplicate,
    /// The link leads back to this very router. Never retry the target.
    ConnectedToSelf,
    /// Another live router uses our identity. Never retry the target.
    SameIdentity,
    /// Nothing was received for the heartbeat timeout.
    HeartbeatTimeout,
    /// The peer did not send its Hello within the heartbeat timeout.
    HelloTimeout,
    /// The peer sent something invalid.
    Malformed(String),
    /// The peer restarted and reconnected; its new link replaces this one.
    Replaced,
    /// The peer speaks another control-protocol version.
    ProtocolVersion {
        /// The version it announced.
        theirs: u16,
    },
}

impl CloseReason {
    /// Whether the target that led to this link must never be dialled again.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            CloseReason::ConnectedToSelf | CloseReason::SameIdentity
        )
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Duplicate => write!(
                f,
                "duplicate connection; the other link to this peer is kept"
            ),
            CloseReason::ConnectedToSelf => write!(f, "cannot connect to ourself"),
            CloseReason::SameIdentity => write!(
                f,
                "another router is running with this router's identity; \
                 give each router its own data directory"
            ),
            CloseReason::HeartbeatTimeout => {
                write!(f, "no heartbeat from the peer in time; the link is dead")
            }
            CloseReason::HelloTimeout => write!(f, "the peer did not introduce itself in time"),
            CloseReason::Malformed(why) => write!(f, "malformed message from the peer: {why}"),
            CloseReason::Replaced => write!(f, "replaced by a new link from the restarted peer"),
            CloseReason::ProtocolVersion { theirs } => write!(
                f,
                "the peer speaks control protocol version {theirs} and this router speaks \
                 {PROTOCOL_VERSION}; run the same weft version on both"
            ),
        }
    }
}

/// Notable changes, for logs, the connection maker and route snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MeshEvent {
    /// `conn` to `peer` completed its Hello exchange and is now the link to that peer.
    ConnectionEstablished {
        /// The link.
        conn: ConnId,
        /// The remote peer.
        peer: PeerId,
    },
    /// `conn` is gone (closed by us or reported down). Sent once for every link that was
    /// passed to `handle_link_up`, established or not.
    ConnectionLost {
        /// The link.
        conn: ConnId,
        /// The remote peer.
        peer: Option<PeerId>,
        /// Why we closed it; `None` if the driver reported it down.
        reason: Option<CloseReason>,
    },
    /// The topology changed (coalesced: at most one per `routes_debounce`).
    TopologyChanged,
    /// Routes were recalculated; publish a fresh snapshot of [`crate::mesh::Mesh::routes`].
    RoutesChanged,
    /// A peer became unreachable and was dropped from the topology.
    PeerRemoved(PeerId),
    /// A registered gossip channel merged something new.
    ChannelUpdated {
        /// The channel's name.
        channel: &'static str,
    },
}

/// Where a local link is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConnectionState {
    /// Authenticated; waiting for the peer's Hello.
    Handshaking,
    /// Hello exchanged; the link carries gossip.
    Established,
}

/// One local link, for `weft status connections`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionStatus {
    /// The link.
    pub conn: ConnId,
    /// The authenticated remote peer.
    pub peer: PeerId,
    /// Its nickname, once it sent Hello.
    pub nickname: Option<String>,
    /// Its address.
    pub remote_addr: SocketAddr,
    /// Whether we dialled.
    pub outbound: bool,
    /// Where the link is.
    pub state: ConnectionState,
}

impl ConnectionStatus {
    /// Whether the Hello exchange is done.
    pub fn is_established(&self) -> bool {
        self.state == ConnectionState::Established
    }
}

/// One known peer, for `weft status peers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer.
    pub id: PeerId,
    /// Its nickname.
    pub nickname: String,
    /// Its incarnation uid.
    pub uid: PeerUid,
    /// Its record version.
    pub version: u64,
    /// The links it reports.
    pub connections: Vec<PeerConnectionStatus>,
}

/// A link as reported by a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConnectionStatus {
    /// The remote end.
    pub peer: PeerId,
    /// The remote end's nickname, if known (else empty).
    pub nickname: String,
    /// The remote end's address as the reporter sees it.
    pub addr: SocketAddr,
    /// Whether the reporter dialled.
    pub outbound: bool,
    /// Whether the remote end reports the link too.
    pub established: bool,
}

/// Counters since the mesh started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeshStats {
    /// Gossip messages (digests, summaries, updates, broadcasts, unicasts) sent.
    pub gossip_messages_sent: u64,
    /// Bytes of those.
    pub gossip_bytes_sent: u64,
    /// Gossip messages received.
    pub gossip_messages_received: u64,
    /// Bytes of those.
    pub gossip_bytes_received: u64,
    /// Hello and heartbeat messages sent.
    pub control_messages_sent: u64,
    /// Bytes of those.
    pub control_bytes_sent: u64,
    /// Invalid messages received (each closed its link).
    pub malformed: u64,
    /// Times we moved our record to a new epoch to overtake another incarnation.
    pub incarnation_bumps: u64,
    /// Topology records refused (forged, unproven, over a cap), by reason.
    pub rejected_records: crate::topology::Rejected,
    /// Unicasts for us whose source proof failed, by reason (dropped before any
    /// channel saw them).
    pub rejected_unicasts: crate::topology::Rejected,
}
