//! The accept loops of the local API and the status and metrics listeners, with bounds.
//!
//! Every listener serves one request per connection. A local user (or, for the status
//! and metrics listeners, anyone who reaches them) could otherwise hold the router's
//! sockets and memory with idle connections, so each loop:
//! - admits at most [`Limits::max_connections`] connections at once; one more is
//!   answered `503` at once and closed, its request discarded unread;
//! - gives a client [`Limits::read_deadline`] to send its request, and the same to take
//!   the response; then the connection is closed;
//! - after an `accept` error (out of file descriptors, say) waits [`ACCEPT_BACKOFF`]
//!   instead of spinning on the error.
//!
//! The handler itself is not bounded here: IPAM answers within its own timeouts.

use crate::http::{self, HttpError, Request, Response};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// Wait after a failed `accept`.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time a client has to send its whole request, and to take the response.
    pub read_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            read_deadline: Duration::from_secs(10),
        }
    }
}

/// Serves `listener` forever: `handle(request, peer)` answers each request; `peer` is
/// the caller's uid (`SO_PEERCRED`), if known.
pub async fn unix<H, F>(listener: UnixListener, limits: Limits, handle: H)
where
    H: Fn(Result<Request, HttpError>, Option<u32>) -> F + Clone + Send + 'static,
    F: Future<Output = Response> + Send,
{
    let gate = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!("local API: accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        let handle = handle.clone();
        admit(&gate, stream, limits, move |req| handle(req, uid));
    }
}

/// Serves TCP `listener` forever: `handle(request, remote)` answers each request.
pub async fn tcp<H, F>(listener: TcpListener, limits: Limits, what: &'static str, handle: H)
where
    H: Fn(Result<Request, HttpError>, std::net::SocketAddr) -> F + Clone + Send + 'static,
    F: Future<Output = Response> + Send,
{
    let gate = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                warn!("{what}: accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let handle = handle.clone();
        admit(&gate, stream, limits, move |req| handle(req, remote));
    }
}

/// Serves `stream` on a task if a slot is free; answers 503 otherwise.
fn admit<S, H, F>(gate: &Arc<Semaphore>, mut stream: S, limits: Limits, handle: H)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: FnOnce(Result<Request, HttpError>) -> F + Send + 'static,
    F: Future<Output = Response> + Send,
{
    let deadline = limits.read_deadline;
    let Ok(permit) = gate.clone().try_acquire_owned() else {
        debug!(
            "connection refused: {} already served",
            limits.max_connections
        );
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let busy = Response::text(503, "too many connections; try again\n");
            let _ = tokio::time::timeout(deadline, async {
                busy.write_to(&mut stream).await?;
                stream.shutdown().await?;
                // Take (and drop) what the client sent, a bounded amount: closing with
                // unread data would reset the connection before it reads the answer.
                let mut sink = [0u8; 1024];
                let mut left = http::MAX_HEAD_LEN;
                while left > 0 {
                    let n = stream.read(&mut sink).await?;
                    if n == 0 {
                        break;
                    }
                    left = left.saturating_sub(n);
                }
                std::io::Result::Ok(())
            })
            .await;
        });
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let request = tokio::time::timeout(deadline, http::read_request(&mut stream))
            .await
            .unwrap_or(Err(HttpError::Timeout));
        let response = handle(request).await;
        let _ = tokio::time::timeout(deadline, response.write_to(&mut stream)).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// A loopback listener that answers 200 with the path, or 400 with the error.
    async fn start(limits: Limits) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(tcp(listener, limits, "test", |req, _| async move {
            match req {
                Ok(r) => Response::text(200, r.path),
                Err(e) => Response::text(400, e.to_string()),
            }
        }));
        addr
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn an_idle_client_is_cut_off_at_the_deadline() {
        let limits = Limits {
            max_connections: 4,
            read_deadline: Duration::from_millis(200),
        };
        let addr = start(limits).await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET /slow HTTP/1.1\r\n").await.unwrap();
        let mut out = String::new();
        let read = tokio::time::timeout(Duration::from_secs(5), idle.read_to_string(&mut out))
            .await
            .expect("the router closed the idle connection");
        read.unwrap();
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        assert!(out.contains("timed out"), "{out}");
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_answered_busy_and_slots_come_back() {
        let limits = Limits {
            max_connections: 2,
            read_deadline: Duration::from_secs(2),
        };
        let addr = start(limits).await;
        let held: Vec<TcpStream> = vec![
            TcpStream::connect(addr).await.unwrap(),
            TcpStream::connect(addr).await.unwrap(),
        ];
        tokio::time::sleep(Duration::from_millis(50)).await;
        let busy = get(addr, "/third").await;
        assert!(busy.starts_with("HTTP/1.1 503"), "{busy}");
        // Once the idle ones are cut off, requests are served again.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        drop(held);
        let ok = get(addr, "/again").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.ends_with("/again"), "{ok}");
    }
}
