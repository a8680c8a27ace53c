//! The kernel side of an attachment: a veth whose host end is a hairpinned port of the
//! bridge and whose other end is `CNI_IFNAME` in `CNI_NETNS`, with addresses, MTU, MAC
//! and routes. Namespace work runs on a dedicated thread (datapath's `netns::run_in`);
//! host-side netlink runs on a current-thread runtime. A failure removes the veth.

use crate::error::{CniError, CniResult, INTERNAL, INVALID_ENV, INVALID_NETNS, TRY_AGAIN};
use blake2::{Blake2s256, Digest};
use datapath::cidr::LinkAddr;
use datapath::netlink::{self, Netlink};
use datapath::netns;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Prefix of the host ends made by weft-net (`vethwn` + 8 hex digits).
pub const HOST_PREFIX: &str = "vethwn";

/// What to set up.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Bridge name.
    pub bridge: String,
    /// MTU; the bridge's when `None`.
    pub mtu: Option<u32>,
    /// Hairpin mode on the host port.
    pub hairpin: bool,
    /// MAC for the container interface.
    pub mac: Option<[u8; 6]>,
    /// Addresses for the container interface.
    pub addrs: Vec<LinkAddr>,
    /// Routes: destination and optional gateway.
    pub routes: Vec<(LinkAddr, Option<IpAddr>)>,
}

/// What was set up.
#[derive(Debug, Clone)]
pub struct Plumbed {
    /// Bridge MAC.
    pub bridge_mac: [u8; 6],
    /// Host veth name.
    pub host_name: String,
    /// Host veth MAC.
    pub host_mac: [u8; 6],
    /// Container interface MAC.
    pub mac: [u8; 6],
}

/// The host veth name for an attachment: stable, so that DEL finds it without state.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let d = Blake2s256::new()
        .chain_update(container_id.as_bytes())
        .chain_update([0u8])
        .chain_update(ifname.as_bytes())
        .finalize();
    let tag: String = d[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{HOST_PREFIX}{tag}")
}

fn nl_err(what: &str) -> impl Fn(netlink::Error) -> CniError + '_ {
    move |e| CniError::new(INTERNAL, what.to_string(), e.to_string())
}

fn ns_err(e: netns::NetnsError) -> CniError {
    CniError::new(INVALID_ENV, "cannot use CNI_NETNS", e.to_string())
}

/// Runs host-side netlink work on a current-thread runtime.
pub fn on_host<F, Fut, R>(f: F) -> CniResult<R>
where
    F: FnOnce(Netlink) -> Fut,
    Fut: std::future::Future<Output = Result<R, netlink::Error>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(INTERNAL, "cannot start a runtime", e.to_string()))?;
    rt.block_on(async {
        let nl = Netlink::new()?;
        f(nl).await
    })
    .map_err(nl_err("host netlink"))
}

/// Runs netlink work inside the namespace `ns`.
pub fn in_ns<F, Fut, R>(ns: &File, label: &str, f: F) -> CniResult<R>
where
    F: FnOnce(Netlink) -> Fut + Send,
    Fut: std::future::Future<Output = Result<R, netlink::Error>>,
    R: Send,
{
    netns::run_async_in(ns, Path::new(label), || async {
        let nl = Netlink::new()?;
        f(nl).await
    })
    .map_err(ns_err)?
    .map_err(nl_err("netlink in the container namespace"))
}

/// Opens the namespace file at `netns_path` (code 4 if it cannot be opened).
fn open_netns(netns_path: &str) -> CniResult<File> {
    File::open(netns_path).map_err(|e| {
        CniError::new(
            INVALID_ENV,
            "cannot open CNI_NETNS",
            format!("{netns_path}: {e}"),
        )
    })
}

/// Opens `CNI_NETNS`, refuses our own namespace (code 8) and an existing `ifname`.
pub fn preflight(netns_path: &str, ifname: &str) -> CniResult<File> {
    let ns = open_netns(netns_path)?;
    let own = std::fs::metadata("/proc/self/ns/net")
        .map_err(|e| CniError::new(INTERNAL, "cannot stat our own netns", e.to_string()))?;
    let theirs = ns
        .metadata()
        .map_err(|e| CniError::new(INVALID_ENV, "cannot stat CNI_NETNS", e.to_string()))?;
    if (own.dev(), own.ino()) == (theirs.dev(), theirs.ino()) {
        return Err(CniError::new(
            INVALID_NETNS,
            "CNI_NETNS is the plugin's own network namespace",
            format!("{netns_path}: refusing to move interfaces out of the host namespace"),
        ));
    }
    let name = ifname.to_string();
    let exists = in_ns(&ns, netns_path, |nl| async move {
        Ok(nl.link(&name).await?.is_some())
    })?;
    if exists {
        return Err(CniError::new(
            INTERNAL,
            format!("interface {ifname} already exists in the container"),
            format!("{netns_path} already has {ifname}; DEL it first or use another CNI_IFNAME"),
        ));
    }
    Ok(ns)
}

/// The bridge's MTU, MAC and addresses; code 11 if it does not exist (router not up).
pub fn bridge_info(bridge: &str) -> CniResult<(u32, [u8; 6], Vec<LinkAddr>)> {
    let name = bridge.to_string();
    let info = on_host(|nl| async move {
        if nl.link(&name).await?.is_none() {
            return Ok(None);
        }
        let mac = nl.mac(&name).await?.unwrap_or_default();
        Ok(Some((
            nl.mtu(&name).await?,
            mac,
            nl.addresses(&name).await?,
        )))
    })?;
    info.ok_or_else(|| {
        CniError::new(
            TRY_AGAIN,
            format!("bridge {bridge} not found"),
            "the weft router creates it: start the router (weft launch) and try again",
        )
    })
}

/// Creates and configures the veth; on failure removes it again.
pub fn plumb(
    ns: &File,
    netns_path: &str,
    ifname: &str,
    host_name: &str,
    plan: &Plan,
    mtu: u32,
) -> CniResult<Plumbed> {
    let temp = format!("vethwq{}", &host_name[HOST_PREFIX.len()..]);
    let (h, t, b, fd, ifn) = (
        host_name.to_string(),
        temp.clone(),
        plan.bridge.clone(),
        ns.as_raw_fd(),
        ifname.to_string(),
    );
    let hairpin = plan.hairpin;
    let host = on_host(|nl| async move {
        let bridge_index = nl.index(&b).await?;
        nl.add_veth(&h, &t).await?;
        let rest = async {
            nl.enslave(&h, bridge_index, mtu).await?;
            if hairpin {
                nl.set_hairpin(&h, true).await?;
            }
            nl.move_to_netns(&t, fd, &ifn).await?;
            let bridge_mac = nl.mac(&b).await?.unwrap_or_default();
            let host_mac = nl.mac(&h).await?.unwrap_or_default();
            Ok((bridge_mac, host_mac))
        };
        match rest.await {
            Ok(v) => Ok(v),
            Err(e) => {
                let _ = nl.delete_link(&h).await;
                Err(e)
            }
        }
    });
    let (bridge_mac, host_mac) = host?;
    let inside = configure_inside(ns, netns_path, ifname, plan, mtu);
    match inside {
        Ok(mac) => Ok(Plumbed {
            bridge_mac,
            host_name: host_name.to_string(),
            host_mac,
            mac,
        }),
        Err(e) => {
            let _ = remove_host_veth(host_name);
            let _ = remove_in_ns(netns_path, ifname);
            Err(e)
        }
    }
}

fn configure_inside(
    ns: &File,
    netns_path: &str,
    ifname: &str,
    plan: &Plan,
    mtu: u32,
) -> CniResult<[u8; 6]> {
    let plan = plan.clone();
    let ifname = ifname.to_string();
    in_ns(ns, netns_path, |nl| async move {
        nl.set_up("lo").await?;
        nl.set_mtu(&ifname, mtu).await?;
        if let Some(mac) = plan.mac {
            nl.set_mac(&ifname, mac).await?;
        }
        for a in &plan.addrs {
            nl.add_address(&ifname, *a).await?;
        }
        nl.set_up(&ifname).await?;
        for (dst, gw) in &plan.routes {
            let added = match gw {
                Some(gw) => nl.add_gateway_route(&ifname, *dst, *gw).await,
                None => nl.add_link_route(&ifname, *dst).await,
            };
            match added {
                // Already there, e.g. the default route of a first interface.
                Err(e) if e.is_exists() => {}
                other => other?,
            }
        }
        Ok(nl.mac(&ifname).await?.unwrap_or_default())
    })
}

/// Deletes the host veth if it exists (which also removes its peer).
pub fn remove_host_veth(host_name: &str) -> CniResult<bool> {
    let h = host_name.to_string();
    on_host(|nl| async move { nl.delete_link(&h).await })
}

/// Deletes `ifname` inside `netns_path` if both exist; Ok(false) if there was nothing.
pub fn remove_in_ns(netns_path: &str, ifname: &str) -> CniResult<bool> {
    let Ok(ns) = File::open(netns_path) else {
        return Ok(false);
    };
    let name = ifname.to_string();
    in_ns(
        &ns,
        netns_path,
        |nl| async move { nl.delete_link(&name).await },
    )
}

/// Whether host veth `host_name` exists and is a port of `bridge`.
pub fn host_port_ok(host_name: &str, bridge: &str) -> CniResult<bool> {
    let (h, b) = (host_name.to_string(), bridge.to_string());
    on_host(|nl| async move { Ok(nl.ports(&b).await?.contains(&h)) })
}

/// The main-table routes in `netns_path` (destination, gateway).
pub fn routes(netns_path: &str) -> CniResult<Vec<(LinkAddr, Option<std::net::IpAddr>)>> {
    let ns = open_netns(netns_path)?;
    in_ns(&ns, netns_path, |nl| async move { nl.routes().await })
}

/// The MAC and addresses of `ifname` in `netns_path`, `None` if it is missing.
pub fn inspect(netns_path: &str, ifname: &str) -> CniResult<Option<([u8; 6], Vec<LinkAddr>)>> {
    let ns = open_netns(netns_path)?;
    let name = ifname.to_string();
    in_ns(&ns, netns_path, |nl| async move {
        if nl.link(&name).await?.is_none() {
            return Ok(None);
        }
        Ok(Some((
            nl.mac(&name).await?.unwrap_or_default(),
            nl.addresses(&name).await?,
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_stable_and_short() {
        let a = host_veth_name("abc", "eth0");
        assert_eq!(a, host_veth_name("abc", "eth0"));
        assert_ne!(a, host_veth_name("abc", "eth1"));
        assert_ne!(host_veth_name("ab", "ceth0"), host_veth_name("abc", "eth0"));
        assert!(a.len() <= 15 && a.starts_with(HOST_PREFIX));
    }
}
