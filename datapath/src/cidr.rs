//! Addresses with a prefix length (`10.32.1.2/12`, `fd00::2/64`): what is put on a
//! link, routed, or given as a range on the command line.

use std::net::IpAddr;

/// An address on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkAddr {
    /// The address.
    pub ip: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
}

/// A CIDR such as `10.32.1.2/12` is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?}: expected ADDRESS/PREFIX, like 10.32.1.2/12 or fd00::2/64")]
pub struct BadCidr(pub String);

impl std::str::FromStr for LinkAddr {
    type Err = BadCidr;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadCidr(s.to_string());
        let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        Ok(LinkAddr { ip, prefix })
    }
}

impl LinkAddr {
    /// True for link-local addresses (fe80::/10, 169.254.0.0/16), which the kernel
    /// adds by itself and which are never part of the overlay.
    pub fn is_link_local(&self) -> bool {
        match self.ip {
            IpAddr::V6(ip) => ip.segments()[0] & 0xffc0 == 0xfe80,
            IpAddr::V4(ip) => ip.is_link_local(),
        }
    }
}

impl std::fmt::Display for LinkAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_print() {
        let a: LinkAddr = "10.32.1.2/12".parse().unwrap();
        assert_eq!(a.prefix, 12);
        assert_eq!(a.to_string(), "10.32.1.2/12");
        assert_eq!("fd00::2/64".parse::<LinkAddr>().unwrap().prefix, 64);
        for bad in [
            "10.32.1.2",
            "10.32.1.2/33",
            "fd00::1/129",
            "x/1",
            "10.32.1.2/",
            "/12",
        ] {
            assert!(bad.parse::<LinkAddr>().is_err(), "{bad}");
        }
    }
}
