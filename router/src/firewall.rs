//! The firewall task: the one owner of Weft's nftables table `inet weft`.
//!
//! It holds what the table should contain ([`ruleset::Desired`]): the fast path's guard,
//! set by the fast-path task, and masquerade for the overlay's subnets while the host
//! is exposed (unless `--no-masquerade`), which it works out itself from the `weft`
//! bridge's addresses, re-read every few seconds and at once after `expose` and `hide`.
//! Whenever the desired table differs from the one applied, it replaces the whole table
//! in one transaction; a table deleted behind its back is noticed and put back. At stop
//! it deletes the table. Masquerading also turns on IPv4 forwarding in the router's
//! namespace, without which nothing leaves for elsewhere.

pub mod exists;
pub mod nft;
pub mod ruleset;

use datapath::cidr::LinkAddr;
use datapath::netlink::Netlink;
use nft::NftError;
use ruleset::Desired;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// How often the bridge's addresses are re-read and a failed change retried.
const TICK: Duration = Duration::from_secs(5);
/// Every this many ticks, the table is checked to be still there.
const EXISTS_EVERY: u32 = 6;

/// What the task is told at start.
#[derive(Debug, Clone)]
pub struct FirewallConfig {
    /// Masquerade traffic leaving the overlay while the host is exposed.
    pub masquerade: bool,
    /// The allocation range, masqueraded with the exposed subnets.
    pub range: LinkAddr,
}

/// Whether traffic from the overlay is masqueraded, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Masquerade {
    /// `--no-masquerade`.
    Off,
    /// Nothing is exposed, so pods have no way out through this host.
    Idle,
    /// These subnets are masqueraded; the rules as installed.
    Active {
        /// The overlay subnets.
        subnets: Vec<LinkAddr>,
        /// The chain's rules.
        rules: Vec<String>,
    },
    /// Wanted, but the table could not be installed.
    Unavailable(NftError),
}

/// The firewall's numbers and state.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Masquerade.
    pub masquerade: Masquerade,
    /// VXLAN packets dropped by the fast path's guard (None: no guard, or unreadable).
    pub injected_drops: Option<u64>,
}

type Reply<T> = oneshot::Sender<T>;

/// A command for the task.
#[derive(Debug)]
enum Command {
    /// The fast path's guard: the VXLAN port and who may send to it (None: no guard).
    SetFastdp(Option<(u16, BTreeSet<IpAddr>)>, Reply<Result<(), NftError>>),
    /// The exposed addresses may have changed.
    Exposed,
    /// The numbers.
    Stats(Reply<Stats>),
    /// Delete the table and end.
    Shutdown(Reply<()>),
}

/// A cheap handle to the task.
#[derive(Clone, Debug)]
pub struct FirewallHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl FirewallHandle {
    /// Sets the fast path's guard and waits until it is in the kernel.
    pub async fn set_fastdp(&self, guard: Option<(u16, BTreeSet<IpAddr>)>) -> Result<(), NftError> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Command::SetFastdp(guard, tx));
        rx.await
            .unwrap_or_else(|_| Err(NftError::Failed("the firewall task has stopped".into())))
    }

    /// The exposed addresses may have changed: look again now.
    pub fn exposed_changed(&self) {
        let _ = self.tx.send(Command::Exposed);
    }

    /// The numbers; None once the task has stopped.
    pub async fn stats(&self) -> Option<Stats> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Command::Stats(tx));
        rx.await.ok()
    }

    /// Deletes the table and ends the task.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Command::Shutdown(tx));
        let _ = rx.await;
    }
}

/// The task's state.
pub struct FirewallTask {
    config: FirewallConfig,
    commands: mpsc::UnboundedReceiver<Command>,
    desired: Desired,
    applied: Option<Desired>,
    error: Option<NftError>,
    /// Drops counted by guards that a later replacement of the table reset.
    dropped_before: u64,
    nl: Option<Netlink>,
}

/// Builds the task and its handle.
pub fn new(config: FirewallConfig) -> (FirewallTask, FirewallHandle) {
    let (tx, commands) = mpsc::unbounded_channel();
    let nl = Netlink::new()
        .map_err(|e| warn!("masquerade cannot read the bridge's addresses: {e}"))
        .ok();
    let task = FirewallTask {
        config,
        commands,
        desired: Desired::default(),
        applied: None,
        error: None,
        dropped_before: 0,
        nl,
    };
    (task, FirewallHandle { tx })
}

impl FirewallTask {
    /// Runs until shut down or every handle is gone.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u32;
        loop {
            tokio::select! {
                c = self.commands.recv() => match c {
                    Some(Command::SetFastdp(guard, reply)) => {
                        self.desired.fastdp = guard;
                        let _ = reply.send(self.converge().await);
                    }
                    Some(Command::Exposed) => {
                        self.read_exposure().await;
                        let _ = self.converge().await;
                    }
                    Some(Command::Stats(reply)) => {
                        let _ = reply.send(self.stats().await);
                    }
                    Some(Command::Shutdown(reply)) => {
                        if self.applied.as_ref().is_some_and(|a| !a.is_empty()) {
                            let _ = nft::remove().await;
                        }
                        let _ = reply.send(());
                        return;
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    ticks += 1;
                    self.read_exposure().await;
                    if ticks >= EXISTS_EVERY {
                        ticks = 0;
                        self.check_table();
                    }
                    let _ = self.converge().await;
                }
            }
        }
    }

    /// Recomputes the masquerade part from the bridge's exposed addresses.
    async fn read_exposure(&mut self) {
        if !self.config.masquerade {
            return;
        }
        let Some(nl) = &self.nl else { return };
        let exposed = match crate::host_net::exposed(nl).await {
            Ok(addrs) => addrs,
            Err(e) => {
                tracing::debug!("masquerade: reading the bridge's addresses: {e}");
                return;
            }
        };
        self.desired.masquerade = if exposed.is_empty() {
            Vec::new()
        } else {
            let mut subnets = exposed;
            subnets.push(self.config.range);
            ruleset::outermost(&subnets)
        };
    }

    /// Puts the table back if it was deleted behind our back (asked over netlink: a
    /// request and its answer, no `nft` process).
    fn check_table(&mut self) {
        if self.applied.as_ref().is_none_or(Desired::is_empty) {
            return;
        }
        if let Ok(false) = exists::table_exists() {
            warn!(
                "the nftables table {} was deleted by someone else; installing it again",
                ruleset::TABLE
            );
            self.applied = None;
        }
    }

    /// Applies the desired table if it differs from the one applied.
    async fn converge(&mut self) -> Result<(), NftError> {
        if self.applied.as_ref() == Some(&self.desired) {
            return Ok(());
        }
        // Replacing the table resets the guard's counter: keep what it counted.
        if self.applied.as_ref().is_some_and(|a| a.fastdp.is_some()) {
            let dropped = nft::dropped().await.unwrap_or(0);
            self.dropped_before = self.dropped_before.saturating_add(dropped);
        }
        match nft::run(&self.desired.script()).await {
            Ok(_) => {
                let was_masquerading = self
                    .applied
                    .as_ref()
                    .is_some_and(|a| !a.masquerade.is_empty());
                if self.error.take().is_some() {
                    info!("the nftables table {} is installed", ruleset::TABLE);
                }
                if !self.desired.masquerade.is_empty() && !was_masquerading {
                    let subnets: Vec<String> = self
                        .desired
                        .masquerade
                        .iter()
                        .map(|s| s.to_string())
                        .collect();
                    info!(
                        "masquerading traffic from {} that leaves this host",
                        subnets.join(", ")
                    );
                    enable_forwarding();
                }
                self.applied = Some(self.desired.clone());
                Ok(())
            }
            Err(e) => {
                if self.error.as_ref() != Some(&e) {
                    warn!("cannot install the nftables table {}: {e}", ruleset::TABLE);
                }
                self.error = Some(e.clone());
                self.applied = None;
                Err(e)
            }
        }
    }

    async fn stats(&self) -> Stats {
        let masquerade = if !self.config.masquerade {
            Masquerade::Off
        } else if self.desired.masquerade.is_empty() {
            Masquerade::Idle
        } else if let (Some(e), None) = (&self.error, &self.applied) {
            Masquerade::Unavailable(e.clone())
        } else {
            Masquerade::Active {
                subnets: self.desired.masquerade.clone(),
                rules: ruleset::masquerade_rules(&self.desired.masquerade),
            }
        };
        let guarded = self.applied.as_ref().is_some_and(|a| a.fastdp.is_some());
        let injected_drops = if guarded {
            nft::dropped()
                .await
                .map(|d| d.saturating_add(self.dropped_before))
        } else {
            None
        };
        Stats {
            masquerade,
            injected_drops,
        }
    }
}

/// Turns on IPv4 forwarding in this namespace, as the CNI bridge plugin does for a
/// gateway: masqueraded traffic is forwarded traffic.
fn enable_forwarding() {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    match std::fs::read_to_string(PATH) {
        Ok(v) if v.trim() == "1" => {}
        _ => match std::fs::write(PATH, "1\n") {
            Ok(()) => info!("enabled IPv4 forwarding (net.ipv4.ip_forward=1) so that pods reach beyond this host"),
            Err(e) => warn!("cannot enable IPv4 forwarding ({PATH}): {e}; pods cannot reach beyond this host"),
        },
    }
}
