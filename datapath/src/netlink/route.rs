//! Routes of the main table (`ip route`).

use super::{op, Error, Netlink};
use crate::cidr::LinkAddr;
use futures_util::TryStreamExt;
use rtnetlink::RouteMessageBuilder;
use std::net::IpAddr;

impl Netlink {
    /// Adds a route to `dest/prefix` out of link `name`, on link (no gateway)
    /// (`ip route add DEST/PREFIX dev NAME`).
    pub async fn add_link_route(&self, name: &str, dest: LinkAddr) -> Result<(), Error> {
        let index = self.index(name).await?;
        let what = || format!("route add {}/{} dev {name}", dest.ip, dest.prefix);
        let result = match dest.ip {
            IpAddr::V4(ip) => {
                let msg = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                    .destination_prefix(ip, dest.prefix)
                    .output_interface(index)
                    .build();
                self.handle.route().add(msg).execute().await
            }
            IpAddr::V6(ip) => {
                let msg = RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                    .destination_prefix(ip, dest.prefix)
                    .output_interface(index)
                    .build();
                self.handle.route().add(msg).execute().await
            }
        };
        result.map_err(op(what))
    }

    /// Adds a route to `dest/prefix` via gateway `gw` out of link `name`
    /// (`ip route add DEST/PREFIX via GW dev NAME`). The gateway must be of the same
    /// family as the destination.
    pub async fn add_gateway_route(
        &self,
        name: &str,
        dest: LinkAddr,
        gw: IpAddr,
    ) -> Result<(), Error> {
        let index = self.index(name).await?;
        let what = || format!("route add {dest} via {gw} dev {name}");
        let result = match (dest.ip, gw) {
            (IpAddr::V4(ip), IpAddr::V4(gw)) => {
                let msg = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                    .destination_prefix(ip, dest.prefix)
                    .gateway(gw)
                    .output_interface(index)
                    .build();
                self.handle.route().add(msg).execute().await
            }
            (IpAddr::V6(ip), IpAddr::V6(gw)) => {
                let msg = RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                    .destination_prefix(ip, dest.prefix)
                    .gateway(gw)
                    .output_interface(index)
                    .build();
                self.handle.route().add(msg).execute().await
            }
            _ => {
                return Err(op(what)(rtnetlink::Error::InvalidIp(
                    gw.to_string().into_bytes(),
                )))
            }
        };
        result.map_err(op(what))
    }

    /// The main table's routes of both families (`ip route show; ip -6 route show`):
    /// destination (with its prefix length) and gateway, if any.
    pub async fn routes(&self) -> Result<Vec<(LinkAddr, Option<IpAddr>)>, Error> {
        use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
        let v4 = RouteMessageBuilder::<std::net::Ipv4Addr>::new().build();
        let v6 = RouteMessageBuilder::<std::net::Ipv6Addr>::new().build();
        let mut out = Vec::new();
        for (query, unspecified) in [(v4, IpAddr::from([0u8; 4])), (v6, IpAddr::from([0u16; 8]))] {
            let mut stream = self.handle.route().get(query).execute();
            while let Some(msg) = stream
                .try_next()
                .await
                .map_err(op(|| "route show".to_string()))?
            {
                if msg.header.table != 254 && msg.header.table != 0 {
                    continue; // not the main table (local, ...)
                }
                let addr = |a: &RouteAddress| match a {
                    RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
                    RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
                    _ => None,
                };
                let mut dst = unspecified;
                let mut gw = None;
                for attr in &msg.attributes {
                    match attr {
                        RouteAttribute::Destination(a) => dst = addr(a).unwrap_or(dst),
                        RouteAttribute::Gateway(a) => gw = addr(a),
                        _ => {}
                    }
                }
                let prefix = msg.header.destination_prefix_length;
                out.push((LinkAddr { ip: dst, prefix }, gw));
            }
        }
        Ok(out)
    }
}
