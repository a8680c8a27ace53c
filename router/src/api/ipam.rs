//! The API's IPAM endpoints: `POST /ipam/allocate`, `/ipam/claim`, `/ipam/release`,
//! `/ipam/rmpeer`, `/ipam/leave`, and `GET /ipam`.
//!
//! The contract (the `api` crate's, used by the CNI plugin): success answers JSON;
//! errors answer an `ErrorBody`, `{"error": ".."}`, with 400 (bad input), 409 (conflict) or 503 (timed out waiting, for
//! example for consensus). Each request is run by the owner task, which answers when
//! the allocation is persisted.

use super::Api;
use crate::http::{Request, Response};
use crate::ipam::{Cidr, ContainerId, MAX_CONTAINER_ID_LEN};
use crate::ipam_driver::{Answer, Assigned, IpamFailure, IpamOp};
use ::api::{AddrAnswer, ErrorBody, IpamBody, IpamList, ReleasedAnswer, RmpeerBody};
use std::net::Ipv4Addr;
use std::time::Duration;

fn error(status: u16, message: impl Into<String>) -> Response {
    Response::json(status, &ErrorBody::new(message))
}

fn fail(f: IpamFailure) -> Response {
    error(f.status, f.message)
}

/// `A.B.C.D/len` or `A.B.C.D` into the address and its prefix length.
fn parse_addr(s: &str) -> Result<(Ipv4Addr, Option<u8>), String> {
    let bad = || format!("{s:?} is not an IPv4 address such as 10.32.0.5/12");
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (
            a,
            Some(p.parse::<u8>().ok().filter(|p| *p <= 32).ok_or_else(bad)?),
        ),
        None => (s, None),
    };
    Ok((a.parse().map_err(|_| bad())?, p))
}

fn parse_body(req: &Request) -> Result<IpamBody, Response> {
    let body: IpamBody = serde_json::from_slice(&req.body)
        .map_err(|e| error(400, format!("bad request body: {e}")))?;
    if body.id.is_empty() || body.id.len() > MAX_CONTAINER_ID_LEN {
        return Err(error(
            400,
            format!("\"id\" must be 1 to {MAX_CONTAINER_ID_LEN} bytes"),
        ));
    }
    Ok(body)
}

/// `POST /ipam/allocate`'s body as the operation to run (given its answer channel).
pub(super) fn parse_allocate(
    req: &Request,
) -> Result<impl FnOnce(Answer<Assigned>) -> IpamOp, Response> {
    let body = parse_body(req)?;
    let subnet = match body.subnet.as_deref().map(str::parse::<Cidr>) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => return Err(error(400, e.to_string())),
    };
    Ok(move |answer| IpamOp::Allocate {
        id: ContainerId(body.id),
        subnet,
        answer,
    })
}

/// `POST /ipam/claim`'s body as the operation to run (given its answer channel).
pub(super) fn parse_claim(
    req: &Request,
) -> Result<impl FnOnce(Answer<Assigned>) -> IpamOp, Response> {
    let body = parse_body(req)?;
    let Some(addr) = body.addr.as_deref() else {
        return Err(error(400, "\"addr\" is required: A.B.C.D/len"));
    };
    let (addr, prefix) = parse_addr(addr).map_err(|e| error(400, e))?;
    Ok(move |answer| IpamOp::Claim {
        id: ContainerId(body.id),
        addr,
        prefix: prefix.unwrap_or(32),
        answer,
    })
}

/// `POST /ipam/release`'s body as the operation to run (given its answer channel).
pub(super) fn parse_release(
    req: &Request,
) -> Result<impl FnOnce(Answer<Vec<Ipv4Addr>>) -> IpamOp, Response> {
    let body = parse_body(req)?;
    let addr = match body.addr.as_deref().map(parse_addr) {
        None => None,
        Some(Ok((a, _))) => Some(a),
        Some(Err(e)) => return Err(error(400, e)),
    };
    Ok(move |answer| IpamOp::Release {
        id: ContainerId(body.id),
        addr,
        answer,
    })
}

/// `POST /ipam/rmpeer`'s body: the peers to remove, 1 to 64 of them.
pub(super) fn parse_rmpeer(req: &Request) -> Result<Vec<String>, Response> {
    let body: RmpeerBody = serde_json::from_slice(&req.body)
        .map_err(|e| error(400, format!("bad request body: {e}")))?;
    if body.peers.is_empty() || body.peers.len() > 64 {
        return Err(error(400, "give between 1 and 64 peers"));
    }
    Ok(body.peers)
}

impl Api {
    async fn run_ipam<T>(&self, op: impl FnOnce(Answer<T>) -> IpamOp) -> Result<T, Response> {
        match self.owner.ipam(op).await {
            Some(Ok(a)) => Ok(a),
            Some(Err(f)) => Err(fail(f)),
            None => Err(error(503, "router is stopping")),
        }
    }

    pub(super) async fn ipam_allocate(&self, req: &Request) -> Response {
        match parse_allocate(req) {
            Ok(op) => addr_answer(self.run_ipam(op).await),
            Err(r) => r,
        }
    }

    pub(super) async fn ipam_claim(&self, req: &Request) -> Response {
        match parse_claim(req) {
            Ok(op) => addr_answer(self.run_ipam(op).await),
            Err(r) => r,
        }
    }

    pub(super) async fn ipam_release(&self, req: &Request) -> Response {
        let op = match parse_release(req) {
            Ok(op) => op,
            Err(r) => return r,
        };
        match self.run_ipam(op).await {
            Ok(list) => Response::json(
                200,
                &ReleasedAnswer {
                    released: list.iter().map(|a| a.to_string()).collect(),
                },
            ),
            Err(r) => r,
        }
    }

    pub(super) async fn ipam_rmpeer(&self, req: &Request) -> Response {
        let peers = match parse_rmpeer(req) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let mut lines = String::new();
        for name in peers {
            let op = |answer| IpamOp::Rmpeer {
                name: name.clone(),
                answer,
            };
            match self.run_ipam(op).await {
                // weave's line.
                Ok(removal) => {
                    lines.push_str(&format!("{} IPs taken over from {name}\n", removal.ips))
                }
                Err(r) => return r,
            }
        }
        Response::text(200, lines)
    }

    /// `weft reset`: hand our space over, waiting a few seconds at most.
    pub(super) async fn ipam_leave(&self) -> Response {
        let op = |answer| IpamOp::Leave { answer };
        match tokio::time::timeout(Duration::from_secs(5), self.run_ipam(op)).await {
            Ok(Ok(heir)) => Response::text(200, format!("{heir}\n")),
            Ok(Err(r)) => r,
            Err(_) => error(503, "no peer took this router's space within 5 s"),
        }
    }

    pub(super) async fn ipam_list(&self) -> Response {
        let Some(report) = self.owner.report().await else {
            return error(503, "router is stopping");
        };
        let ipam = report.ipam.unwrap_or_default();
        Response::json(
            200,
            &IpamList {
                status: ipam.status,
                range: ipam.range,
                allocations: ipam.allocations,
            },
        )
    }
}

fn addr_answer(r: Result<Assigned, Response>) -> Response {
    match r {
        Ok((a, len)) => Response::json(
            200,
            &AddrAnswer {
                addr: format!("{a}/{len}"),
            },
        ),
        Err(r) => r,
    }
}
