//! The kernel VXLAN fast path, sans-IO: who may use it, the probes that confirm it per
//! connection, and the kernel state it needs.
//!
//! A connection may use the fast path only when both ends run without encryption, or
//! both ends trust each other's underlay address (`--trusted-subnets`). Each end tells
//! the other, inside the authenticated control link, a [`Hello`]: whether it offers the
//! fast path, runs without encryption and trusts the address it sees us at. Nothing
//! here is ever inferred from unauthenticated input.
//!
//! An eligible connection is a *candidate*: its peer's underlay address may send to the
//! VXLAN port, and probes of the overlay MTU's size go through the VXLAN device to the
//! peer's probe MAC ([`probe`]). The peer acknowledges them over the control link.
//! [`link::ProbeLink`] decides per connection between `fastdp` and `sleeve`, with the
//! reason when it falls back; [`FastPath`] holds them all and computes the desired
//! kernel state ([`desired`]), which the router diffs against what netlink reports.
//!
//! Wire constants: RFC 7348 VXLAN on UDP port [`VXLAN_PORT`], VNI [`VNI`].

pub mod desired;
pub mod link;
pub mod probe;

use crate::cidr::LinkAddr;
use gossip::peer::PeerId;
use link::{Mode, ProbeConfig, ProbeLink, Reason};
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

/// The kernel VXLAN device on the `weft` bridge.
pub const VXLAN_NAME: &str = "weft-vxlan";
/// The TAP device the router sends and receives fast-path probes through.
pub const PROBE_TAP_NAME: &str = "weft-probe";
/// UDP destination port of the VXLAN encapsulation (the sleeve's port plus one).
pub const VXLAN_PORT: u16 = 6784;
/// The VXLAN network identifier every Weft host uses (the same number as the port, to
/// make a hand-made device easy to configure).
pub const VNI: u32 = 6784;
/// The outer headers VXLAN adds over IPv4: IP 20, UDP 8, VXLAN 8, inner Ethernet 14.
pub const VXLAN_OVERHEAD_V4: u32 = 50;

/// The local fast-path policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The fast path is on (not `--no-fastpath`).
    pub enabled: bool,
    /// A network secret is in use.
    pub encrypted: bool,
    /// `--trusted-subnets`.
    pub trusted: Vec<LinkAddr>,
}

/// What one end tells the other over the authenticated control link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hello {
    /// The sender offers the fast path.
    pub enabled: bool,
    /// The sender runs without encryption.
    pub no_encryption: bool,
    /// The sender trusts the address it sees the receiver at.
    pub trusts_you: bool,
}

impl Hello {
    /// One byte of flags.
    pub fn to_byte(self) -> u8 {
        u8::from(self.enabled) | u8::from(self.no_encryption) << 1 | u8::from(self.trusts_you) << 2
    }

    /// Parses the flags byte strictly: unknown bits are refused.
    pub fn from_byte(b: u8) -> Option<Hello> {
        (b & !7 == 0).then_some(Hello {
            enabled: b & 1 != 0,
            no_encryption: b & 2 != 0,
            trusts_you: b & 4 != 0,
        })
    }
}

/// Why a connection may not use the fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ineligible {
    /// `--no-fastpath` here or there.
    Disabled,
    /// Encrypted, and the two ends do not both trust each other's address.
    NotTrusted,
}

impl std::fmt::Display for Ineligible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Ineligible::Disabled => "fast path disabled",
            Ineligible::NotTrusted => "encrypted and not mutually trusted",
        })
    }
}

/// Whether `subnet` contains `ip`.
pub fn subnet_contains(subnet: &LinkAddr, ip: IpAddr) -> bool {
    match (subnet.ip, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let bits = u32::from(subnet.prefix.min(32));
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let bits = u32::from(subnet.prefix.min(128));
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

impl Policy {
    /// Whether we trust a peer at `ip`.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|s| subnet_contains(s, ip))
    }

    /// Our hello to a peer we see at `peer_ip`.
    pub fn hello(&self, peer_ip: IpAddr) -> Hello {
        Hello {
            enabled: self.enabled,
            no_encryption: !self.encrypted,
            trusts_you: self.trusts(peer_ip),
        }
    }

    /// Whether the connection to a peer at `peer_ip`, which said `theirs`, may use the
    /// fast path: both ends offer it, and both run without encryption or both trust
    /// each other. An encrypted end never qualifies without mutual trust.
    pub fn eligible(&self, peer_ip: IpAddr, theirs: Hello) -> Result<(), Ineligible> {
        if !self.enabled || !theirs.enabled {
            return Err(Ineligible::Disabled);
        }
        let plain = !self.encrypted && theirs.no_encryption;
        let trusted = self.trusts(peer_ip) && theirs.trusts_you;
        if plain || trusted {
            Ok(())
        } else {
            Err(Ineligible::NotTrusted)
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a probe with this nonce to `peer` through the VXLAN path.
    SendProbe {
        /// The candidate.
        peer: PeerId,
        /// The nonce its acknowledgement must carry.
        nonce: u64,
    },
    /// Acknowledge `peer`'s probe over the control link.
    SendAck {
        /// The candidate whose probe arrived.
        peer: PeerId,
        /// The probe's nonce.
        nonce: u64,
    },
    /// The connection to `peer` changed mode.
    ModeChanged {
        /// The candidate.
        peer: PeerId,
        /// Its new mode.
        mode: Mode,
        /// Why it is on sleeve, when it is.
        reason: Option<Reason>,
    },
}

struct Candidate {
    ip: IpAddr,
    link: ProbeLink,
}

/// Every candidate connection of one router, and the fallbacks so far.
pub struct FastPath {
    us: PeerId,
    config: ProbeConfig,
    peers: BTreeMap<PeerId, Candidate>,
    /// Legacy hosts an operator admitted: allowed to send, and flooded to.
    admitted: Vec<IpAddr>,
    fallbacks: BTreeMap<Reason, u64>,
    malformed_probes: u64,
    outputs: VecDeque<Output>,
}

impl FastPath {
    /// Peer `us`, with these probe timings and admitted legacy hosts.
    pub fn new(us: PeerId, config: ProbeConfig, admitted: Vec<IpAddr>) -> FastPath {
        FastPath {
            us,
            config,
            peers: BTreeMap::new(),
            admitted,
            fallbacks: BTreeMap::new(),
            malformed_probes: 0,
            outputs: VecDeque::new(),
        }
    }

    /// An eligible connection to `peer` at underlay address `ip`; probing starts now.
    /// Adding it again with the same address changes nothing.
    pub fn add_candidate(&mut self, now: Instant, peer: PeerId, ip: IpAddr) {
        if self.peers.get(&peer).is_some_and(|c| c.ip == ip) {
            return;
        }
        self.remove(peer);
        self.peers.insert(
            peer,
            Candidate {
                ip,
                link: ProbeLink::new(now, self.config),
            },
        );
    }

    /// The connection is gone or no longer eligible.
    pub fn remove(&mut self, peer: PeerId) {
        if let Some(c) = self.peers.remove(&peer) {
            if c.link.mode() == Mode::Fastdp {
                self.outputs.push_back(Output::ModeChanged {
                    peer,
                    mode: Mode::Sleeve,
                    reason: None,
                });
            }
        }
    }

    /// A frame read from the probe TAP device. Anything but a probe from a candidate
    /// for us is ignored (malformed probes are counted).
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8]) {
        let probe = match probe::decode(frame) {
            Ok(p) => p,
            Err(probe::NotAProbe::Other) => return,
            Err(probe::NotAProbe::Malformed) => {
                self.malformed_probes += 1;
                return;
            }
        };
        if probe.dst_mac != probe::probe_mac(&self.us) {
            return;
        }
        if let Some(c) = self.peers.get_mut(&probe.src) {
            c.link.handle_probe(now);
            self.outputs.push_back(Output::SendAck {
                peer: probe.src,
                nonce: probe.nonce,
            });
            self.update(now);
        }
    }

    /// `peer` acknowledged our probe over the control link.
    pub fn handle_ack(&mut self, now: Instant, peer: PeerId, nonce: u64) {
        if let Some(c) = self.peers.get_mut(&peer) {
            c.link.handle_ack(now, nonce);
        }
        self.update(now);
    }

    /// When [`Self::handle_timeout`] is due next (`None`: no candidate, nothing to time).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers.values().map(|c| c.link.poll_timeout()).min()
    }

    /// Timers: probes due, modes to change (see [`Self::poll_timeout`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        for (peer, c) in &mut self.peers {
            if let Some(nonce) = c.link.poll_probe(now, rand::random()) {
                self.outputs
                    .push_back(Output::SendProbe { peer: *peer, nonce });
            }
        }
        self.update(now);
    }

    fn update(&mut self, now: Instant) {
        for (peer, c) in &mut self.peers {
            if let Some((mode, reason)) = c.link.update(now) {
                if mode == Mode::Sleeve {
                    if let Some(r) = reason {
                        *self.fallbacks.entry(r).or_default() += 1;
                    }
                }
                self.outputs.push_back(Output::ModeChanged {
                    peer: *peer,
                    mode,
                    reason,
                });
            }
        }
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The kernel state the candidates and admitted hosts need.
    pub fn desired(&self) -> desired::Desired {
        let peers = self
            .peers
            .iter()
            .map(|(p, c)| (probe::probe_mac(p), c.ip, c.link.mode()));
        desired::desired(peers, &self.admitted)
    }

    /// The mode of each candidate, with the reason when on sleeve.
    pub fn modes(&self) -> Vec<(PeerId, Mode, Option<Reason>)> {
        self.peers
            .iter()
            .map(|(p, c)| (*p, c.link.mode(), c.link.reason()))
            .collect()
    }

    /// Fallbacks from fastdp to sleeve so far, by reason.
    pub fn fallbacks(&self) -> &BTreeMap<Reason, u64> {
        &self.fallbacks
    }

    /// Malformed probes received.
    pub fn malformed_probes(&self) -> u64 {
        self.malformed_probes
    }

    /// The underlay address of a candidate.
    pub fn ip(&self, peer: &PeerId) -> Option<IpAddr> {
        self.peers.get(peer).map(|c| c.ip)
    }
}

#[cfg(test)]
mod tests;
