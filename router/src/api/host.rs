//! The API's host endpoints: `POST /attach`, `/detach`, `/expose`, `/hide` and
//! `GET /ps`.
//!
//! Their kernel work (netlink, entering namespaces) blocks, so it runs with
//! `spawn_blocking`, never on the async workers. Attach and detach keep the
//! [`Attachments`](crate::attachments::Attachments) registry up to date for `ps`.

use super::{format_mac, Api};
use crate::attachments::Entry;
use crate::config;
use crate::host_net::{self, with_netlink};
use crate::http::{Request, Response};
use ::api::{AttachAnswer, AttachBody, CidrsBody};
use datapath::attach::{self, AttachError, AttachRequest};
use datapath::cidr::LinkAddr;
use datapath::netns::NetnsRef;
use tracing::warn;

/// Runs blocking `f` off the async workers; a panic becomes an error message.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
}

fn persist_warning(e: std::io::Error) {
    warn!("cannot update the attachments file (`weft ps` may miss this after a restart): {e}");
}

impl Api {
    pub(super) async fn attach(&self, req: &Request) -> Response {
        let (netns, ifname, addrs) = match parse_attach(req, true) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let request = AttachRequest {
            netns,
            ifname,
            addrs,
            routes: Vec::new(),
            mtu: *self.mtu.borrow(),
        };
        let registry = self.attachments.clone();
        let result = blocking(move || {
            let a = with_netlink(|nl| async move {
                attach::attach(&nl, config::BRIDGE, &request)
                    .await
                    .map(|a| (a, request))
                    .map_err(|e| format!("attach failed: {e}"))
            });
            let (a, request) = a?;
            let entry = Entry {
                id: request.netns.to_string(),
                ifname: request.ifname.clone(),
                host_ifname: a.host_ifname.clone(),
            };
            if let Err(e) = registry.record(entry) {
                // Not recorded, not attached: `ps` and a restart must not lose it, so
                // undo the interface (the caller releases an allocated address).
                let _ = attach::detach(&request.netns, &request.ifname, &[]);
                return Err(format!(
                    "cannot record the attachment in the data dir ({e}); nothing was \
                     attached: free some space and try again"
                ));
            }
            Ok(a)
        })
        .await;
        match result {
            Ok(a) => Response::json(
                200,
                &AttachAnswer {
                    host_ifname: a.host_ifname,
                    mac: format_mac(&a.mac),
                    cidrs: a.addrs.iter().map(|c| c.to_string()).collect(),
                },
            ),
            Err(e) => Response::text(400, format!("{e}\n")),
        }
    }

    pub(super) async fn detach(&self, req: &Request) -> Response {
        let (netns, ifname, addrs) = match parse_attach(req, false) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let registry = self.attachments.clone();
        let result = tokio::task::spawn_blocking(move || {
            let result = attach::detach(&netns, &ifname, &addrs);
            // The whole interface went, or was not there: forget it.
            if matches!(&result, Ok(left) if left.is_empty())
                || matches!(result, Err(AttachError::NotAttached(..)))
            {
                let _ = registry
                    .forget(&netns.to_string(), &ifname)
                    .map_err(persist_warning);
            }
            result
        })
        .await;
        match result {
            Ok(Ok(left)) => {
                let left: Vec<String> = left.iter().map(|c| c.to_string()).collect();
                Response::text(200, format!("{}\n", left.join(" ")))
            }
            Ok(Err(e)) => Response::text(400, format!("detach failed: {e}\n")),
            Err(e) => Response::text(500, format!("detach failed: {e}\n")),
        }
    }

    pub(super) async fn ps(&self) -> Response {
        let registry = self.attachments.clone();
        match blocking(move || host_net::ps(&registry)).await {
            Ok(text) => Response::text(200, text),
            Err(e) => Response::text(500, format!("ps failed: {e}\n")),
        }
    }

    pub(super) async fn expose(&self, req: &Request) -> Response {
        let cidrs = match parse_cidrs(req) {
            Ok(c) if c.is_empty() => {
                return Response::text(
                    400,
                    "a CIDR is required: `weft expose CIDR...` (until IPAM exists)\n",
                )
            }
            Ok(c) => c,
            Err(r) => return r,
        };
        let result = blocking(move || host_net::expose(&cidrs)).await;
        self.firewall.exposed_changed();
        cidrs_answer(result)
    }

    pub(super) async fn hide(&self, req: &Request) -> Response {
        let cidrs = match parse_cidrs(req) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let result = blocking(move || host_net::hide(&cidrs)).await;
        self.firewall.exposed_changed();
        cidrs_answer(result)
    }
}

/// After IPAM state was lost (its snapshot or the whole state file moved aside at
/// start), claims again the addresses of what is still attached here (the containers
/// `ps` lists and the exposed host), so that a new allocation cannot hand one of them
/// out a second time. Each claim waits for the ring (re-learnt from the peers); a claim
/// refused (another container or peer holds the address) is logged, not retried
/// forever.
pub async fn reclaim_attached(api: Api) {
    use crate::ipam::ContainerId;
    use crate::ipam_driver::IpamOp;
    const RETRY: std::time::Duration = std::time::Duration::from_secs(2);
    const TRIES: u32 = 30;
    let registry = api.attachments.clone();
    let attached = match blocking(move || host_net::attached(&registry)).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("IPAM state was lost and the attached containers cannot be listed ({e}): their addresses are not claimed again, a new allocation may repeat one");
            return;
        }
    };
    let (mut claimed, mut failed) = (0usize, 0usize);
    for (id, addrs) in attached {
        for a in addrs {
            let std::net::IpAddr::V4(ip) = a.ip else {
                continue;
            };
            let mut tries = 0;
            loop {
                let op = |answer| IpamOp::Claim {
                    id: ContainerId(id.clone()),
                    addr: ip,
                    prefix: a.prefix,
                    answer,
                };
                match api.owner.ipam(op).await {
                    Some(Ok(_)) => {
                        claimed += 1;
                        break;
                    }
                    Some(Err(e)) if tries + 1 < TRIES => {
                        tracing::debug!("claiming {ip} again for {id}: {}", e.message);
                        tries += 1;
                        tokio::time::sleep(RETRY).await;
                    }
                    Some(Err(e)) => {
                        tracing::error!(
                            "cannot claim {ip} again for {id} after the IPAM state was lost: {}",
                            e.message
                        );
                        failed += 1;
                        break;
                    }
                    None => return,
                }
            }
        }
    }
    tracing::info!("IPAM state re-learnt: claimed again {claimed} addresses of attached containers ({failed} failed)");
}

/// `launch --expose`: exposes the host once the router runs, with `cidrs` or, when
/// none are given, the address IPAM allocates to `weft:expose` (as `weft expose`
/// does), retrying until it works (IPAM may wait for consensus). Idempotent, like
/// `weft expose`: a restarted router finds the address there already.
pub async fn expose_at_start(api: Api, cidrs: Vec<LinkAddr>) {
    use crate::ipam::ContainerId;
    use crate::ipam_driver::IpamOp;
    const RETRY: std::time::Duration = std::time::Duration::from_secs(2);
    let mut told = false;
    loop {
        let addrs = if cidrs.is_empty() {
            let op = |answer| IpamOp::Allocate {
                id: ContainerId(host_net::EXPOSE_ID.to_string()),
                subnet: None,
                answer,
            };
            match api.owner.ipam(op).await {
                Some(Ok((ip, prefix))) => vec![LinkAddr {
                    ip: ip.into(),
                    prefix,
                }],
                Some(Err(e)) => {
                    if !std::mem::replace(&mut told, true) {
                        tracing::info!("--expose: waiting for an address from IPAM: {}", e.message);
                    }
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
                None => return,
            }
        } else {
            cidrs.clone()
        };
        let result = blocking(move || host_net::expose(&addrs)).await;
        api.firewall.exposed_changed();
        match result {
            Ok(addrs) => {
                let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                tracing::info!("exposed the host on the overlay: {}", list.join(" "));
                return;
            }
            Err(e) => {
                warn!("--expose: {e}; trying again");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

fn cidrs_answer(result: Result<Vec<LinkAddr>, String>) -> Response {
    match result {
        Ok(addrs) => Response::json(
            200,
            &CidrsBody {
                cidrs: addrs.iter().map(|a| a.to_string()).collect(),
            },
        ),
        Err(e) => Response::text(500, format!("{e}\n")),
    }
}

pub(super) fn parse_cidrs(req: &Request) -> Result<Vec<LinkAddr>, Response> {
    let bad = |m: String| Response::text(400, format!("{m}\n"));
    let body: CidrsBody =
        serde_json::from_slice(&req.body).map_err(|e| bad(format!("bad request body: {e}")))?;
    if body.cidrs.len() > 64 {
        return Err(bad("at most 64 addresses".into()));
    }
    body.cidrs
        .iter()
        .map(|c| c.parse::<LinkAddr>().map_err(|e| bad(e.to_string())))
        .collect()
}

pub(super) type AttachParts = (NetnsRef, String, Vec<LinkAddr>);

pub(super) fn parse_attach(req: &Request, need_cidr: bool) -> Result<AttachParts, Response> {
    let bad = |m: String| Response::text(400, format!("{m}\n"));
    let body: AttachBody =
        serde_json::from_slice(&req.body).map_err(|e| bad(format!("bad request body: {e}")))?;
    let netns: NetnsRef = body.netns.parse().map_err(|e| bad(format!("{e}")))?;
    if !attach::valid_ifname(&body.ifname) {
        return Err(bad(format!("invalid interface name {:?}", body.ifname)));
    }
    if body.cidrs.len() > 64 {
        return Err(bad("at most 64 addresses".into()));
    }
    let addrs = body
        .cidrs
        .iter()
        .map(|c| c.parse::<LinkAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if need_cidr && addrs.is_empty() {
        return Err(bad(
            "no address given: `weft attach CIDR... NETNS` (allocation without a CIDR comes with IPAM)".into(),
        ));
    }
    Ok((netns, body.ifname, addrs))
}
