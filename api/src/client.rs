//! The one blocking client of the local API, used by the `weft` command and the CNI
//! plugin: one request per connection over `<run-dir>/weft.sock`.
//!
//! Every step is bounded: the connect (done on a helper thread, since a Unix connect to
//! a full backlog blocks), each read and each write wait at most [`Client::timeout`],
//! and an answer longer than [`Client::max_response`] is refused. No socket, or one
//! nobody accepts on, is [`ClientError::NotRunning`] (the CLI's exit code 3); a
//! non-2xx answer is [`ClientError::Status`] with the router's message, read from the
//! JSON [`ErrorBody`] or the plain-text body.

use crate::paths;
use crate::types::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long each step may take unless [`Client::timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer accepted unless [`Client::max_response`] says otherwise (a large
/// mesh's `/report` runs to megabytes).
pub const DEFAULT_MAX_RESPONSE: u64 = 64 << 20;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No router accepts on the socket: it is missing, stale, or connecting timed out.
    #[error("{}", not_running(.socket, .cause))]
    NotRunning {
        /// The socket.
        socket: PathBuf,
        /// What connecting said.
        cause: io::Error,
    },
    /// The exchange failed or timed out midway.
    #[error("talking to the router at {}: {} (is it stopping? its log is weft.log in the same directory)", .socket.display(), io_text(.cause))]
    Io {
        /// The socket.
        socket: PathBuf,
        /// The cause.
        cause: io::Error,
    },
    /// The answer was not the HTTP or JSON expected.
    #[error("the router at {} sent a malformed response ({why}; is it another weft version? its log is weft.log in the same directory)", .socket.display())]
    Malformed {
        /// The socket.
        socket: PathBuf,
        /// What was wrong with it.
        why: String,
    },
    /// The router answered with an error status.
    #[error("{message}")]
    Status {
        /// HTTP status code.
        code: u16,
        /// The router's message: the `error` of a JSON error body, or the text body.
        message: String,
    },
}

fn not_running(socket: &Path, cause: &io::Error) -> String {
    let how = match cause.kind() {
        io::ErrorKind::NotFound => format!("no socket at {}", socket.display()),
        _ => format!("cannot connect to {}: {}", socket.display(), io_text(cause)),
    };
    format!("router not running ({how}); start it with `weft launch`")
}

fn io_text(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timed out".to_string(),
        _ => e.to_string(),
    }
}

/// A client for the router of one run dir.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
    max_response: u64,
}

impl Client {
    /// A client for `<run_dir>/weft.sock` with the default bounds.
    pub fn new(run_dir: &Path) -> Client {
        Client {
            socket: paths::socket_path(run_dir),
            timeout: DEFAULT_TIMEOUT,
            max_response: DEFAULT_MAX_RESPONSE,
        }
    }

    /// The same client with `timeout` for each of connect, read and write.
    pub fn timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The same client accepting answers of at most `bytes`.
    pub fn max_response(mut self, bytes: u64) -> Client {
        self.max_response = bytes;
        self
    }

    /// The socket it talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request and returns the body of a 2xx answer.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, ClientError> {
        let io = |cause| ClientError::Io {
            socket: self.socket.clone(),
            cause,
        };
        let mut stream =
            connect(&self.socket, self.timeout).map_err(|cause| ClientError::NotRunning {
                socket: self.socket.clone(),
                cause,
            })?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let body = body.unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).map_err(io)?;
        let mut raw = Vec::new();
        // One byte past the bound tells a too-long answer from one of exactly the bound.
        let limit = self.max_response.saturating_add(1);
        stream.take(limit).read_to_end(&mut raw).map_err(io)?;
        if raw.len() as u64 > self.max_response {
            return Err(self.malformed(format!("longer than {} bytes", self.max_response)));
        }
        let (code, body) = parse_response(&raw).map_err(|why| self.malformed(why))?;
        if (200..300).contains(&code) {
            Ok(body)
        } else {
            Err(ClientError::Status {
                code,
                message: error_message(&body),
            })
        }
    }

    /// `GET path`: the text answer.
    pub fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let body = self.call("GET", path, None)?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `GET path`: the JSON answer.
    pub fn get<A: DeserializeOwned>(&self, path: &str) -> Result<A, ClientError> {
        let body = self.call("GET", path, None)?;
        self.decode(&body)
    }

    /// `POST path` with a JSON body (none if `body` is `None`): the text answer.
    pub fn post_text<B: Serialize>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<String, ClientError> {
        let body = body.map(encode);
        let answer = self.call("POST", path, body.as_deref())?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }

    /// `POST path` with a JSON body: the JSON answer.
    pub fn post<B: Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<A, ClientError> {
        let answer = self.call("POST", path, Some(&encode(body)))?;
        self.decode(&answer)
    }

    /// `GET /ps`: the `weft ps` lines.
    pub fn ps(&self) -> Result<String, ClientError> {
        self.get_text(paths::PS)
    }

    /// `POST /connect`.
    pub fn connect(&self, body: &PeersRequest) -> Result<(), ClientError> {
        self.post_text(paths::CONNECT, Some(body)).map(drop)
    }

    /// `POST /forget`: how many targets the router knew, as it says it.
    pub fn forget(&self, body: &PeersRequest) -> Result<String, ClientError> {
        self.post_text(paths::FORGET, Some(body))
    }

    /// `POST /attach`.
    pub fn attach(&self, body: &AttachBody) -> Result<AttachAnswer, ClientError> {
        self.post(paths::ATTACH, body)
    }

    /// `POST /detach`: the addresses left, as the router says them.
    pub fn detach(&self, body: &AttachBody) -> Result<String, ClientError> {
        self.post_text(paths::DETACH, Some(body))
    }

    /// `POST /expose`: gives the host these addresses on the overlay; returns them.
    pub fn expose(&self, cidrs: &[String]) -> Result<Vec<String>, ClientError> {
        let body = CidrsBody {
            cidrs: cidrs.to_vec(),
        };
        self.post::<_, CidrsBody>(paths::EXPOSE, &body)
            .map(|a| a.cidrs)
    }

    /// `POST /hide`: removes these exposed addresses, or all when `cidrs` is empty;
    /// returns those that were exposed.
    pub fn hide(&self, cidrs: &[String]) -> Result<Vec<String>, ClientError> {
        let body = CidrsBody {
            cidrs: cidrs.to_vec(),
        };
        self.post::<_, CidrsBody>(paths::HIDE, &body)
            .map(|a| a.cidrs)
    }

    /// `POST /ipam/allocate` for container `id`, in `subnet` if given: its address,
    /// `A.B.C.D/len`.
    pub fn ipam_allocate(&self, id: &str, subnet: Option<&str>) -> Result<String, ClientError> {
        let body = IpamBody {
            id: id.to_string(),
            subnet: subnet.map(str::to_string),
            addr: None,
        };
        self.post::<_, AddrAnswer>(paths::IPAM_ALLOCATE, &body)
            .map(|a| a.addr)
    }

    /// `POST /ipam/claim` of `addr` (`A.B.C.D/len`) for container `id`.
    pub fn ipam_claim(&self, id: &str, addr: &str) -> Result<String, ClientError> {
        let body = IpamBody {
            id: id.to_string(),
            subnet: None,
            addr: Some(addr.to_string()),
        };
        self.post::<_, AddrAnswer>(paths::IPAM_CLAIM, &body)
            .map(|a| a.addr)
    }

    /// `POST /ipam/release` for container `id`: one address, or all of them; returns
    /// those released.
    pub fn ipam_release(&self, id: &str, addr: Option<&str>) -> Result<Vec<String>, ClientError> {
        let body = IpamBody {
            id: id.to_string(),
            subnet: None,
            addr: addr.map(str::to_string),
        };
        self.post::<_, ReleasedAnswer>(paths::IPAM_RELEASE, &body)
            .map(|a| a.released)
    }

    /// `POST /ipam/rmpeer`: weave's `N IPs taken over from PEER` lines.
    pub fn ipam_rmpeer(&self, peers: &[String]) -> Result<String, ClientError> {
        let body = RmpeerBody {
            peers: peers.to_vec(),
        };
        self.post_text(paths::IPAM_RMPEER, Some(&body))
    }

    /// `POST /ipam/leave`: the peer that took this router's space.
    pub fn ipam_leave(&self) -> Result<String, ClientError> {
        self.post_text::<()>(paths::IPAM_LEAVE, None)
    }

    /// `GET /ipam`.
    pub fn ipam_list(&self) -> Result<IpamList, ClientError> {
        self.get(paths::IPAM)
    }

    /// `POST /peers/reload`: `N peer keys in force`.
    pub fn peers_reload(&self) -> Result<String, ClientError> {
        self.post_text::<()>(paths::PEERS_RELOAD, None)
    }

    /// `POST /stop`.
    pub fn stop(&self) -> Result<(), ClientError> {
        self.post_text::<()>(paths::STOP, None).map(drop)
    }

    fn decode<A: DeserializeOwned>(&self, body: &[u8]) -> Result<A, ClientError> {
        serde_json::from_slice(body).map_err(|e| self.malformed(format!("bad JSON: {e}")))
    }

    fn malformed(&self, why: String) -> ClientError {
        ClientError::Malformed {
            socket: self.socket.clone(),
            why,
        }
    }
}

fn encode<B: Serialize>(body: &B) -> Vec<u8> {
    // The API's bodies are structs of strings and lists: they always serialize.
    serde_json::to_vec(body).expect("an API body serializes")
}

/// The router's message in an error answer: the `error` of a JSON [`ErrorBody`], or
/// the text (trimmed).
fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => e.error,
        Err(_) => String::from_utf8_lossy(body).trim_end().to_string(),
    }
}

/// Connects in a helper thread so that a stuck connect is bounded by `timeout` too.
fn connect(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(UnixStream::connect(p));
    });
    rx.recv_timeout(timeout)
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")))
}

/// Splits an HTTP/1.x response into status and body (by Content-Length, or to EOF;
/// chunked bodies are decoded). The error says what is wrong.
pub fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let bad = |why: &str| why.to_string();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().unwrap_or_default().starts_with("HTTP/1.") {
        return Err(bad("not an HTTP/1.x status line"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..600).contains(s))
        .ok_or_else(|| bad("bad status code"))?;
    let mut length = None;
    let mut chunked = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "content-length" {
            length = Some(v.parse::<usize>().map_err(|_| bad("bad Content-Length"))?);
        } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest).ok_or_else(|| bad("bad chunked body"))?
    } else {
        match length {
            Some(n) if n <= rest.len() => rest[..n].to_vec(),
            Some(_) => return Err(bad("body shorter than Content-Length")),
            None => rest.to_vec(),
        }
    };
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Fuzz entry: parsing an arbitrary router answer never panics.
pub fn fuzz_response(data: &[u8]) {
    if let Ok((_, body)) = parse_response(data) {
        let _ = error_message(&body);
    }
}

#[cfg(test)]
mod tests;
