//! The host's own side of the overlay: `weft ps`, `weft expose` and `weft hide`.
//!
//! Exposing gives the host an address on the overlay by adding it to the `weft` bridge,
//! as `weave expose` does; the kernel adds the route to the overlay with it. The
//! bridge's addresses *are* the record of what is exposed (nothing else is stored), so
//! they survive a router restart as the bridge does, and `hide` with no address removes
//! all of them (the kernel's own link-local addresses excepted).
//!
//! Every function here blocks (netlink on its own current-thread runtime, namespace
//! work on its own thread): call them with `spawn_blocking`.

use crate::attachments::{Attachments, Entry};
use crate::config;
use datapath::attach::{self, HOST_VETH_PREFIX};
use datapath::cidr::LinkAddr;
use datapath::netlink::Netlink;
use datapath::netns::NetnsRef;
use std::future::Future;

/// The `ps` id of the host's own line, as weave's `weave:expose`.
pub const EXPOSE_ID: &str = "weft:expose";

/// Runs `f` with a netlink connection in the current namespace, on a current-thread
/// runtime of its own. Errors are turned into the user's message.
pub fn with_netlink<T, F, Fut>(f: F) -> Result<T, String>
where
    F: FnOnce(Netlink) -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime for netlink: {e}"))?;
    runtime.block_on(async {
        let nl = Netlink::new().map_err(|e| e.to_string())?;
        f(nl).await
    })
}

/// One `ps` line: `ID MAC CIDR...` (weave's layout); link-local addresses left out.
pub fn ps_line(id: &str, mac: &[u8; 6], addrs: &[LinkAddr]) -> String {
    let mut line = format!("{id} {}", crate::api::format_mac(mac));
    for a in addrs.iter().filter(|a| !a.is_link_local()) {
        line.push(' ');
        line.push_str(&a.to_string());
    }
    line
}

/// The `weft ps` text: the host's line if anything is exposed, then one line per
/// attached interface. Entries whose veth left the bridge are forgotten on the way.
pub fn ps(registry: &Attachments) -> Result<String, String> {
    // Read before the scan, so that only entries the scan could see are pruned.
    let entries = registry.list();
    let (bridge, ports) = with_netlink(|nl| async move {
        let ports = nl.ports(config::BRIDGE).await.map_err(|e| e.to_string())?;
        if !bridge_exists(&nl).await? {
            return Ok((None, ports));
        }
        let mac = nl.mac(config::BRIDGE).await.map_err(|e| e.to_string())?;
        let addrs = exposed(&nl).await?;
        Ok((Some((mac.unwrap_or_default(), addrs)), ports))
    })?;
    if let Err(e) = registry.prune(&entries, &ports) {
        tracing::warn!("cannot update the attachments file: {e}");
    }
    let mut out = String::new();
    if let Some((mac, addrs)) = bridge.filter(|(_, a)| !a.is_empty()) {
        out.push_str(&ps_line(EXPOSE_ID, &mac, &addrs));
        out.push('\n');
    }
    for (id, mac, addrs) in live(&entries, &ports) {
        out.push_str(&ps_line(&id, &mac, &addrs));
        out.push('\n');
    }
    Ok(out)
}

/// The registry's entries whose veth is still a port of the bridge, as found live in
/// their namespaces: (id, MAC, addresses).
fn live(entries: &[Entry], ports: &[String]) -> Vec<(String, [u8; 6], Vec<LinkAddr>)> {
    let mut found = Vec::new();
    for entry in entries.iter().filter(|e| ports.contains(&e.host_ifname)) {
        let Ok(netns) = entry.id.parse::<NetnsRef>() else {
            continue;
        };
        // A namespace that cannot be opened any more, or whose name now points to
        // another namespace (other veth name), is not listed.
        match attach::inspect(&netns, &entry.ifname) {
            Ok(Some(a)) if a.host_ifname == entry.host_ifname => {
                found.push((entry.id.clone(), a.mac, a.addrs));
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(id = %entry.id, "ps: {e}"),
        }
    }
    found
}

/// What is attached now (as `ps` lists it, the exposed host under [`EXPOSE_ID`]):
/// (id, addresses), link-local ones left out.
pub fn attached(registry: &Attachments) -> Result<Vec<(String, Vec<LinkAddr>)>, String> {
    let entries = registry.list();
    let (exposed, ports) = with_netlink(|nl| async move {
        let ports = nl.ports(config::BRIDGE).await.map_err(|e| e.to_string())?;
        let addrs = if bridge_exists(&nl).await? {
            exposed(&nl).await?
        } else {
            Vec::new()
        };
        Ok((addrs, ports))
    })?;
    let mut all = vec![(EXPOSE_ID.to_string(), exposed)];
    all.extend(live(&entries, &ports).into_iter().map(|(id, _, a)| (id, a)));
    all.retain(|(_, a)| !a.is_empty());
    for (_, addrs) in &mut all {
        addrs.retain(|a| !a.is_link_local());
    }
    Ok(all)
}

/// The bridge's addresses that are exposed (all but link-local ones).
/// Whether the `weft` bridge exists in this namespace.
async fn bridge_exists(nl: &Netlink) -> Result<bool, String> {
    let link = nl.link(config::BRIDGE).await.map_err(|e| e.to_string())?;
    Ok(link.is_some())
}

pub(crate) async fn exposed(nl: &Netlink) -> Result<Vec<LinkAddr>, String> {
    let addrs = nl
        .addresses(config::BRIDGE)
        .await
        .map_err(|e| e.to_string())?;
    Ok(addrs.into_iter().filter(|a| !a.is_link_local()).collect())
}

/// Adds each of `cidrs` to the bridge unless it is there already; returns them.
pub fn expose(cidrs: &[LinkAddr]) -> Result<Vec<LinkAddr>, String> {
    let cidrs = cidrs.to_vec();
    with_netlink(|nl| async move {
        if !bridge_exists(&nl).await? {
            return Err(format!(
                "no bridge {:?} on this host (is the router running in this namespace?)",
                config::BRIDGE
            ));
        }
        let existing = exposed(&nl).await?;
        for addr in &cidrs {
            if !existing.contains(addr) {
                nl.add_address(config::BRIDGE, *addr)
                    .await
                    .map_err(|e| format!("expose {addr}: {e}"))?;
            }
        }
        Ok(cidrs)
    })
}

/// Removes `cidrs` from the bridge, or every exposed address when `cidrs` is empty;
/// returns those that were there. Hiding what is not exposed is not an error.
///
/// Deleting an IPv4 primary address makes the kernel delete the secondaries of its
/// subnet too (unless `promote_secondaries` is set); those that were not to be hidden
/// are added back.
pub fn hide(cidrs: &[LinkAddr]) -> Result<Vec<LinkAddr>, String> {
    let cidrs = cidrs.to_vec();
    with_netlink(|nl| async move {
        if !bridge_exists(&nl).await? {
            return Ok(Vec::new());
        }
        let before = exposed(&nl).await?;
        let targets: Vec<LinkAddr> = if cidrs.is_empty() {
            before.clone()
        } else {
            before
                .iter()
                .filter(|a| cidrs.contains(a))
                .copied()
                .collect()
        };
        for addr in &targets {
            nl.del_address(config::BRIDGE, *addr)
                .await
                .map_err(|e| format!("hide {addr}: {e}"))?;
        }
        let after = exposed(&nl).await?;
        for addr in before.iter().filter(|a| !targets.contains(a)) {
            if !after.contains(addr) {
                nl.add_address(config::BRIDGE, *addr)
                    .await
                    .map_err(|e| format!("keep {addr} exposed: {e}"))?;
            }
        }
        Ok(targets)
    })
}

/// At startup: drops the entries whose veth is no longer on the bridge and logs the
/// `vethwe*` ports that have no entry.
pub async fn reconcile(nl: &Netlink, registry: &Attachments) -> Result<(), String> {
    let ports = nl.ports(config::BRIDGE).await.map_err(|e| e.to_string())?;
    for port in registry.unknown_ports(&ports, HOST_VETH_PREFIX) {
        tracing::warn!(port = %port, "bridge port with no attachment record; `weft ps` will not list it");
    }
    registry
        .retain_ports(&ports)
        .map_err(|e| format!("cannot update the attachments file: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_lines_follow_weave() {
        let addrs: Vec<LinkAddr> = ["10.40.1.2/16", "fe80::1/64", "fd00:40::2/64"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let mac = [0x7a, 0xc4, 0x8b, 0xa1, 0xe6, 0x0d];
        assert_eq!(
            ps_line("pod1", &mac, &addrs),
            "pod1 7a:c4:8b:a1:e6:0d 10.40.1.2/16 fd00:40::2/64"
        );
        assert_eq!(
            ps_line(EXPOSE_ID, &mac, &[]),
            "weft:expose 7a:c4:8b:a1:e6:0d"
        );
    }
}
