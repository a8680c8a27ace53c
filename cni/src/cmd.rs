//! The verbs of `weft-net` (interface plugin) and `weft-ipam` (IPAM-only plugin).

use crate::config::{format_mac, parse_mac, NetConf};
use crate::env::Env;
use crate::error::{CniError, CniResult, INTERNAL, INVALID_CONFIG};
use crate::ipam::Ipam;
use crate::types::{CniOutput, Interface, IpConfig, Route};
use crate::veth::{self, Plan};
use datapath::cidr::LinkAddr;
use std::net::IpAddr;

fn cidr(s: &str, what: &str) -> CniResult<LinkAddr> {
    s.parse()
        .map_err(|e| CniError::new(INVALID_CONFIG, format!("bad {what}"), format!("{e}")))
}

fn ip(s: &str, what: &str) -> CniResult<IpAddr> {
    s.parse().map_err(|_| {
        CniError::new(
            INVALID_CONFIG,
            format!("bad {what}"),
            format!("{s:?} is not an IP address"),
        )
    })
}

fn network(a: LinkAddr) -> LinkAddr {
    let ip = match a.ip {
        IpAddr::V4(v) => {
            let mask = if a.prefix == 0 {
                0
            } else {
                u32::MAX << (32 - a.prefix)
            };
            IpAddr::V4((u32::from(v) & mask).into())
        }
        IpAddr::V6(v) => {
            let mask = if a.prefix == 0 {
                0
            } else {
                u128::MAX << (128 - a.prefix)
            };
            IpAddr::V6((u128::from(v) & mask).into())
        }
    };
    LinkAddr {
        ip,
        prefix: a.prefix,
    }
}

/// Where the container's default gateway is: IPAM's, or the bridge's address in the
/// same subnet.
fn gateway(
    addr: LinkAddr,
    ipam_gw: Option<&str>,
    bridge_addrs: &[LinkAddr],
) -> CniResult<Option<IpAddr>> {
    if let Some(g) = ipam_gw {
        return ip(g, "gateway").map(Some);
    }
    Ok(bridge_addrs
        .iter()
        .find(|b| {
            b.ip.is_ipv4() == addr.ip.is_ipv4()
                && network(LinkAddr {
                    ip: b.ip,
                    prefix: addr.prefix,
                }) == network(addr)
        })
        .map(|b| b.ip))
}

/// Adds a default route via `gw` for its address family, first, unless the routes
/// already have one for that family (as the reference `bridge` plugin does with
/// `isDefaultGateway`, for IPv4 and IPv6 alike).
fn add_default_route(routes: &mut Vec<Route>, gw: std::net::IpAddr) {
    let dst = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
    if routes.iter().any(|r| r.dst == dst) {
        return;
    }
    let at = routes
        .iter()
        .position(|r| r.dst != "0.0.0.0/0")
        .unwrap_or(routes.len());
    routes.insert(
        at,
        Route {
            dst: dst.into(),
            gw: Some(gw.to_string()),
        },
    );
}

/// weft-net ADD.
pub fn add(conf: &NetConf, env: &Env, raw: &[u8]) -> CniResult<CniOutput> {
    let ns = veth::preflight(&env.netns, &env.ifname)?;
    let (bridge_mtu, _, bridge_addrs) = veth::bridge_info(conf.bridge())?;
    let ipam = Ipam { conf, env, raw };
    let got = ipam.add()?;
    let built = (|| {
        if got.ips.is_empty() {
            return Err(CniError::new(
                INTERNAL,
                "IPAM returned no address",
                "check the IPAM configuration",
            ));
        }
        let mut addrs = Vec::new();
        let mut ips = Vec::new();
        let mut routes: Vec<Route> = got.routes.clone();
        let mut plan_routes = Vec::new();
        for c in &got.ips {
            let a = cidr(&c.address, "address from IPAM")?;
            let gw = gateway(a, c.gateway.as_deref(), &bridge_addrs)?;
            if let Some(g) = gw {
                add_default_route(&mut routes, g);
            }
            addrs.push(a);
            ips.push(IpConfig {
                address: a.to_string(),
                gateway: gw.map(|g| g.to_string()),
                interface: None,
            });
        }
        for r in &routes {
            let dst = cidr(&r.dst, "route")?;
            if addrs
                .iter()
                .any(|a| network(*a) == network(dst) && a.prefix == dst.prefix)
            {
                continue; // the kernel's own prefix route
            }
            // A route without `gw` stays on-link (the overlay is one L2 segment), but a
            // default route without `gw` goes via its family's gateway (the exposed
            // host), as the reference plugins' ipam.ConfigureIface does: on-link, it
            // would ARP for the whole world.
            let family_gw = ips
                .iter()
                .filter_map(|c| c.gateway.as_deref())
                .filter_map(|g| g.parse::<IpAddr>().ok())
                .find(|g| dst.prefix == 0 && g.is_ipv4() == dst.ip.is_ipv4());
            let gw =
                r.gw.as_deref()
                    .map(|g| ip(g, "route gateway"))
                    .transpose()?
                    .or(family_gw);
            plan_routes.push((network(dst), gw));
        }
        let mac = conf.runtime_config.mac.as_deref().and_then(parse_mac);
        let plan = Plan {
            bridge: conf.bridge().to_string(),
            mtu: conf.mtu,
            hairpin: conf.hairpin_mode.unwrap_or(true),
            mac,
            addrs,
            routes: plan_routes,
        };
        let host_name = veth::host_veth_name(&env.container_id, &env.ifname);
        let done = veth::plumb(
            &ns,
            &env.netns,
            &env.ifname,
            &host_name,
            &plan,
            conf.mtu.unwrap_or(bridge_mtu),
        )?;
        let mut out = prev_result(conf)?.unwrap_or_default();
        let base = out.interfaces.len();
        out.interfaces.push(Interface {
            name: conf.bridge().to_string(),
            mac: format_mac(done.bridge_mac),
            sandbox: String::new(),
        });
        out.interfaces.push(Interface {
            name: done.host_name,
            mac: format_mac(done.host_mac),
            sandbox: String::new(),
        });
        out.interfaces.push(Interface {
            name: env.ifname.clone(),
            mac: format_mac(done.mac),
            sandbox: env.netns.clone(),
        });
        out.ips.extend(ips.into_iter().map(|i| IpConfig {
            interface: Some(base + 2),
            ..i
        }));
        out.routes.extend(routes);
        if out.dns.is_none() {
            out.dns = conf.dns.clone().or(got.dns.clone());
        }
        Ok(out)
    })();
    if built.is_err() {
        if let Err(e) = ipam.del() {
            eprintln!("weft-net: rollback: releasing the address failed: {e}");
        }
    }
    built
}

/// weft-net DEL: best effort, succeeds when there is nothing left to do.
pub fn del(conf: &NetConf, env: &Env, raw: &[u8]) -> CniResult<()> {
    if !env.netns.is_empty() {
        if let Err(e) = veth::remove_in_ns(&env.netns, &env.ifname) {
            eprintln!(
                "weft-net: warning: removing {} in {}: {e}",
                env.ifname, env.netns
            );
        }
    }
    let host = veth::host_veth_name(&env.container_id, &env.ifname);
    if let Err(e) = veth::remove_host_veth(&host) {
        eprintln!("weft-net: warning: removing host veth {host}: {e}");
    }
    Ipam { conf, env, raw }.del()
}

/// The configuration's `prevResult`, decoded, if it has one.
pub fn prev_result(conf: &NetConf) -> CniResult<Option<CniOutput>> {
    match &conf.prev_result {
        Some(v) if !v.is_null() => CniOutput::from_value(v).map(Some),
        _ => Ok(None),
    }
}

fn prev(conf: &NetConf) -> CniResult<CniOutput> {
    match prev_result(conf)? {
        Some(out) => Ok(out),
        None => Err(CniError::new(
            INVALID_CONFIG,
            "CHECK needs prevResult",
            "the runtime must pass the ADD result as prevResult",
        )),
    }
}

/// weft-net CHECK: the interface, its MAC and addresses, and the reservation.
pub fn check(conf: &NetConf, env: &Env, raw: &[u8]) -> CniResult<()> {
    let p = prev(conf)?;
    let idx = p
        .interfaces
        .iter()
        .position(|i| i.name == env.ifname && i.sandbox == env.netns)
        .ok_or_else(|| {
            CniError::new(
                INTERNAL,
                format!(
                    "prevResult lists no interface {} in {}",
                    env.ifname, env.netns
                ),
                "",
            )
        })?;
    let (mac, have) = veth::inspect(&env.netns, &env.ifname)?.ok_or_else(|| {
        CniError::new(
            INTERNAL,
            format!("interface {} is missing", env.ifname),
            format!("{} has no {}", env.netns, env.ifname),
        )
    })?;
    let want_mac = &p.interfaces[idx].mac;
    if !want_mac.is_empty() && parse_mac(want_mac) != Some(mac) {
        return Err(CniError::new(
            INTERNAL,
            format!(
                "interface {} has MAC {} instead of {want_mac}",
                env.ifname,
                format_mac(mac)
            ),
            "",
        ));
    }
    let host = veth::host_veth_name(&env.container_id, &env.ifname);
    if !veth::host_port_ok(&host, conf.bridge())? {
        return Err(CniError::new(
            INTERNAL,
            format!(
                "host veth {host} is missing or not a port of bridge {}",
                conf.bridge()
            ),
            "DEL and ADD the container again",
        ));
    }
    let mut addrs = Vec::new();
    for i in p.ips.iter().filter(|i| i.interface == Some(idx)) {
        let a = cidr(&i.address, "prevResult address")?;
        if !have.contains(&a) {
            return Err(CniError::new(
                INTERNAL,
                format!("address {a} is missing from {}", env.ifname),
                format!("in {}", env.netns),
            ));
        }
        addrs.push(a.to_string());
    }
    // Every route of the result is in the container (as the reference plugins check);
    // a route a chained plugin put on another interface counts too.
    let have_routes = veth::routes(&env.netns)?;
    for r in &p.routes {
        let dst = network(cidr(&r.dst, "prevResult route")?);
        let gw =
            r.gw.as_deref()
                .map(|g| ip(g, "route gateway"))
                .transpose()?;
        let present = have_routes.iter().any(|(d, g)| {
            network(*d) == dst && d.prefix == dst.prefix && (gw.is_none() || *g == gw)
        });
        if !present {
            let via = gw.map(|g| format!(" via {g}")).unwrap_or_default();
            return Err(CniError::new(
                INTERNAL,
                format!("route {}{via} is missing", r.dst),
                format!("in {}", env.netns),
            ));
        }
    }
    Ipam { conf, env, raw }.check(&addrs)
}

/// weft-ipam ADD: an abbreviated result (no interfaces).
pub fn ipam_add(conf: &NetConf, env: &Env, raw: &[u8]) -> CniResult<CniOutput> {
    let mut out = Ipam { conf, env, raw }.add()?;
    out.dns = conf.dns.clone();
    Ok(out)
}

/// weft-ipam CHECK: the reservation of every address in prevResult.
pub fn ipam_check(conf: &NetConf, env: &Env, raw: &[u8]) -> CniResult<()> {
    let p = prev(conf)?;
    let addrs: Vec<String> = p.ips.iter().map(|i| i.address.clone()).collect();
    Ipam { conf, env, raw }.check(&addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_for_both_families_unless_given() {
        let r = |dst: &str, gw: Option<&str>| Route {
            dst: dst.into(),
            gw: gw.map(Into::into),
        };
        let mut routes = vec![r("10.32.0.0/12", None)];
        add_default_route(&mut routes, "10.40.0.1".parse().unwrap());
        add_default_route(&mut routes, "fd00:40::1".parse().unwrap());
        assert_eq!(
            routes,
            vec![
                r("0.0.0.0/0", Some("10.40.0.1")),
                r("::/0", Some("fd00:40::1")),
                r("10.32.0.0/12", None),
            ]
        );
        // Given ones are kept, and not doubled.
        let mut given = vec![r("::/0", Some("fd00:40::9"))];
        add_default_route(&mut given, "fd00:40::1".parse().unwrap());
        assert_eq!(given, vec![r("::/0", Some("fd00:40::9"))]);
    }

    #[test]
    fn gateway_defaults_to_the_bridge_address_in_the_subnet() {
        let a: LinkAddr = "10.40.0.5/16".parse().unwrap();
        let br = [
            "10.32.0.1/12".parse().unwrap(),
            "10.40.0.1/16".parse().unwrap(),
        ];
        assert_eq!(
            gateway(a, None, &br).unwrap(),
            Some("10.40.0.1".parse().unwrap())
        );
        assert_eq!(
            gateway(a, Some("10.40.0.254"), &br).unwrap(),
            Some("10.40.0.254".parse().unwrap())
        );
        assert_eq!(gateway(a, None, &br[..1]).unwrap(), None);
        assert_eq!(
            network("10.40.3.4/16".parse().unwrap()).to_string(),
            "10.40.0.0/16"
        );
        assert_eq!(
            network("0.0.0.0/0".parse().unwrap()).to_string(),
            "0.0.0.0/0"
        );
    }
}
