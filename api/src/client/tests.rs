//! The client against canned answers, a missing router and a silent one.

use super::*;
use std::time::Instant;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-api-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A router that answers one connection with `answer`, after reading the request.
fn one_shot(dir: &Path, answer: &'static [u8]) -> std::thread::JoinHandle<Vec<u8>> {
    let listener = std::os::unix::net::UnixListener::bind(paths::socket_path(dir)).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut req = Vec::new();
        let mut chunk = [0u8; 4096];
        // The whole request: its head, then Content-Length bytes of body.
        loop {
            let n = s.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            req.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&req).to_ascii_lowercase();
            let Some(end) = text.find("\r\n\r\n") else {
                continue;
            };
            let len: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if req.len() >= end + 4 + len {
                break;
            }
        }
        s.write_all(answer).unwrap();
        req
    })
}

#[test]
fn parses_answers() {
    let (s, b) =
        parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 23\r\n\r\n{\"addr\":\"10.40.0.2/16\"}")
            .unwrap();
    assert_eq!(s, 200);
    let a: AddrAnswer = serde_json::from_slice(&b).unwrap();
    assert_eq!(a.addr, "10.40.0.2/16");
    let (s, b) = parse_response(
        b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!((s, b.as_slice()), (409, &b"{\"a\":1}"[..]));
    assert!(parse_response(b"garbage").is_err());
    assert!(parse_response(b"HTTP/1.1 99 X\r\n\r\n").is_err());
    assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
}

#[test]
fn error_messages_come_from_json_or_text() {
    assert_eq!(error_message(b"{\"error\":\"in use\"}"), "in use");
    assert_eq!(
        error_message(b"no such endpoint: GET /x\n"),
        "no such endpoint: GET /x"
    );
}

#[test]
fn typed_call_and_status_errors() {
    let dir = temp_dir("typed");
    let router = one_shot(
        &dir,
        b"HTTP/1.1 200 OK\r\nContent-Length: 23\r\n\r\n{\"addr\":\"10.40.0.2/16\"}",
    );
    let c = Client::new(&dir).timeout(Duration::from_secs(5));
    assert_eq!(c.ipam_allocate("a:eth0", None).unwrap(), "10.40.0.2/16");
    let req = String::from_utf8(router.join().unwrap()).unwrap();
    assert!(req.starts_with("POST /ipam/allocate HTTP/1.1\r\n"), "{req}");
    assert!(req.ends_with("\r\n\r\n{\"id\":\"a:eth0\"}"), "{req}");

    std::fs::remove_file(paths::socket_path(&dir)).unwrap();
    let router = one_shot(
        &dir,
        b"HTTP/1.1 409 Conflict\r\nContent-Length: 18\r\n\r\n{\"error\":\"in use\"}",
    );
    match c.ipam_claim("a:eth0", "10.40.0.2/16") {
        Err(ClientError::Status { code: 409, message }) => assert_eq!(message, "in use"),
        other => panic!("{other:?}"),
    }
    router.join().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_too_long_answer_is_refused() {
    let dir = temp_dir("long");
    let router = one_shot(
        &dir,
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
    );
    let c = Client::new(&dir).max_response(20);
    assert!(matches!(
        c.get_text("/ps"),
        Err(ClientError::Malformed { .. })
    ));
    router.join().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn no_router_is_not_running_and_fails_fast() {
    let c = Client::new(Path::new("/nonexistent-weft-run")).timeout(Duration::from_millis(500));
    let start = Instant::now();
    let e = c.ipam_list().unwrap_err();
    assert!(matches!(e, ClientError::NotRunning { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "router not running (no socket at /nonexistent-weft-run/weft.sock); start it with `weft launch`"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_silent_router_times_out() {
    let dir = temp_dir("silent");
    // Accepts connections (the kernel backlog does) but never answers.
    let _listener = std::os::unix::net::UnixListener::bind(paths::socket_path(&dir)).unwrap();
    let c = Client::new(&dir).timeout(Duration::from_millis(300));
    let start = Instant::now();
    let e = c.ipam_release("a:eth0", None).unwrap_err();
    assert!(matches!(e, ClientError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("timed out"), "{e}");
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
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..5000 {
        let mut data = seed.to_vec();
        for _ in 0..(1 + i % 6) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let pos = (state as usize) % data.len().max(1);
            if let Some(b) = data.get_mut(pos) {
                *b = (state >> 40) as u8;
            }
        }
        data.truncate((state as usize >> 8) % (data.len() + 1));
        fuzz_response(&data);
    }
}
