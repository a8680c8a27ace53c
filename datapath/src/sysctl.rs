//! Per-interface sysctls of the interfaces Weft makes on the host.
//!
//! Router advertisements: the `weft` bridge and its host-side ports face the pods, and
//! a pod must not configure the host. With the kernel's default (`accept_ra = 1` while
//! the host does not forward IPv6), an RA sent by any pod onto the bridge would give the
//! host a default route and addresses chosen by that pod (the class of weave's
//! CVE-2020-11091). [`refuse_router_advertisements`] sets `accept_ra = 0`.
//!
//! The value is written under `/proc/sys/net/ipv6/conf/IFNAME/`, which the kernel
//! resolves in the network namespace of the thread that opens it: call it where the
//! interface lives.

use std::io;
use std::path::PathBuf;

fn conf_path(ifname: &str, key: &str) -> PathBuf {
    PathBuf::from("/proc/sys/net/ipv6/conf")
        .join(ifname)
        .join(key)
}

/// Sets `accept_ra = 0` on `ifname`. Without IPv6 in the kernel (or disabled on the
/// interface) there is nothing to refuse, and that is not an error.
pub fn refuse_router_advertisements(ifname: &str) -> io::Result<()> {
    if ifname.is_empty() || ifname.contains('/') || ifname == "." || ifname == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {ifname:?}"),
        ));
    }
    match std::fs::write(conf_path(ifname, "accept_ra"), "0\n") {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The `accept_ra` value of `ifname`, if it has one.
pub fn accept_ra(ifname: &str) -> Option<i32> {
    std::fs::read_to_string(conf_path(ifname, "accept_ra"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_leave_the_directory_are_refused() {
        for bad in ["", "a/b", "..", "."] {
            assert!(refuse_router_advertisements(bad).is_err(), "{bad:?}");
        }
        // An interface that does not exist: nothing to do.
        assert!(refuse_router_advertisements("weft-no-such-if0").is_ok());
        assert_eq!(accept_ra("weft-no-such-if0"), None);
    }
}
