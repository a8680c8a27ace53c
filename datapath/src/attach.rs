//! Attaching a network namespace (a container) to the `weft` bridge, and detaching it.
//!
//! `attach` creates a veth pair, plugs the host end into the bridge and moves the other
//! end into the namespace under the requested name (`ethwe0` by default), where it gets
//! its addresses, the overlay MTU and a route for the overlay. If any step fails, the
//! steps already done are undone: no veth is left behind. Attaching again with more
//! addresses adds them to the existing interface, as `weave attach` does.

use crate::cidr::LinkAddr;
use crate::netlink::{self, Netlink};
use crate::netns::{self, NetnsError, NetnsRef};
use blake2::{Blake2s256, Digest};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

/// Default interface name inside the namespace.
pub const DEFAULT_IFNAME: &str = "ethwe0";

/// Prefix of the host ends of the veths that `attach` creates (`vethwe<hash>`).
pub const HOST_VETH_PREFIX: &str = "vethwe";

/// What to attach.
#[derive(Debug, Clone)]
pub struct AttachRequest {
    /// The namespace.
    pub netns: NetnsRef,
    /// Interface name inside it.
    pub ifname: String,
    /// Addresses with their prefix lengths (e.g. 10.32.1.2/12).
    pub addrs: Vec<LinkAddr>,
    /// Extra on-link routes inside the namespace (e.g. the whole overlay range).
    pub routes: Vec<LinkAddr>,
    /// Overlay MTU.
    pub mtu: u32,
}

/// What was attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Host end of the veth (a bridge port).
    pub host_ifname: String,
    /// MAC address of the interface inside the namespace.
    pub mac: [u8; 6],
    /// Addresses now on that interface.
    pub addrs: Vec<LinkAddr>,
}

/// Why attaching or detaching failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// A namespace problem.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A netlink operation failed.
    #[error(transparent)]
    Netlink(#[from] netlink::Error),
    /// The interface name is not valid.
    #[error("invalid interface name {0:?}: 1 to 15 characters, no '/', ':' or spaces")]
    BadIfname(String),
    /// Nothing to detach.
    #[error("namespace {0} has no interface {1}")]
    NotAttached(String, String),
}

/// Checks an interface name as the kernel and CNI do.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

/// Host-side names for a namespace's interface: stable for the same namespace and
/// interface name, so that attach is idempotent and detach finds them.
fn veth_names(ns: &std::fs::File, ifname: &str) -> std::io::Result<(String, String)> {
    let meta = ns.metadata()?;
    let mut h = Blake2s256::new();
    h.update(meta.dev().to_le_bytes());
    h.update(meta.ino().to_le_bytes());
    h.update(ifname.as_bytes());
    let d = h.finalize();
    let tag: String = d[..4].iter().map(|b| format!("{b:02x}")).collect();
    Ok((format!("{HOST_VETH_PREFIX}{tag}"), format!("vethwp{tag}")))
}

/// Attaches `req.netns` to `bridge`; `host` is a netlink connection in the host namespace.
pub async fn attach(
    host: &Netlink,
    bridge: &str,
    req: &AttachRequest,
) -> Result<Attachment, AttachError> {
    if !valid_ifname(&req.ifname) {
        return Err(AttachError::BadIfname(req.ifname.clone()));
    }
    let ns = req.netns.open()?;
    let label = req.netns.path();
    let (host_name, temp_name) =
        veth_names(&ns, &req.ifname).map_err(|source| NetnsError::Open {
            path: label.clone(),
            source,
        })?;
    let bridge_index = host.index(bridge).await?;
    let created = host.link(&host_name).await?.is_none();
    if created {
        host.add_veth(&host_name, &temp_name).await?;
        let plumbed = async {
            host.enslave(&host_name, bridge_index, req.mtu).await?;
            host.move_to_netns(&temp_name, ns.as_raw_fd(), &req.ifname)
                .await
        };
        if let Err(e) = plumbed.await {
            let _ = host.delete_link(&host_name).await;
            return Err(e.into());
        }
    }
    let inside = netns::run_async_in(&ns, &label, || configure_inside(req))?;
    match inside {
        Ok((mac, addrs)) => Ok(Attachment {
            host_ifname: host_name,
            mac,
            addrs,
        }),
        Err(e) => {
            if created {
                let _ = host.delete_link(&host_name).await;
            }
            Err(e.into())
        }
    }
}

/// Inside the namespace: MTU, addresses, up, routes; returns the MAC and addresses.
async fn configure_inside(req: &AttachRequest) -> Result<([u8; 6], Vec<LinkAddr>), netlink::Error> {
    let nl = Netlink::new()?;
    nl.set_up("lo").await?;
    nl.set_mtu(&req.ifname, req.mtu).await?;
    let existing = nl.addresses(&req.ifname).await?;
    for addr in &req.addrs {
        if !existing.contains(addr) {
            nl.add_address(&req.ifname, *addr).await?;
        }
    }
    nl.set_up(&req.ifname).await?;
    for route in &req.routes {
        match nl.add_link_route(&req.ifname, *route).await {
            Ok(()) => {}
            // Already there (attached before, or covered by an address's own route).
            Err(netlink::Error::Netlink(e)) if is_exists(&e.source) => {}
            Err(e) => return Err(e),
        }
    }
    let mac = nl.mac(&req.ifname).await?.unwrap_or_default();
    Ok((mac, nl.addresses(&req.ifname).await?))
}

fn is_exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -17)
}

/// Removes `addrs` from the namespace's interface, or the whole interface when `addrs`
/// is empty or no address is left. Returns the addresses that remain.
pub fn detach(
    netns: &NetnsRef,
    ifname: &str,
    addrs: &[LinkAddr],
) -> Result<Vec<LinkAddr>, AttachError> {
    let ns = netns.open()?;
    let label = netns.path();
    let result = netns::run_async_in(&ns, &label, || async {
        let nl = Netlink::new()?;
        if nl.link(ifname).await?.is_none() {
            return Ok(None);
        }
        for addr in addrs {
            nl.del_address(ifname, *addr).await?;
        }
        let left = nl.addresses(ifname).await?;
        let global: Vec<LinkAddr> = left.into_iter().filter(|a| !a.is_link_local()).collect();
        if addrs.is_empty() || global.is_empty() {
            nl.delete_link(ifname).await?;
            return Ok(Some(Vec::new()));
        }
        Ok::<_, netlink::Error>(Some(global))
    })??;
    result.ok_or_else(|| AttachError::NotAttached(netns.to_string(), ifname.to_string()))
}

/// What is attached now as `ifname` in `netns`: its host veth name (as `attach`
/// derives it), MAC and addresses; `None` if the namespace has no such interface.
pub fn inspect(netns: &NetnsRef, ifname: &str) -> Result<Option<Attachment>, AttachError> {
    let ns = netns.open()?;
    let label = netns.path();
    let (host_ifname, _) = veth_names(&ns, ifname).map_err(|source| NetnsError::Open {
        path: label.clone(),
        source,
    })?;
    let inside = netns::run_async_in(&ns, &label, || async {
        let nl = Netlink::new()?;
        if nl.link(ifname).await?.is_none() {
            return Ok(None);
        }
        let mac = nl.mac(ifname).await?.unwrap_or_default();
        Ok::<_, netlink::Error>(Some((mac, nl.addresses(ifname).await?)))
    })??;
    Ok(inside.map(|(mac, addrs)| Attachment {
        host_ifname,
        mac,
        addrs,
    }))
}

/// Deletes every veth that `attach` plugged into `bridge` (ports named `vethwe*`),
/// which also removes their ends inside the namespaces. Returns the names deleted.
pub async fn remove_host_veths(host: &Netlink, bridge: &str) -> Result<Vec<String>, AttachError> {
    let mut deleted = Vec::new();
    for port in host.ports(bridge).await? {
        if port.starts_with(HOST_VETH_PREFIX) && host.delete_link(&port).await? {
            deleted.push(port);
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_kernel_rules() {
        for ok in ["ethwe0", "eth0", "a", "fifteen-chars15"] {
            assert!(valid_ifname(ok), "{ok}");
        }
        for bad in ["", ".", "..", "eth0/x", "a b", "sixteen-chars-16", "a:b"] {
            assert!(!valid_ifname(bad), "{bad}");
        }
    }
}
