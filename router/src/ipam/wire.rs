//! IPAM's messages on the mesh: gossip (ring or bootstrap claims) and unicasts.
//!
//! Everything is encoded by `gossip::codec` (bounded, no trailing bytes) and then checked
//! by [`GossipMsg::check`] / [`UnicastMsg::decode`] against IPAM's own limits before any
//! of it touches state.

use super::addr::AddrRange;
use super::consensus::{Consensus, SignedClaimsMap, MAX_ROUND};
use super::ring::{Entries, Ring, MAX_SEEDS};
use super::takeover::TakeoverMsg;
use gossip::codec::{self, DecodeError};
use gossip::peer::PeerId;
use serde::{Deserialize, Serialize};

/// The channel name IPAM registers on the mesh.
pub const IPAM_CHANNEL: &str = "ipam";

/// What IPAM gossips: its ring, or its bootstrap claims while it has no ring.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum GossipMsg {
    /// Ring entries (all or some) of the ring seeded by `seeds` over `universe`.
    Ring {
        /// Who sent it (for reports; relays keep it).
        sender: PeerId,
        /// The universe.
        universe: AddrRange,
        /// The seed set (with the universe, the ring's identity).
        seeds: Vec<PeerId>,
        /// Entries.
        entries: Entries,
    },
    /// Bootstrap claims.
    Bootstrap {
        /// Who sent it.
        sender: PeerId,
        /// The universe the sender wants.
        universe: AddrRange,
        /// Claims, each signed by its participant.
        claims: SignedClaimsMap,
    },
}

/// Payloads unicast between two peers' IPAM.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum UnicastMsg {
    /// "Please donate space inside `within`."
    SpaceRequest {
        /// The asker's ring (a donor of another ring says no).
        ring: u64,
        /// Where the asker needs space.
        within: AddrRange,
    },
    /// A donation (or a handover on leave): the donor's changed entries.
    Space {
        /// The ring.
        ring: u64,
        /// The changed entries.
        entries: Entries,
    },
    /// "I have nothing to give."
    Denied {
        /// The ring.
        ring: u64,
    },
    /// A whole gossip state for a peer that lacks it (a [`GossipMsg`], checked when merged).
    Gossip(#[serde(with = "gossip::codec::bytes")] Vec<u8>),
    /// A step of an `rmpeer` instance about `dead`.
    Takeover {
        /// The ring.
        ring: u64,
        /// The peer being removed.
        dead: PeerId,
        /// The step.
        msg: TakeoverMsg,
    },
}

impl GossipMsg {
    /// Decodes and checks bytes from the network.
    pub fn decode(bytes: &[u8]) -> Result<GossipMsg, WireError> {
        let m: GossipMsg = codec::decode(bytes)?;
        m.check()?;
        Ok(m)
    }

    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Checks limits and ranges.
    pub fn check(&self) -> Result<(), WireError> {
        match self {
            GossipMsg::Ring {
                universe,
                seeds,
                entries,
                ..
            } => {
                check_universe(universe)?;
                if seeds.is_empty() || seeds.len() > MAX_SEEDS {
                    return Err(WireError::Invalid("seed count out of bounds"));
                }
                Ring::check_entries(*universe, entries).map_err(WireError::OutOfRange)
            }
            GossipMsg::Bootstrap {
                universe, claims, ..
            } => {
                check_universe(universe)?;
                Consensus::check(claims).map_err(WireError::Invalid)
            }
        }
    }
}

impl UnicastMsg {
    /// Decodes and checks bytes from the network (entries against `universe`).
    pub fn decode(bytes: &[u8], universe: AddrRange) -> Result<UnicastMsg, WireError> {
        let m: UnicastMsg = codec::decode(bytes)?;
        match &m {
            UnicastMsg::SpaceRequest { within, .. } if within.intersect(&universe).is_none() => {
                Err(WireError::OutOfRange("space request outside the range"))
            }
            UnicastMsg::Space { entries, .. } => {
                Ring::check_entries(universe, entries).map_err(WireError::OutOfRange)?;
                Ok(m)
            }
            UnicastMsg::Takeover { msg, .. } if msg.round() > MAX_ROUND => {
                Err(WireError::Invalid("takeover ballot round above the limit"))
            }
            UnicastMsg::Takeover {
                msg: TakeoverMsg::Chosen { votes, .. },
                ..
            } if votes.len() > MAX_SEEDS => Err(WireError::Invalid("more votes than voters")),
            _ => Ok(m),
        }
    }

    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }
}

fn check_universe(u: &AddrRange) -> Result<(), WireError> {
    if u.is_valid_v4() {
        Ok(())
    } else {
        Err(WireError::Invalid("not an IPv4 range"))
    }
}

/// Why IPAM input from a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not decodable (corrupt, truncated, oversized).
    #[error("undecodable IPAM message: {0}")]
    Decode(#[from] DecodeError),
    /// Decoded, but over a limit.
    #[error("invalid IPAM message: {0}")]
    Invalid(&'static str),
    /// Claims addresses outside the allocation range.
    #[error("IPAM message out of range: {0}")]
    OutOfRange(&'static str),
}
