//! The JSON bodies of the API: what callers send and what the router answers.
//!
//! Errors of the IPAM endpoints answer [`ErrorBody`] with 400 (bad input), 409
//! (conflict) or 503 (timed out waiting, for example for consensus); the other
//! endpoints answer errors as plain text. The client reads either ([`crate::client`]).

use serde::{Deserialize, Serialize};

/// Body of `POST /connect` and `POST /forget`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeersRequest {
    /// `HOST[:PORT]` strings.
    pub peers: Vec<String>,
    /// For `connect`: replace the existing targets.
    #[serde(default)]
    pub replace: bool,
}

/// Body of `POST /attach` and `POST /detach`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttachBody {
    /// The namespace: a name under /run/netns, an absolute path, or a PID.
    pub netns: String,
    /// Interface name inside it.
    pub ifname: String,
    /// Addresses as CIDRs (`10.32.1.2/12`).
    pub cidrs: Vec<String>,
}

/// Answer of `POST /attach`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttachAnswer {
    /// Host end of the veth.
    pub host_ifname: String,
    /// MAC of the interface in the namespace.
    pub mac: String,
    /// Its addresses.
    pub cidrs: Vec<String>,
}

/// Body of `POST /expose` and `POST /hide`, and their answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CidrsBody {
    /// Addresses as CIDRs (`10.40.0.1/16`); for `hide`, none means all exposed ones.
    pub cidrs: Vec<String>,
}

/// Body of `POST /ipam/allocate`, `/ipam/claim` and `/ipam/release`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpamBody {
    /// The container id.
    pub id: String,
    /// For allocate: a subnet of the range (CIDR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// For claim (required) and release (optional): `A.B.C.D/len`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
}

/// Answer of allocate and claim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AddrAnswer {
    /// `A.B.C.D/len`.
    pub addr: String,
}

/// Answer of release.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReleasedAnswer {
    /// Addresses released, `A.B.C.D`.
    pub released: Vec<String>,
}

/// Body of `POST /ipam/rmpeer`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RmpeerBody {
    /// Names or nicknames.
    pub peers: Vec<String>,
}

/// Answer of `GET /ipam`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpamList {
    /// weave's status line (`ready` once IPAM can allocate).
    #[serde(default)]
    pub status: String,
    /// The range.
    #[serde(default)]
    pub range: String,
    /// Local allocations.
    #[serde(default)]
    pub allocations: Vec<IpamAllocation>,
}

/// One allocated address.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct IpamAllocation {
    /// The container id.
    pub id: String,
    /// `A.B.C.D/len`.
    pub addr: String,
}

/// The body of an error answer of the IPAM endpoints: `{"error": ".."}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// What failed and what to do.
    pub error: String,
}

impl ErrorBody {
    /// An error body with this message.
    pub fn new(message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: message.into(),
        }
    }
}
