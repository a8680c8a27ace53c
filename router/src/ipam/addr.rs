//! Address math: IPv4 CIDRs and half-open address ranges as plain integers.
//!
//! Inside IPAM an address is a `u64` holding an IPv4 address, so that the exclusive end
//! of a range reaching 255.255.255.255 still fits; conversion to [`Ipv4Addr`] happens at
//! the edges. A [`Cidr`] must be a network address (no host bits set).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// A half-open range of IPv4 addresses `[start, end)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct AddrRange {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
}

impl AddrRange {
    /// Number of addresses.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range holds no address.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `addr` lies inside.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Whether `other` lies entirely inside.
    pub fn covers(&self, other: &AddrRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// The overlap of two ranges, if any.
    pub fn intersect(&self, other: &AddrRange) -> Option<AddrRange> {
        let r = AddrRange {
            start: self.start.max(other.start),
            end: self.end.min(other.end),
        };
        (!r.is_empty()).then_some(r)
    }

    /// Whether the range is a valid IPv4 range (non-empty, within 32 bits).
    pub fn is_valid_v4(&self) -> bool {
        self.start < self.end && self.end <= 1 << 32
    }
}

impl fmt::Display for AddrRange {
    /// weave's `Range:` layout: `10.32.0.0-10.47.255.255`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            to_ip(self.start),
            to_ip(self.end.saturating_sub(1))
        )
    }
}

/// An IPv4 network in CIDR notation.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Cidr {
    /// The network address.
    pub addr: Ipv4Addr,
    /// The prefix length, 0..=32.
    pub prefix: u8,
}

/// Why a CIDR string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseCidrError {
    /// Not of the form `a.b.c.d/n` with n in 0..=32.
    #[error("'{0}' is not an IPv4 CIDR such as 10.32.0.0/12")]
    Syntax(String),
    /// Host bits are set, e.g. `10.32.0.1/12`.
    #[error("'{0}' has host bits set; the network address is {1}")]
    HostBits(String, Cidr),
}

impl Cidr {
    /// The CIDR `addr/prefix`, with host bits cleared.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Cidr {
        let prefix = prefix.min(32);
        let mask = mask(prefix);
        Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        }
    }

    /// Weft's default allocation range, as weave's.
    pub fn default_range() -> Cidr {
        Cidr::new(Ipv4Addr::new(10, 32, 0, 0), 12)
    }

    /// The addresses it spans.
    pub fn range(&self) -> AddrRange {
        let start = u64::from(u32::from(self.addr));
        AddrRange {
            start,
            end: start + (1u64 << (32 - u32::from(self.prefix))),
        }
    }

    /// The addresses that may be handed to containers: all but the network and broadcast
    /// addresses, for prefixes up to /30 (as weave does).
    pub fn usable(&self) -> AddrRange {
        let r = self.range();
        if self.prefix <= 30 {
            AddrRange {
                start: r.start + 1,
                end: r.end - 1,
            }
        } else {
            r
        }
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = ParseCidrError;

    fn from_str(s: &str) -> Result<Cidr, ParseCidrError> {
        let syntax = || ParseCidrError::Syntax(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| syntax())?;
        let prefix: u8 = p.parse().map_err(|_| syntax())?;
        if prefix > 32 {
            return Err(syntax());
        }
        let cidr = Cidr::new(addr, prefix);
        if cidr.addr != addr {
            return Err(ParseCidrError::HostBits(s.to_string(), cidr));
        }
        Ok(cidr)
    }
}

/// The address `a` as an [`Ipv4Addr`] (truncated to 32 bits).
pub fn to_ip(a: u64) -> Ipv4Addr {
    Ipv4Addr::from(a as u32)
}

/// The address `ip` as a `u64`.
pub fn from_ip(ip: Ipv4Addr) -> u64 {
    u64::from(u32::from(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_range_spans_a_twelve() {
        let c = Cidr::default_range();
        assert_eq!(c.to_string(), "10.32.0.0/12");
        assert_eq!(c.range().len(), 1 << 20);
        assert_eq!(c.range().to_string(), "10.32.0.0-10.47.255.255");
        assert_eq!(c.usable().len(), (1 << 20) - 2);
    }

    #[test]
    fn parse_refuses_junk_and_host_bits() {
        assert_eq!("10.40.0.0/16".parse::<Cidr>().unwrap().prefix, 16);
        assert!(matches!(
            "10.32.0.1/12".parse::<Cidr>(),
            Err(ParseCidrError::HostBits(..))
        ));
        for bad in ["", "10.0.0.0", "10.0.0.0/33", "x/8", "10.0.0.0/-1"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert_eq!(all.range().end, 1 << 32);
    }

    #[test]
    fn intersections() {
        let a = AddrRange { start: 0, end: 10 };
        let b = AddrRange { start: 5, end: 20 };
        assert_eq!(a.intersect(&b), Some(AddrRange { start: 5, end: 10 }));
        assert_eq!(a.intersect(&AddrRange { start: 10, end: 11 }), None);
        assert!(b.covers(&AddrRange { start: 5, end: 20 }));
    }
}
