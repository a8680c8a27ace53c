//! Addresses for an attachment: from the router's IPAM over the local API (key
//! `<container id>:<ifname>`, with the `api` crate's client), or from the IPAM plugin
//! named in `ipam.type`.

use crate::config::NetConf;
use crate::delegate;
use crate::env::{is_attachment_key, Env};
use crate::error::{
    CniError, CniResult, ADDRESS_IN_USE, INTERNAL, INVALID_CONFIG, NOT_AVAILABLE, TRY_AGAIN,
};
use crate::types::{CniOutput, IpConfig, Route};
use api::{Client, ClientError, IpamList};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

/// How long ADD waits for the router (an allocation may wait for the ring).
pub const ADD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long DEL waits before giving up with a warning (GC reclaims later).
pub const DEL_TIMEOUT: Duration = Duration::from_secs(3);
/// CHECK, GC and STATUS.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer accepted from the router.
const MAX_RESPONSE: u64 = 4 << 20;

/// One invocation's IPAM.
pub struct Ipam<'a> {
    /// Configuration.
    pub conf: &'a NetConf,
    /// Environment.
    pub env: &'a Env,
    /// Raw stdin, passed on to a delegated plugin.
    pub raw: &'a [u8],
}

/// Maps a router API error to a CNI error.
pub fn api_error(what: &str, e: ClientError) -> CniError {
    let code = match &e {
        ClientError::NotRunning { .. } | ClientError::Io { .. } => TRY_AGAIN,
        ClientError::Status { code: 503, .. } => TRY_AGAIN,
        ClientError::Status { code: 400, .. } => INVALID_CONFIG,
        ClientError::Status { code: 409, .. } => ADDRESS_IN_USE,
        _ => INTERNAL,
    };
    CniError::new(code, what.to_string(), details(&e))
}

/// The error's text for a CNI caller, who may not know what "the router" is.
fn details(e: &ClientError) -> String {
    match e {
        ClientError::Status { code, message } => {
            format!("the weft router answered {code}: {message}")
        }
        other => other.to_string(),
    }
}

/// The run dir: `WEFT_RUN_DIR` or `/run/weft`.
pub fn run_dir() -> PathBuf {
    std::env::var_os("WEFT_RUN_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/weft"))
}

fn client(timeout: Duration) -> Client {
    Client::new(&run_dir())
        .timeout(timeout)
        .max_response(MAX_RESPONSE)
}

impl Ipam<'_> {
    /// Allocates (or claims) the attachment's addresses; an abbreviated result.
    pub fn add(&self) -> CniResult<CniOutput> {
        if let Some(plugin) = self.conf.delegate() {
            let out = delegate::exec(self.env, plugin, "ADD", self.raw)?;
            return CniOutput::from_slice(&out);
        }
        let c = client(ADD_TIMEOUT);
        let key = self.env.ipam_key();
        let ipam = self.conf.ipam.clone().unwrap_or_default();
        let mut addrs = Vec::new();
        let result = (|| {
            if self.conf.runtime_config.ips.is_empty() {
                let a = c
                    .ipam_allocate(&key, ipam.subnet.as_deref())
                    .map_err(|e| api_error("IPAM allocate failed", e))?;
                addrs.push(addr_of(&a)?);
            } else {
                for ip in &self.conf.runtime_config.ips {
                    let a = c
                        .ipam_claim(&key, ip)
                        .map_err(|e| api_error(&format!("IPAM claim of {ip} failed"), e))?;
                    addrs.push(addr_of(&a)?);
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            // Undo partial claims: release everything under this key.
            let _ = client(DEL_TIMEOUT).ipam_release(&key, None);
            return Err(e);
        }
        let mut routes = ipam.routes.clone();
        if let Some(gw) = &ipam.gateway {
            if !routes.iter().any(|r| r.dst == "0.0.0.0/0") {
                routes.insert(
                    0,
                    Route {
                        dst: "0.0.0.0/0".into(),
                        gw: Some(gw.clone()),
                    },
                );
            }
        }
        Ok(CniOutput {
            interfaces: Vec::new(),
            ips: addrs
                .into_iter()
                .map(|address| IpConfig {
                    address,
                    gateway: ipam.gateway.clone(),
                    interface: None,
                })
                .collect(),
            routes,
            dns: None,
        })
    }

    /// Releases the attachment's addresses. With the router's IPAM a failure is only a
    /// warning (GC reclaims later); a delegated plugin's failure is returned.
    pub fn del(&self) -> CniResult<()> {
        if let Some(plugin) = self.conf.delegate() {
            delegate::exec(self.env, plugin, "DEL", self.raw)?;
            return Ok(());
        }
        let key = self.env.ipam_key();
        if let Err(e) = client(DEL_TIMEOUT).ipam_release(&key, None) {
            let e = details(&e);
            eprintln!("weft-net: warning: could not release the address of {key}: {e}; GC will reclaim it");
        }
        Ok(())
    }

    /// Checks that the router holds `addrs` for this attachment.
    pub fn check(&self, addrs: &[String]) -> CniResult<()> {
        if let Some(plugin) = self.conf.delegate() {
            delegate::exec(self.env, plugin, "CHECK", self.raw)?;
            return Ok(());
        }
        let key = self.env.ipam_key();
        let v = client(QUERY_TIMEOUT)
            .ipam_list()
            .map_err(|e| api_error("IPAM query failed", e))?;
        // Addresses, not prefix lengths: a conflist's `ipam.subnet` gives the container
        // its own prefix, while the router holds the address with the range's.
        let held: HashSet<Option<std::net::IpAddr>> = allocations(&v)
            .into_iter()
            .filter(|(id, _)| *id == key)
            .map(|(_, a)| ip_of(&a))
            .collect();
        for a in addrs {
            if ip_of(a).is_none() || !held.contains(&ip_of(a)) {
                return Err(CniError::new(
                    INTERNAL,
                    format!("address {a} is not reserved for {key}"),
                    "the router's IPAM no longer holds this reservation; DEL and ADD the container again",
                ));
            }
        }
        Ok(())
    }

    /// Releases every reservation of the `<id>:<ifname>` form that is not listed as valid.
    pub fn gc(&self) -> CniResult<()> {
        if let Some(plugin) = self.conf.delegate() {
            delegate::exec(self.env, plugin, "GC", self.raw)?;
            return Ok(());
        }
        let valid: HashSet<String> = self
            .conf
            .gc_valid()
            .into_iter()
            .map(|a| format!("{}:{}", a.container_id, a.ifname))
            .collect();
        let c = client(QUERY_TIMEOUT);
        let v = c
            .ipam_list()
            .map_err(|e| api_error("IPAM query failed", e))?;
        let mut failed = Vec::new();
        let stale: HashSet<String> = allocations(&v)
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| is_attachment_key(id) && !valid.contains(id))
            .collect();
        for id in stale {
            if let Err(e) = c.ipam_release(&id, None) {
                eprintln!("weft-net: GC: releasing {id}: {}", details(&e));
                failed.push(id);
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                TRY_AGAIN,
                "GC could not release every stale address",
                failed.join(", "),
            ))
        }
    }

    /// Ready when the router answers `GET /ipam` with `status: ready` (code 50 otherwise).
    pub fn status(&self) -> CniResult<()> {
        if let Some(plugin) = self.conf.delegate() {
            delegate::exec(self.env, plugin, "STATUS", self.raw)?;
            return Ok(());
        }
        let v = client(QUERY_TIMEOUT).ipam_list().map_err(|e| {
            CniError::new(
                NOT_AVAILABLE,
                "the weft router's IPAM is not available",
                details(&e),
            )
        })?;
        match v.status.as_str() {
            "ready" => Ok(()),
            "" => Err(CniError::new(
                NOT_AVAILABLE,
                "the weft router's IPAM is not ready",
                "IPAM status is missing",
            )),
            other => Err(CniError::new(
                NOT_AVAILABLE,
                "the weft router's IPAM is not ready",
                format!("IPAM status is {other}"),
            )),
        }
    }
}

fn addr_of(a: &str) -> CniResult<String> {
    a.parse::<datapath::cidr::LinkAddr>()
        .map(|a| a.to_string())
        .map_err(|e| CniError::new(INTERNAL, "the router returned a bad address", e.to_string()))
}

/// `(id, addr)` pairs of a `GET /ipam` answer.
pub fn allocations(v: &IpamList) -> Vec<(String, String)> {
    v.allocations
        .iter()
        .map(|a| (a.id.clone(), a.addr.clone()))
        .collect()
}

/// The address of `A.B.C.D/len` (or of a bare address).
fn ip_of(cidr: &str) -> Option<std::net::IpAddr> {
    cidr.split_once('/').map_or(cidr, |(ip, _)| ip).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_compare_by_address() {
        assert_eq!(ip_of("10.40.1.1/24"), ip_of("10.40.1.1/16"));
        assert_eq!(ip_of("10.40.1.1"), Some("10.40.1.1".parse().unwrap()));
        assert_ne!(ip_of("10.40.1.1/24"), ip_of("10.40.1.2/24"));
        assert_eq!(ip_of("nope/24"), None);
    }

    #[test]
    fn allocations_and_error_codes() {
        let v: IpamList = serde_json::from_str(
            r#"{"status":"ready","allocations":[{"id":"a:eth0","addr":"10.40.0.2/16"}]}"#,
        )
        .unwrap();
        assert_eq!(
            allocations(&v),
            vec![("a:eth0".into(), "10.40.0.2/16".into())]
        );
        for (status, code) in [
            (503, TRY_AGAIN),
            (400, INVALID_CONFIG),
            (409, ADDRESS_IN_USE),
            (500, INTERNAL),
        ] {
            let message = "why".into();
            let e = api_error(
                "x",
                ClientError::Status {
                    code: status,
                    message,
                },
            );
            assert_eq!(e.code, code, "HTTP {status}");
        }
        assert!(addr_of("nope").is_err());
        assert_eq!(addr_of("10.40.0.2/16").unwrap(), "10.40.0.2/16");
    }
}
