//! The local API (HTTP on `<run-dir>/weft.sock`) and the read-only status listener.
//!
//! Both serve one request per connection and hold no protocol state: they ask the mesh
//! owner for a snapshot, or hand it a command. On the Unix socket the caller's uid comes
//! from `SO_PEERCRED`, and only uid 0 may change anything. The TCP status listener is
//! read-only and answers only requests whose `Host` is a loopback name, so that a web
//! page elsewhere cannot read it through DNS rebinding. The request and answer bodies
//! and the paths are the `api` crate's, which the CLI and the CNI plugin share.

pub mod host;
pub mod ipam;
pub mod serve;

use crate::attachments::Attachments;
use crate::config;
use crate::dataplane_driver::DataplaneHandle;
use crate::handle::{Input, OwnerHandle};
use crate::http::{Request, Response};
use crate::status;
use ::api::{paths, PeersRequest};
use gossip::node::Input as NodeInput;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

/// Shared by both listeners.
#[derive(Clone)]
pub struct Api {
    /// The mesh owner.
    pub owner: OwnerHandle,
    /// Tells the daemon to stop.
    pub stop: mpsc::Sender<()>,
    /// Overlay MTU for attached interfaces (lowered when a path measures less).
    pub mtu: tokio::sync::watch::Receiver<u32>,
    /// The data-plane task, for counters.
    pub dataplane: DataplaneHandle,
    /// The fast-path task.
    pub fastdp: crate::fastdp_driver::FastdpHandle,
    /// The firewall task (masquerade, the fast path's guard).
    pub firewall: crate::firewall::FirewallHandle,
    /// What was attached through this router (`weft ps`).
    pub attachments: Arc<Attachments>,
    /// `--peer-keys`, reloaded by `POST /peers/reload`.
    pub peer_keys: Option<Arc<crate::peer_keys::KeyList>>,
    /// TCP-fallback datagrams the link tasks dropped for a full data-plane queue.
    pub tcp_rx_dropped: Arc<std::sync::atomic::AtomicU64>,
}

/// Reloads the `--peer-keys` list (SIGHUP, `weft peers reload`): on success the owner
/// gets the new ids. Returns what to tell the user.
pub fn reload_peer_keys(
    list: Option<&crate::peer_keys::KeyList>,
    owner: &OwnerHandle,
) -> Result<String, String> {
    let Some(list) = list else {
        let why = "this router runs without --peer-keys: there is no list to reload";
        tracing::warn!("{why}");
        return Err(why.into());
    };
    match list.reload() {
        Ok(keys) => {
            owner.send(Input::PeerKeys(keys.ids().clone()));
            let done = format!("{} peer keys in force", keys.len());
            tracing::info!("--peer-keys reloaded: {done}");
            Ok(done)
        }
        Err(e) => {
            tracing::error!("--peer-keys reload failed, the list in force stays: {e}");
            Err(format!("{e}; the list in force stays"))
        }
    }
}

/// Serves the Unix-socket API forever (bounded: see [`serve`]).
pub async fn serve_unix(listener: UnixListener, api: Api) {
    serve::unix(listener, serve::Limits::default(), move |req, uid| {
        let api = api.clone();
        async move {
            match req {
                Ok(req) => api.handle(&req, uid == Some(0), true).await,
                Err(e) => Response::text(400, format!("{e}\n")),
            }
        }
    })
    .await
}

/// Serves the read-only status listener forever (bounded: see [`serve`]).
pub async fn serve_status(listener: TcpListener, api: Api) {
    serve::tcp(
        listener,
        serve::Limits::default(),
        "status listener",
        move |req, remote| {
            let api = api.clone();
            async move {
                match req {
                    Ok(req) if !host_is_loopback(req.header("host")) => {
                        debug!(%remote, "status request with foreign Host refused");
                        Response::text(403, "forbidden: Host must be a loopback name\n")
                    }
                    Ok(req) => api.handle(&req, false, false).await,
                    Err(e) => Response::text(400, format!("{e}\n")),
                }
            }
        },
    )
    .await
}

/// Serves `GET /metrics`, and nothing else, to anyone who can reach the listener
/// (`--metrics-addr`), for Prometheus scrapes from other machines. No Host check: the
/// metrics are no secret, and nothing else is served here. Bounded: see [`serve`].
pub async fn serve_metrics(listener: TcpListener, api: Api) {
    serve::tcp(
        listener,
        serve::Limits::default(),
        "metrics listener",
        move |req, _| {
            let api = api.clone();
            async move {
                match req {
                    Ok(req) if req.method == "GET" && req.path == paths::METRICS => {
                        api.get(paths::METRICS).await
                    }
                    Ok(req) => Response::text(
                        404,
                        format!(
                            "no such endpoint: {} {} (this listener serves GET /metrics only)\n",
                            req.method, req.path
                        ),
                    ),
                    Err(e) => Response::text(400, format!("{e}\n")),
                }
            }
        },
    )
    .await
}

/// True for `localhost`, `127.x.y.z` and `[::1]`, with or without a (numeric) port.
pub fn host_is_loopback(host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((name, after)) = rest.split_once(']') else {
            return false;
        };
        match after.strip_prefix(':') {
            Some(port) => (name, Some(port)),
            None if after.is_empty() => (name, None),
            None => return false,
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

impl Api {
    async fn handle(&self, req: &Request, privileged: bool, mutable: bool) -> Response {
        match (req.method.as_str(), req.path.as_str()) {
            // `ps` enters namespaces: on the Unix socket only, not the status listener.
            ("GET", paths::PS) if mutable => self.ps().await,
            ("GET", paths::IPAM) => self.ipam_list().await,
            ("GET", path) => self.get(path).await,
            ("POST", _) if !mutable => Response::text(405, "the status listener is read-only\n"),
            ("POST", _) if !privileged => Response::text(
                403,
                "permission denied: changing the router needs root (uid 0); run the command as root\n",
            ),
            ("POST", paths::CONNECT) => self.connect(req).await,
            ("POST", paths::FORGET) => self.forget(req).await,
            ("POST", paths::ATTACH) => self.attach(req).await,
            ("POST", paths::DETACH) => self.detach(req).await,
            ("POST", paths::EXPOSE) => self.expose(req).await,
            ("POST", paths::HIDE) => self.hide(req).await,
            ("POST", paths::IPAM_ALLOCATE) => self.ipam_allocate(req).await,
            ("POST", paths::IPAM_CLAIM) => self.ipam_claim(req).await,
            ("POST", paths::IPAM_RELEASE) => self.ipam_release(req).await,
            ("POST", paths::IPAM_RMPEER) => self.ipam_rmpeer(req).await,
            ("POST", paths::IPAM_LEAVE) => self.ipam_leave().await,
            ("POST", paths::PEERS_RELOAD) => {
                match reload_peer_keys(self.peer_keys.as_deref(), &self.owner) {
                    Ok(done) => Response::text(200, format!("{done}\n")),
                    Err(e) => Response::text(409, format!("{e}\n")),
                }
            }
            ("POST", paths::STOP) => {
                let _ = self.stop.try_send(());
                Response::text(200, "stopping\n")
            }
            (_, path) => Response::text(404, format!("no such endpoint: {} {path}\n", req.method)),
        }
    }

    async fn get(&self, path: &str) -> Response {
        if path == "/" {
            return Response::html(200, crate::web::PAGE);
        }
        let Some(mut report) = self.owner.report().await else {
            return Response::text(503, "router is stopping\n");
        };
        report.fast_path = Some(crate::report::fast_path(self.fastdp.availability()));
        report.router.peer_keys = self.peer_keys.as_ref().map(|l| l.report());
        if let Some(stats) = self.firewall.stats().await {
            report.masquerade = Some(crate::report::masquerade(&stats.masquerade));
        }
        let text = match path {
            "/report" | "/metrics" => {
                // Only these carry counters: ask the data plane for them then.
                if let Some(stats) = self.dataplane.stats().await {
                    let mut dp = crate::report::dataplane(&stats);
                    let rx_dropped = self
                        .tcp_rx_dropped
                        .load(std::sync::atomic::Ordering::Relaxed);
                    dp.drops_queue_full = dp.drops_queue_full.saturating_add(rx_dropped);
                    report.dataplane = Some(dp);
                }
                if let Some(stats) = self.fastdp.stats().await {
                    report.fastdp = Some(crate::report::fastdp(&stats, &report));
                }
                if path == "/metrics" {
                    return Response {
                        status: 200,
                        content_type: crate::metrics::CONTENT_TYPE,
                        body: crate::metrics::render(&report).into_bytes(),
                    };
                }
                return Response::json(200, &report);
            }
            "/status" => status::format_status(&report),
            "/status/peers" => status::format_peers(&report),
            "/status/connections" => status::format_connections(&report),
            "/status/targets" => status::format_targets(&report),
            "/status/ipam" => report.ipam.map(|i| i.text).unwrap_or_default(),
            _ => return Response::text(404, format!("no such endpoint: GET {path}\n")),
        };
        Response::text(200, status::printable(&text))
    }

    async fn connect(&self, req: &Request) -> Response {
        let (body, targets) = match peers_and_targets(req).await {
            Ok(p) => p,
            Err(r) => return r,
        };
        self.owner.send(Input::Node(NodeInput::Connect {
            targets,
            replace: body.replace,
        }));
        Response::text(200, "")
    }

    async fn forget(&self, req: &Request) -> Response {
        let (_, targets) = match peers_and_targets(req).await {
            Ok(p) => p,
            Err(r) => return r,
        };
        let (tx, rx) = oneshot::channel();
        self.owner.send(Input::Forget { targets, reply: tx });
        match rx.await {
            Ok(n) => Response::text(200, format!("{n}\n")),
            Err(_) => Response::text(503, "router is stopping\n"),
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The body of `connect`/`forget` and its peers resolved to addresses.
async fn peers_and_targets(req: &Request) -> Result<(PeersRequest, Vec<SocketAddr>), Response> {
    let body = parse_peers(req)?;
    let targets = resolve_all(&body.peers)
        .await
        .map_err(|e| Response::text(400, format!("{e}\n")))?;
    Ok((body, targets))
}

fn parse_peers(req: &Request) -> Result<PeersRequest, Response> {
    let body: PeersRequest = serde_json::from_slice(&req.body)
        .map_err(|e| Response::text(400, format!("bad request body: {e}\n")))?;
    if body.peers.is_empty() || body.peers.len() > 1024 {
        return Err(Response::text(400, "give between 1 and 1024 peers\n"));
    }
    Ok(body)
}

async fn resolve_all(peers: &[String]) -> Result<Vec<SocketAddr>, String> {
    let peers = peers.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for p in &peers {
            out.extend(config::resolve_peer(p)?);
        }
        Ok(out)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Fuzz entry: arbitrary bytes as the body of every request the local API decodes
/// (the first byte picks which), through the same parse functions the handlers call
/// before they hand anything to the owner; never panics. Selectors: 0 allocate,
/// 1 claim, 2 release, 3 rmpeer, 4 expose/hide, 5 attach, 6 detach, 7 connect/forget.
pub fn fuzz_request_body(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let req = Request {
        method: "POST".into(),
        path: String::new(),
        query: None,
        headers: Vec::new(),
        body: body.to_vec(),
    };
    let refused = match which % 8 {
        0 => ipam::parse_allocate(&req).err(),
        1 => ipam::parse_claim(&req).err(),
        2 => ipam::parse_release(&req).err(),
        3 => ipam::parse_rmpeer(&req).err(),
        4 => host::parse_cidrs(&req).err(),
        5 => host::parse_attach(&req, true).err(),
        6 => host::parse_attach(&req, false).err(),
        _ => parse_peers(&req).err(),
    };
    if let Some(r) = refused {
        assert_eq!(r.status, 400, "a bad body is the client's error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_request_body_replay_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        let seeds: [&[u8]; 8] = [
            br#"{"id":"c1","subnet":"10.32.0.0/24"}"#,
            br#"{"id":"c1","addr":"10.32.0.5/12"}"#,
            br#"{"id":"c1","addr":"10.32.0.5"}"#,
            br#"{"peers":["host1","0a:0b:0c:0d:0e:0f"]}"#,
            br#"{"cidrs":["10.32.0.1/12","fd00::1/64"]}"#,
            br#"{"netns":"pod1","ifname":"ethwe0","cidrs":["10.32.0.9/12"]}"#,
            br#"{"netns":"/proc/1/ns/net","ifname":"eth0","cidrs":[]}"#,
            br#"{"peers":["198.18.0.1:6783","[fd00::1]:6783"],"replace":true}"#,
        ];
        for i in 0..4000 {
            let which = (i % seeds.len()) as u8;
            let mut d = seeds[i % seeds.len()].to_vec();
            for _ in 0..rng.gen_range(0..6) {
                let j = rng.gen_range(0..d.len());
                d[j] = rng.gen();
            }
            d.truncate(rng.gen_range(0..=d.len()));
            d.insert(0, which);
            fuzz_request_body(&d);
            let random: Vec<u8> = (0..rng.gen_range(0..80)).map(|_| rng.gen()).collect();
            fuzz_request_body(&random);
        }
        // The seeds themselves are accepted (so the replay reaches past the decoder).
        for (i, s) in seeds.iter().enumerate() {
            let req = Request {
                method: "POST".into(),
                path: String::new(),
                query: None,
                headers: Vec::new(),
                body: s.to_vec(),
            };
            let ok = match i {
                0 => ipam::parse_allocate(&req).is_ok(),
                1 => ipam::parse_claim(&req).is_ok(),
                2 => ipam::parse_release(&req).is_ok(),
                3 => ipam::parse_rmpeer(&req).is_ok(),
                4 => host::parse_cidrs(&req).is_ok(),
                5 => host::parse_attach(&req, true).is_ok(),
                6 => host::parse_attach(&req, false).is_ok(),
                _ => parse_peers(&req).is_ok(),
            };
            assert!(ok, "seed {i} is refused");
        }
    }

    #[test]
    fn loopback_hosts_only() {
        for ok in [
            "localhost",
            "localhost:6782",
            "127.0.0.1:6782",
            "[::1]:6782",
            "127.1.2.3",
        ] {
            assert!(host_is_loopback(Some(ok)), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:6782",
            "10.32.0.1",
            "",
            "[::2]:1",
            "[::1]evil.example",
            "localhost:evil",
            "localhost:",
            "127.0.0.1:6782:1",
            "[::1",
            "localhost.evil.example",
        ] {
            assert!(!host_is_loopback(Some(bad)), "{bad}");
        }
        assert!(!host_is_loopback(None));
    }
}
