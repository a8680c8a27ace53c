//! Addresses on links (`ip addr`).

use super::{op, Error, Netlink};
use crate::cidr::LinkAddr;
use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;

impl Netlink {
    /// Adds `ip/prefix` to link `name` (`ip addr add IP/PREFIX dev NAME`).
    pub async fn add_address(&self, name: &str, addr: LinkAddr) -> Result<(), Error> {
        let index = self.index(name).await?;
        self.handle
            .address()
            .add(index, addr.ip, addr.prefix)
            .execute()
            .await
            .map_err(op(|| {
                format!("addr add {}/{} dev {name}", addr.ip, addr.prefix)
            }))
    }

    /// The addresses on link `name` (`ip addr show dev NAME`).
    pub async fn addresses(&self, name: &str) -> Result<Vec<LinkAddr>, Error> {
        let index = self.index(name).await?;
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(op(|| format!("addr show dev {name}")))?
        {
            for attr in &msg.attributes {
                if let AddressAttribute::Address(ip) = attr {
                    out.push(LinkAddr {
                        ip: *ip,
                        prefix: msg.header.prefix_len,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Removes `ip/prefix` from link `name` (`ip addr del IP/PREFIX dev NAME`); true if
    /// it was there.
    pub async fn del_address(&self, name: &str, addr: LinkAddr) -> Result<bool, Error> {
        let index = self.index(name).await?;
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(addr.ip)
            .set_prefix_length_filter(addr.prefix)
            .execute();
        let mut found = false;
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(op(|| format!("addr show dev {name}")))?
        {
            self.handle
                .address()
                .del(msg)
                .execute()
                .await
                .map_err(op(|| {
                    format!("addr del {}/{} dev {name}", addr.ip, addr.prefix)
                }))?;
            found = true;
        }
        Ok(found)
    }
}
