//! Traffic between pods for the data-plane tests: single pings, ping series with their
//! loss, and TCP transfers checked end to end. Sockets are opened inside the pod
//! namespaces by the test process itself (`datapath::netns::run_in`), so nothing but
//! `ping` is spawned here.

use super::netns::Net;
use blake2::{Blake2s256, Digest};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

/// One ping (2 s deadline) from namespace `ns` to `addr` (IPv4 or IPv6).
pub fn ping(net: &Net, ns: &str, addr: &str) -> bool {
    let v6 = if addr.contains(':') { "-6" } else { "-4" };
    net.exec(ns, "ping", &[v6, "-c", "1", "-W", "2", "-q", addr])
        .status
        .success()
}

/// What a `ping -c N` series reported.
#[derive(Debug, Clone)]
pub struct PingSeries {
    /// Echo requests sent.
    pub transmitted: u32,
    /// Echo replies received.
    pub received: u32,
    /// The whole output, for failure messages.
    pub output: String,
}

impl PingSeries {
    /// Requests that got no reply.
    pub fn lost(&self) -> u32 {
        self.transmitted.saturating_sub(self.received)
    }
}

/// Runs `ping -4 -c count -i interval -W 1 [extra...] addr` in `ns` (`-6` for an IPv6
/// `addr`) and parses the summary line. Panics if ping printed no summary (it did not
/// run).
pub fn ping_series(
    net: &Net,
    ns: &str,
    addr: &str,
    count: u32,
    interval: &str,
    extra: &[&str],
) -> PingSeries {
    let count_s = count.to_string();
    let family = if addr.contains(':') { "-6" } else { "-4" };
    let mut args = vec![family, "-c", &count_s, "-i", interval, "-W", "1", "-q"];
    args.extend_from_slice(extra);
    args.push(addr);
    let secs = f64::from(count) * interval.parse::<f64>().unwrap_or(1.0) + 30.0;
    let out = net.exec_for(ns, "ping", &args, Duration::from_secs_f64(secs));
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_ping_summary(&output)
        .map(|(transmitted, received)| PingSeries {
            transmitted,
            received,
            output: output.clone(),
        })
        .unwrap_or_else(|| panic!("ping {args:?} in {ns} printed no summary:\n{output}"))
}

/// `N packets transmitted, M received, ...` -> (N, M).
pub fn parse_ping_summary(text: &str) -> Option<(u32, u32)> {
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut parts = line.split(',');
    let tx = parts.next()?.split_whitespace().next()?.parse().ok()?;
    let rx = parts.next()?.split_whitespace().next()?.parse().ok()?;
    Some((tx, rx))
}

/// Pseudo-random bytes (xorshift64), so that the data is not compressible or uniform.
pub fn fill(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let bytes = state.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// Sends what `produce` writes (it is called with a buffer until it returns 0) from pod
/// namespace `from` over TCP to `to_addr:port` in pod namespace `to`. Returns the
/// BLAKE2s of what was sent, of what arrived, and the number of bytes that arrived.
/// `keep` is called with every received chunk (to look at the data).
pub fn tcp_send(
    from: &str,
    to: &str,
    to_addr: &str,
    port: u16,
    mut produce: impl FnMut(&mut [u8]) -> usize + Send,
    mut keep: impl FnMut(&[u8]) + Send,
) -> ([u8; 32], [u8; 32], usize) {
    let to_ns = datapath::netns::NetnsRef::Name(to.to_string());
    let from_ns = datapath::netns::NetnsRef::Name(from.to_string());
    let server_file = to_ns.open().expect("open server netns");
    let client_file = from_ns.open().expect("open client netns");
    let addr = if to_addr.contains(':') {
        format!("[{to_addr}]:{port}")
    } else {
        format!("{to_addr}:{port}")
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let server_addr = addr.clone();
        let server = scope.spawn(|| {
            datapath::netns::run_in(&server_file, Path::new(to), move || {
                let listener = TcpListener::bind(&server_addr).expect("bind in pod");
                ready_tx.send(()).expect("signal ready");
                let (mut conn, _) = listener.accept().expect("accept");
                conn.set_read_timeout(Some(Duration::from_secs(60))).ok();
                let mut hash = Blake2s256::new();
                let mut buf = vec![0u8; 1 << 16];
                let mut got = 0usize;
                loop {
                    let n = conn.read(&mut buf).expect("read");
                    if n == 0 {
                        break;
                    }
                    got += n;
                    hash.update(&buf[..n]);
                    keep(&buf[..n]);
                }
                (got, <[u8; 32]>::from(hash.finalize()))
            })
            .expect("server thread")
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server ready");
        let sent = datapath::netns::run_in(&client_file, Path::new(from), move || {
            let mut conn = TcpStream::connect(&addr).expect("connect across the overlay");
            conn.set_write_timeout(Some(Duration::from_secs(60))).ok();
            let mut hash = Blake2s256::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = produce(&mut buf);
                if n == 0 {
                    break;
                }
                conn.write_all(&buf[..n]).expect("write");
                hash.update(&buf[..n]);
            }
            <[u8; 32]>::from(hash.finalize())
        })
        .expect("client thread");
        let (got, received) = server.join().expect("server thread panicked");
        (sent, received, got)
    })
}

/// Sends `total` pseudo-random bytes from pod `from` to `to_addr:5201` in pod `to`;
/// returns the BLAKE2s of what was sent and of what arrived (and checks the length).
pub fn transfer(from: &str, to: &str, to_addr: &str, total: usize) -> ([u8; 32], [u8; 32]) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut left = total;
    let produce = move |buf: &mut [u8]| {
        let n = left.min(buf.len());
        fill(&mut buf[..n], &mut state);
        left -= n;
        n
    };
    let (sent, received, got) = tcp_send(from, to, to_addr, 5201, produce, |_| {});
    assert_eq!(got, total, "bytes received");
    (sent, received)
}

/// Occurrences of `needle` in `hay` (overlapping ones included).
pub fn count(hay: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() || hay.len() < needle.len() {
        return 0;
    }
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Waits (up to 10 s) until something listens on TCP `port` in namespace `ns` (`ss`), so
/// a client started next finds its server even on a loaded machine; panics otherwise.
pub fn wait_listening(net: &Net, ns: &str, port: u16) {
    let filter = format!("sport = :{port}");
    let up = super::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let out = net.exec(ns, "ss", &["-Hltn", &filter]);
        out.status.success() && !out.stdout.is_empty()
    });
    assert!(
        up.is_some(),
        "nothing listens on TCP {port} in {ns} after 10 s"
    );
}
