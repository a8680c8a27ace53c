//! A stand-in for the router's IPAM API on `<run dir>/weft.sock`, following the
//! contract weft-net codes against, so that the router-IPAM paths run before the real
//! API is merged. Addresses come from 10.40.1.0 upwards.
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[derive(Default)]
pub struct State {
    pub ready: bool,
    pub next: u32,
    pub allocs: Vec<(String, String)>,
}

pub struct FakeRouter {
    path: PathBuf,
    pub state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeRouter {
    pub fn start(run_dir: &Path) -> FakeRouter {
        std::fs::create_dir_all(run_dir).unwrap();
        let path = run_dir.join("weft.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let state = Arc::new(Mutex::new(State {
            ready: true,
            next: 256,
            allocs: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let st = st.clone();
                    std::thread::spawn(move || serve(conn, &st));
                }
            }
        });
        FakeRouter {
            path,
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn held(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().allocs.clone()
    }
}

impl Drop for FakeRouter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(mut conn: UnixStream, state: &Mutex<State>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, len) = loop {
        let Ok(n) = conn.read(&mut chunk) else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, len);
        }
    };
    while buf.len() < head_end + len {
        let Ok(n) = conn.read(&mut chunk) else { return };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let line = head.lines().next().unwrap_or_default().to_string();
    let body: Value = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
    let (status, answer) = handle(&line, &body, state);
    let text = answer.to_string();
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    );
}

fn handle(line: &str, body: &Value, state: &Mutex<State>) -> (u16, Value) {
    let mut st = state.lock().unwrap();
    let id = body["id"].as_str().unwrap_or_default().to_string();
    match line.split(' ').take(2).collect::<Vec<_>>()[..] {
        ["GET", "/ipam"] => {
            let allocs: Vec<Value> = st
                .allocs
                .iter()
                .map(|(i, a)| json!({"id": i, "addr": a}))
                .collect();
            let status = if st.ready {
                "ready"
            } else {
                "waiting for consensus"
            };
            (
                200,
                json!({"status": status, "range": "10.40.0.0/16", "allocations": allocs}),
            )
        }
        _ if !st.ready => (503, json!({"error": "IPAM not ready"})),
        ["POST", "/ipam/allocate"] => {
            if let Some((_, a)) = st.allocs.iter().find(|(i, _)| *i == id) {
                return (200, json!({"addr": a}));
            }
            st.next += 1;
            let n = st.next;
            let addr = format!("10.40.{}.{}/16", n / 256, n % 256);
            st.allocs.push((id, addr.clone()));
            (200, json!({"addr": addr}))
        }
        ["POST", "/ipam/claim"] => {
            let addr = body["addr"].as_str().unwrap_or_default().to_string();
            match st.allocs.iter().find(|(_, a)| *a == addr) {
                Some((i, _)) if *i != id => {
                    (409, json!({"error": format!("{addr} is held by {i}")}))
                }
                Some(_) => (200, json!({"addr": addr})),
                None => {
                    st.allocs.push((id, addr.clone()));
                    (200, json!({"addr": addr}))
                }
            }
        }
        ["POST", "/ipam/release"] => {
            let only = body["addr"].as_str().map(str::to_string);
            let mut released = Vec::new();
            st.allocs.retain(|(i, a)| {
                let hit = *i == id && only.as_ref().is_none_or(|o| o == a);
                if hit {
                    released.push(a.clone());
                }
                !hit
            });
            (200, json!({"released": released}))
        }
        _ => (404, json!({"error": "not found"})),
    }
}
