//! The fast-path task: the one owner of the [`FastPath`] state machine, the VXLAN
//! device's forwarding entries, the probe TAP device and the firewall table.
//!
//! The owner tells it which connections are eligible (after the hellos exchanged over
//! the control link) and hands it the probe acknowledgements; it sends probes through
//! the probe TAP device (bridge → VXLAN device → peer), acknowledges the peer's probes
//! through the owner, and tells the data plane which neighbours are on the fast path.
//! After every change it recomputes the desired kernel state, diffs it against the
//! forwarding entries netlink reports, applies the difference, and hands the firewall
//! task ([`crate::firewall`], the owner of the nftables table) the addresses allowed to
//! send VXLAN when they changed.
//!
//! Bridge layout ([`setup`]): the TAP port and the VXLAN port are both *isolated*, so
//! the bridge never forwards between them (no loops, no frame both carried by the
//! kernel and relayed by the router); containers' ports and the probe port are not, so
//! they reach both.

use crate::dataplane_driver::{Command as DpCommand, DataplaneHandle};
use crate::firewall::FirewallHandle;
use datapath::fastdp::desired::{self, Desired};
use datapath::fastdp::link::{Mode, ProbeConfig, Reason};
use datapath::fastdp::{probe, FastPath, Output, PROBE_TAP_NAME, VNI, VXLAN_NAME, VXLAN_PORT};
use datapath::netlink::Netlink;
use datapath::tap::{Tap, TAP_NAME};
use gossip::peer::PeerId;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// The forwarding entries are re-read and re-converged at least this often: a change
/// of ours is applied at once (`dirty`), so this only repairs what was changed behind
/// the router's back, as often as the firewall's table is checked. Each round dumps
/// the VXLAN device's forwarding table; at 100 routers every 5 s that was 0.3 % of a
/// core.
const RESYNC: Duration = Duration::from_secs(30);

/// A command for the task.
#[derive(Debug)]
pub enum Command {
    /// An eligible connection to `peer`, at underlay address `ip`.
    Candidate {
        /// The neighbour.
        peer: PeerId,
        /// Its underlay address (the control link's remote address).
        ip: IpAddr,
    },
    /// The connection is gone or not eligible.
    Remove(PeerId),
    /// `peer` acknowledged our probe with this nonce.
    Ack(PeerId, u64),
    /// Counters and modes.
    Stats(oneshot::Sender<Stats>),
}

/// What the owner must do.
#[derive(Debug)]
pub enum Event {
    /// Acknowledge `peer`'s probe over the control link.
    SendAck {
        /// The neighbour.
        peer: PeerId,
        /// The probe's nonce.
        nonce: u64,
    },
    /// A connection's mode changed.
    Mode {
        /// The neighbour.
        peer: PeerId,
        /// Its mode.
        mode: Mode,
        /// Why it is on sleeve.
        reason: Option<Reason>,
    },
}

/// The fast path's numbers.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Each candidate's mode.
    pub modes: Vec<(PeerId, Mode, Option<Reason>)>,
    /// Fallbacks so far, by reason.
    pub fallbacks: BTreeMap<Reason, u64>,
    /// VXLAN packets dropped for coming from an address not allowed (None: unreadable).
    pub injected_drops: Option<u64>,
    /// Malformed probes received.
    pub malformed_probes: u64,
    /// Admitted legacy hosts.
    pub admitted: Vec<IpAddr>,
}

/// Whether the fast path runs on this host, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// It runs; eligible connections may use it.
    Enabled,
    /// `--no-fastpath`.
    Disabled,
    /// It could not be set up: a few words why (`nft not found`).
    Unavailable(String),
}

/// A cheap handle to the task; commands are dropped when the fast path is off.
#[derive(Clone, Debug)]
pub struct FastdpHandle {
    tx: Option<mpsc::UnboundedSender<Command>>,
    availability: Availability,
}

impl FastdpHandle {
    /// A handle to no task: the fast path is off (`Disabled` or `Unavailable`).
    pub fn off(availability: Availability) -> FastdpHandle {
        FastdpHandle {
            tx: None,
            availability,
        }
    }

    /// Whether the fast path runs, and why not.
    pub fn availability(&self) -> &Availability {
        &self.availability
    }

    /// Whether a task runs.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Sends a command.
    pub fn send(&self, c: Command) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(c);
        }
    }

    /// Asks for the numbers; None when off.
    pub async fn stats(&self) -> Option<Stats> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Stats(tx));
        rx.await.ok()
    }
}

/// The kernel parts, made by [`setup`].
pub struct Kernel {
    nl: Netlink,
    probe_tap: Tap,
    firewall: FirewallHandle,
}

/// Why [`setup`] failed: a few words for `weft status`, and the whole story for the log.
#[derive(Debug)]
pub struct SetupError {
    /// `nft not found`, `nft failed`, `netlink`.
    pub short: String,
    /// The full message.
    pub message: String,
}

/// Creates the VXLAN device and the probe TAP device on bridge `bridge`, isolates the
/// TAP and VXLAN ports, after the firewall guards the VXLAN port (allowing only
/// `admitted`).
pub async fn setup(
    bridge: &str,
    mtu: u32,
    admitted: &[IpAddr],
    firewall: FirewallHandle,
) -> Result<Kernel, SetupError> {
    let e = |e: datapath::netlink::Error| SetupError {
        short: "netlink".into(),
        message: e.to_string(),
    };
    let nl = Netlink::new().map_err(e)?;
    let bridge_index = nl.index(bridge).await.map_err(e)?;
    // The firewall first: the VXLAN port must never be open to everyone.
    firewall
        .set_fastdp(Some((VXLAN_PORT, admitted.iter().copied().collect())))
        .await
        .map_err(|err| SetupError {
            short: err.short().into(),
            message: err.to_string(),
        })?;
    nl.add_vxlan(VXLAN_NAME, VNI, VXLAN_PORT, mtu, bridge_index)
        .await
        .map_err(e)?;
    nl.set_isolated(VXLAN_NAME, true).await.map_err(e)?;
    nl.set_isolated(TAP_NAME, true).await.map_err(e)?;
    let _ = nl.delete_link(PROBE_TAP_NAME).await;
    let probe_tap = Tap::open(PROBE_TAP_NAME).map_err(|err| SetupError {
        short: "TAP device".into(),
        message: err.to_string(),
    })?;
    // The device keeps its own MAC: were it our probe MAC, the bridge would take probes
    // for it as addressed to the bridge itself. The bridge learns the probe MAC on this
    // port from the probes we send.
    nl.enslave(PROBE_TAP_NAME, bridge_index, mtu)
        .await
        .map_err(e)?;
    Ok(Kernel {
        nl,
        probe_tap,
        firewall,
    })
}

/// Removes the VXLAN device and the probe TAP device (at stop and by `weft reset`);
/// what is missing is skipped. The firewall table is the firewall task's.
pub async fn teardown(nl: &Netlink) -> Vec<String> {
    let mut removed = Vec::new();
    for name in [VXLAN_NAME, PROBE_TAP_NAME] {
        if nl.delete_link(name).await.unwrap_or(false) {
            removed.push(name.to_string());
        }
    }
    removed
}

/// The task's parts.
pub struct FastdpTask {
    us: PeerId,
    fp: FastPath,
    kernel: Kernel,
    mtu: u32,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    dataplane: DataplaneHandle,
    applied_allowed: Option<BTreeSet<IpAddr>>,
    admitted: Vec<IpAddr>,
    dirty: bool,
    flush_ports: bool,
}

/// Builds the task and its handle.
pub fn new(
    us: PeerId,
    kernel: Kernel,
    mtu: u32,
    admitted: Vec<IpAddr>,
    dataplane: DataplaneHandle,
    events: mpsc::UnboundedSender<Event>,
) -> (FastdpTask, FastdpHandle) {
    let (tx, commands) = mpsc::unbounded_channel();
    let task = FastdpTask {
        us,
        fp: FastPath::new(us, ProbeConfig::default(), admitted.clone()),
        admitted,
        kernel,
        mtu,
        commands,
        events,
        dataplane,
        applied_allowed: None,
        dirty: true,
        flush_ports: false,
    };
    (
        task,
        FastdpHandle {
            tx: Some(tx),
            availability: Availability::Enabled,
        },
    )
}

impl FastdpTask {
    /// Runs until the command channel closes.
    pub async fn run(mut self) {
        let mut frame = vec![0u8; 65_535];
        let mut out = Vec::with_capacity(self.mtu as usize + 14);
        let mut last_sync = Instant::now();
        loop {
            // Asleep until the state machine's next probe or deadline, or the resync:
            // with no candidate (every link encrypted and untrusted), every 5 s.
            let next = self
                .fp
                .poll_timeout()
                .map_or(last_sync + RESYNC, |t| t.min(last_sync + RESYNC));
            let timer = tokio::time::sleep_until(tokio::time::Instant::from_std(next));
            tokio::select! {
                c = self.commands.recv() => match c {
                    Some(c) => self.command(Instant::now(), c).await,
                    None => return,
                },
                read = self.kernel.probe_tap.recv(&mut frame) => match read {
                    Ok(n) => self.fp.handle_frame(Instant::now(), &frame[..n]),
                    Err(e) => warn!("reading the probe TAP device: {e}"),
                },
                () = timer => self.fp.handle_timeout(Instant::now()),
            }
            self.drain(&mut out);
            if self.dirty || last_sync.elapsed() >= RESYNC {
                last_sync = Instant::now();
                self.sync_kernel().await;
            }
        }
    }

    async fn command(&mut self, now: Instant, c: Command) {
        match c {
            Command::Candidate { peer, ip } => {
                if self.fp.ip(&peer) != Some(ip) {
                    info!(%peer, "connection to {peer} may use the fast path; probing VXLAN to {ip}");
                    self.fp.add_candidate(now, peer, ip);
                    self.dirty = true;
                }
            }
            Command::Remove(peer) => {
                if self.fp.ip(&peer).is_some() {
                    self.fp.remove(peer);
                    self.dirty = true;
                }
            }
            Command::Ack(peer, nonce) => self.fp.handle_ack(now, peer, nonce),
            Command::Stats(reply) => {
                let _ = reply.send(Stats {
                    modes: self.fp.modes(),
                    fallbacks: self.fp.fallbacks().clone(),
                    injected_drops: self
                        .kernel
                        .firewall
                        .stats()
                        .await
                        .and_then(|s| s.injected_drops),
                    malformed_probes: self.fp.malformed_probes(),
                    admitted: self.admitted.clone(),
                });
            }
        }
    }

    fn drain(&mut self, out: &mut Vec<u8>) {
        while let Some(o) = self.fp.poll_output() {
            match o {
                Output::SendProbe { peer, nonce } => {
                    let len = self.mtu as usize + 14;
                    let f = probe::encode(out, &self.us, &peer, nonce, len);
                    if let Err(e) = self.kernel.probe_tap.try_send(f) {
                        warn!(%peer, "sending a VXLAN probe: {e}");
                    }
                }
                Output::SendAck { peer, nonce } => {
                    let _ = self.events.send(Event::SendAck { peer, nonce });
                }
                Output::ModeChanged { peer, mode, reason } => {
                    match (mode, reason) {
                        (Mode::Fastdp, _) => {
                            info!(%peer, "connection to {peer} uses fastdp (kernel VXLAN)")
                        }
                        (Mode::Sleeve, Some(r)) => {
                            warn!(%peer, reason = r.key(), "connection to {peer} fell back to sleeve: {}", r.as_str())
                        }
                        (Mode::Sleeve, None) => {
                            info!(%peer, "connection to {peer} left the fast path")
                        }
                    }
                    self.dataplane
                        .send(DpCommand::SetFastdp(peer, mode == Mode::Fastdp));
                    let _ = self.events.send(Event::Mode { peer, mode, reason });
                    self.dirty = true;
                    self.flush_ports = true;
                }
            }
        }
    }

    /// Converges the forwarding entries and the firewall on the desired state.
    async fn sync_kernel(&mut self) {
        let want: Desired = self.fp.desired();
        let nl = &self.kernel.nl;
        let mut ok = true;
        if self.applied_allowed.as_ref() != Some(&want.allowed) {
            let guard = Some((VXLAN_PORT, want.allowed.clone()));
            match self.kernel.firewall.set_fastdp(guard).await {
                Ok(()) => self.applied_allowed = Some(want.allowed.clone()),
                Err(e) => {
                    warn!("updating the fast path's firewall: {e}");
                    ok = false;
                }
            }
        }
        match nl.vxlan_fdb(VXLAN_NAME).await {
            Ok(actual) => {
                let diff = desired::diff(&want, &actual);
                for entry in &diff.del {
                    if let Err(e) = nl.vxlan_fdb_del(VXLAN_NAME, entry).await {
                        warn!("{e}");
                        ok = false;
                    }
                }
                for entry in &diff.add {
                    if let Err(e) = nl.vxlan_fdb_append(VXLAN_NAME, entry).await {
                        if !e.is_exists() {
                            warn!("{e}");
                            ok = false;
                        }
                    }
                }
            }
            Err(e) => {
                warn!("reading the VXLAN forwarding entries: {e}");
                ok = false;
            }
        }
        if std::mem::take(&mut self.flush_ports) {
            // MACs learnt on the old path would keep frames on it: forget them.
            for port in [TAP_NAME, VXLAN_NAME] {
                if let Err(e) = nl.flush_port(port).await {
                    warn!("{e}");
                }
            }
        }
        self.dirty = !ok;
    }
}
