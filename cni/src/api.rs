//! A tiny HTTP/1.1 client for the router's local API on `<run-dir>/weft.sock`, with
//! connect, read and write timeouts so that no CNI verb can hang on a stuck router.
//! The plugin reaches the router only through this socket, never by linking it.

use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest response body accepted.
const MAX_RESPONSE: u64 = 4 << 20;

/// Why a call to the router failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket could not be reached (router not running).
    #[error("cannot reach the weft router at {0}: {1}; is it running (weft launch)?")]
    Unreachable(PathBuf, std::io::Error),
    /// I/O failed or timed out mid-request.
    #[error("talking to the weft router at {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// The answer was not HTTP with a JSON body.
    #[error("the weft router sent a malformed answer: {0}")]
    Malformed(String),
    /// A non-2xx status with the router's message.
    #[error("the weft router answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// `error` field of the body.
        message: String,
    },
}

/// A client for one router.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

/// The run dir: `WEFT_RUN_DIR` or `/run/weft`.
pub fn run_dir() -> PathBuf {
    std::env::var_os("WEFT_RUN_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/weft"))
}

impl Client {
    /// A client for `<run_dir>/weft.sock` with `timeout` for each step.
    pub fn new(run_dir: &Path, timeout: Duration) -> Client {
        Client {
            socket: run_dir.join("weft.sock"),
            timeout,
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.call("GET", path, None)
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        self.call("POST", path, Some(body))
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, ApiError> {
        let io = |e| ApiError::Io(self.socket.clone(), e);
        let mut s = connect_timeout(&self.socket, self.timeout)
            .map_err(|e| ApiError::Unreachable(self.socket.clone(), e))?;
        s.set_read_timeout(Some(self.timeout)).map_err(io)?;
        s.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: weft\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).map_err(io)?;
        let mut raw = Vec::new();
        s.take(MAX_RESPONSE).read_to_end(&mut raw).map_err(io)?;
        let (status, value) = parse_response(&raw)?;
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            let message = value["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            Err(ApiError::Status { status, message })
        }
    }
}

/// Connects in a helper thread so that a stuck connect is bounded by `timeout` too.
fn connect_timeout(path: &Path, timeout: Duration) -> std::io::Result<UnixStream> {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(UnixStream::connect(p));
    });
    rx.recv_timeout(timeout).unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connect timed out",
        ))
    })
}

/// Splits an HTTP/1.x response into status and JSON body (Content-Length or to EOF;
/// chunked bodies are decoded).
pub fn parse_response(raw: &[u8]) -> Result<(u16, Value), ApiError> {
    let bad = |why: &str| ApiError::Malformed(why.to_string());
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
    let body: Vec<u8> = if chunked {
        dechunk(rest).ok_or_else(|| bad("bad chunked body"))?
    } else {
        match length {
            Some(n) if n <= rest.len() => rest[..n].to_vec(),
            Some(_) => return Err(bad("body shorter than Content-Length")),
            None => rest.to_vec(),
        }
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((status, Value::Null));
    }
    let value = serde_json::from_slice(&body).map_err(|e| ApiError::Malformed(e.to_string()))?;
    Ok((status, value))
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
    let _ = parse_response(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers() {
        let (s, v) = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 23\r\n\r\n{\"addr\":\"10.40.0.2/16\"}",
        )
        .unwrap();
        assert_eq!(s, 200);
        assert_eq!(v["addr"], "10.40.0.2/16");
        let (s, v) = parse_response(
            b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, v["a"].as_u64()), (409, Some(1)));
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 99 X\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
    }

    #[test]
    fn unreachable_router_fails_fast() {
        let c = Client::new(
            Path::new("/nonexistent-weft-run"),
            Duration::from_millis(500),
        );
        let start = std::time::Instant::now();
        assert!(matches!(c.get("/ipam"), Err(ApiError::Unreachable(..))));
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_silent_router_times_out() {
        let dir = std::env::temp_dir().join(format!("weft-api-silent-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Accepts connections (the kernel backlog does) but never answers.
        let _listener = std::os::unix::net::UnixListener::bind(dir.join("weft.sock")).unwrap();
        let c = Client::new(&dir, Duration::from_millis(300));
        let start = std::time::Instant::now();
        assert!(matches!(
            c.post("/ipam/release", &serde_json::json!({"id": "a:eth0"})),
            Err(ApiError::Io(..))
        ));
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fuzz_response_random_inputs() {
        let seed = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\n{}\n\r\n0\r\n\r\n";
        crate::for_each_mutation(seed, 5000, 0x2545_f491_4f6c_dd1d, fuzz_response);
    }
}
