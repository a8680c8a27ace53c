//! A small blocking client for the local API, used by the `weft` command.
//!
//! One request per connection over `<run-dir>/weft.sock`. A missing socket, or one
//! nobody answers on, is [`ClientError::NotRunning`], which the CLI maps to exit code 3.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No router answers on the socket.
    #[error("router not running (no socket at {0}); start it with `weft launch`")]
    NotRunning(PathBuf),
    /// The router answered with an error status.
    #[error("{body}")]
    Status {
        /// HTTP status code.
        code: u16,
        /// The router's message.
        body: String,
    },
    /// The exchange failed midway.
    #[error("talking to the router at {path}: {source} (is it stopping? its log is weft.log in the same directory)")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The router's answer was not HTTP.
    #[error("the router at {0} sent a malformed response (is it another weft version? its log is weft.log in the same directory)")]
    Malformed(PathBuf),
}

/// Sends one request and returns the body of a 2xx response.
pub fn request(
    run_dir: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Vec<u8>, ClientError> {
    let socket = crate::config::socket_path(run_dir);
    let mut stream =
        UnixStream::connect(&socket).map_err(|_| ClientError::NotRunning(socket.clone()))?;
    let io = |source| ClientError::Io {
        path: socket.clone(),
        source,
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).map_err(io)?;
    stream.write_all(body).map_err(io)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(io)?;
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(&response) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(ClientError::Malformed(socket)),
    };
    let code = parsed.code.unwrap_or(500);
    let body = response[head_len..].to_vec();
    if (200..300).contains(&code) {
        Ok(body)
    } else {
        Err(ClientError::Status {
            code,
            body: String::from_utf8_lossy(&body).trim_end().to_string(),
        })
    }
}

/// `GET /ps`: the `weft ps` lines.
pub fn ps(run_dir: &Path) -> Result<String, ClientError> {
    let body = request(run_dir, "GET", "/ps", None)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// `POST /expose`: gives the host these addresses on the overlay; returns them.
pub fn expose(run_dir: &Path, cidrs: &[String]) -> Result<Vec<String>, ClientError> {
    post_cidrs(run_dir, "/expose", cidrs)
}

/// `POST /hide`: removes these exposed addresses, or all when `cidrs` is empty;
/// returns those that were exposed.
pub fn hide(run_dir: &Path, cidrs: &[String]) -> Result<Vec<String>, ClientError> {
    post_cidrs(run_dir, "/hide", cidrs)
}

fn post_cidrs(run_dir: &Path, path: &str, cidrs: &[String]) -> Result<Vec<String>, ClientError> {
    let body = crate::api::CidrsBody {
        cidrs: cidrs.to_vec(),
    };
    let body = serde_json::to_vec(&body).expect("a list of strings serializes");
    let answer = request(run_dir, "POST", path, Some(&body))?;
    let answer: crate::api::CidrsBody = serde_json::from_slice(&answer)
        .map_err(|_| ClientError::Malformed(crate::config::socket_path(run_dir)))?;
    Ok(answer.cidrs)
}

/// `POST /ipam/allocate` for container `id`: its address, `A.B.C.D/len`.
pub fn ipam_allocate(run_dir: &Path, id: &str) -> Result<String, ClientError> {
    let body = crate::api::ipam::IpamBody {
        id: id.to_string(),
        ..Default::default()
    };
    let body = serde_json::to_vec(&body).expect("the body serializes");
    let answer = request(run_dir, "POST", "/ipam/allocate", Some(&body))?;
    let answer: crate::api::ipam::AddrAnswer = serde_json::from_slice(&answer)
        .map_err(|_| ClientError::Malformed(crate::config::socket_path(run_dir)))?;
    Ok(answer.addr)
}

/// `POST /ipam/release` for container `id`: one address, or all of them.
pub fn ipam_release(run_dir: &Path, id: &str, addr: Option<&str>) -> Result<(), ClientError> {
    let body = crate::api::ipam::IpamBody {
        id: id.to_string(),
        subnet: None,
        addr: addr.map(str::to_string),
    };
    let body = serde_json::to_vec(&body).expect("the body serializes");
    request(run_dir, "POST", "/ipam/release", Some(&body)).map(|_| ())
}
