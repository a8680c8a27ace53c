//! Minimal HTTP/1.1 for the local API and the status listener.
//!
//! Requests are parsed with `httparse` from a bounded buffer: the head may not exceed
//! [`MAX_HEAD_LEN`] and the body [`MAX_BODY_LEN`], so a client can never make the
//! router allocate more than that. Every connection carries exactly one request and is
//! closed after the response (`Connection: close`), which keeps both sides simple.

use std::fmt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request head (request line + headers) accepted.
pub const MAX_HEAD_LEN: usize = 16 * 1024;
/// Largest request body accepted.
pub const MAX_BODY_LEN: usize = 1024 * 1024;
const MAX_HEADERS: usize = 32;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, `DELETE`, ...
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The query string, without `?`, if any.
    pub query: Option<String>,
    /// Header names (lowercased) and values.
    pub headers: Vec<(String, String)>,
    /// The body (`Content-Length` bytes).
    pub body: Vec<u8>,
}

impl Request {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request is not valid HTTP/1.x.
    #[error("malformed HTTP request: {0}")]
    Malformed(String),
    /// The head or body is larger than allowed.
    #[error("HTTP request too large")]
    TooLarge,
    /// The peer closed the connection before the request was complete.
    #[error("connection closed before the request was complete")]
    Incomplete,
    /// Reading or writing the socket failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The client did not send its request in time.
    #[error("timed out waiting for the request")]
    Timeout,
}

/// Parses a complete request from `buf`. `Ok(None)` means more bytes are needed.
pub fn parse_request(buf: &[u8]) -> Result<Option<Request>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_HEAD_LEN {
                Err(HttpError::TooLarge)
            } else {
                Ok(None)
            };
        }
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    if head_len > MAX_HEAD_LEN {
        return Err(HttpError::TooLarge);
    }
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    let mut out_headers = Vec::with_capacity(req.headers.len());
    let mut content_length = 0usize;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| HttpError::Malformed(format!("header {} is not UTF-8", h.name)))?;
        if h.name.eq_ignore_ascii_case("content-length") {
            content_length = value
                .trim()
                .parse()
                .map_err(|_| HttpError::Malformed("bad Content-Length".into()))?;
        }
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::Malformed(
                "chunked bodies are not supported".into(),
            ));
        }
        out_headers.push((h.name.to_ascii_lowercase(), value.to_string()));
    }
    if content_length > MAX_BODY_LEN {
        return Err(HttpError::TooLarge);
    }
    let available = buf.len() - head_len;
    if available < content_length {
        return Ok(None);
    }
    Ok(Some(Request {
        method,
        path,
        query,
        headers: out_headers,
        body: buf[head_len..head_len + content_length].to_vec(),
    }))
}

/// Reads one request from `stream`, never buffering more than the limits allow.
pub async fn read_request<R: AsyncRead + Unpin>(stream: &mut R) -> Result<Request, HttpError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HttpError::Incomplete);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_HEAD_LEN + MAX_BODY_LEN {
            return Err(HttpError::TooLarge);
        }
        if let Some(req) = parse_request(&buf)? {
            return Ok(req);
        }
    }
}

/// The policy sent with every response: the status page may run its inline script and
/// styles and fetch from its own origin, and nothing else (no outside assets, no frames).
pub const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// A response to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type` header.
    pub content_type: &'static str,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }

    /// A `text/html` page.
    pub fn html(status: u16, page: &str) -> Response {
        Response {
            status,
            content_type: "text/html; charset=utf-8",
            body: page.as_bytes().to_vec(),
        }
    }

    /// An `application/json` response.
    pub fn json(status: u16, body: &impl serde::Serialize) -> Response {
        let body = serde_json::to_vec_pretty(body).unwrap_or_else(|e| e.to_string().into_bytes());
        Response {
            status,
            content_type: "application/json",
            body,
        }
    }

    /// Writes the response and flushes it.
    pub async fn write_to<W: AsyncWrite + Unpin>(&self, w: &mut W) -> std::io::Result<()> {
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\nContent-Security-Policy: {CSP}\r\n\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        w.write_all(head.as_bytes()).await?;
        w.write_all(&self.body).await?;
        w.flush().await
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, reason(self.status))
    }
}

/// The reason phrase for the codes we use.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Fuzz entry point: the request parser must never panic, whatever the bytes.
#[doc(hidden)]
pub fn fuzz_parse_request(data: &[u8]) {
    let _ = parse_request(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn parses_get_with_query() {
        let r = parse_request(b"GET /status/peers?x=1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/status/peers");
        assert_eq!(r.query.as_deref(), Some("x=1"));
        assert_eq!(r.header("HOST"), Some("localhost"));
    }

    #[test]
    fn waits_for_body_then_parses_it() {
        let head = b"POST /connect HTTP/1.1\r\nContent-Length: 5\r\n\r\nab";
        assert!(parse_request(head).unwrap().is_none());
        let full = b"POST /connect HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcde";
        assert_eq!(parse_request(full).unwrap().unwrap().body, b"abcde");
    }

    #[test]
    fn refuses_oversize_and_garbage() {
        let big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_LEN + 1
        );
        assert!(matches!(
            parse_request(big.as_bytes()),
            Err(HttpError::TooLarge)
        ));
        let long_head = vec![b'a'; MAX_HEAD_LEN + 10];
        assert!(parse_request(&long_head).is_err());
        assert!(matches!(
            parse_request(b"\x00\x01\x02 / HTTP/1.1\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn responses_forbid_caching_framing_and_outside_content() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut out = Vec::new();
        rt.block_on(Response::html(200, "<p>x</p>").write_to(&mut out))
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        for header in [
            "Content-Type: text/html; charset=utf-8\r\n",
            "Cache-Control: no-store\r\n",
            "X-Frame-Options: DENY\r\n",
            "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline';",
            "connect-src 'self'",
        ] {
            assert!(text.contains(header), "{header:?} in {text:?}");
        }
        assert!(text.ends_with("\r\n\r\n<p>x</p>"));
    }

    #[test]
    fn fuzz_replay_never_panics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let seed =
            b"POST /connect?replace=true HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
        for _ in 0..5000 {
            let mut d = seed.to_vec();
            for _ in 0..rng.gen_range(1..8) {
                let i = rng.gen_range(0..d.len());
                d[i] = rng.gen();
            }
            d.truncate(rng.gen_range(0..=d.len()));
            fuzz_parse_request(&d);
            let random: Vec<u8> = (0..rng.gen_range(0..200)).map(|_| rng.gen()).collect();
            fuzz_parse_request(&random);
        }
    }
}
