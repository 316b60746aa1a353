//! A fake HTTP host on 127.0.0.1:0 playing a PDS (`/xrpc/com.atproto.sync.getRecord`) or a
//! PLC directory (`/{did}`), with scripted faults: statuses, `Retry-After`, slowness. One
//! thread per connection, `Connection: close`; request counts per route for assertions.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with a CAR body.
    Car(Vec<u8>),
    /// 200 with a JSON body.
    Json(String),
    /// Any status with extra headers and a body.
    Status(u16, Vec<(String, String)>, String),
    /// Wait, then answer.
    Slow(Duration, Box<Reply>),
}

#[derive(Default)]
struct State {
    defaults: HashMap<String, Reply>,
    scripted: HashMap<String, VecDeque<Reply>>,
    /// The answer to routes with no default of their own (else a 404 as the real hosts give).
    fallback: Option<Reply>,
    hits: HashMap<String, u64>,
}

pub struct FakeHttp {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

/// The route key of a getRecord request: `did/collection/rkey`.
pub fn record_route(did: &str, collection: &str, rkey: &str) -> String {
    format!("getRecord:{did}/{collection}/{rkey}")
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn route_of(target: &str) -> String {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path == "/xrpc/com.atproto.sync.getRecord" {
        let params: HashMap<String, String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), percent_decode(v)))
            .collect();
        let get = |k: &str| params.get(k).cloned().unwrap_or_default();
        record_route(&get("did"), &get("collection"), &get("rkey"))
    } else {
        percent_decode(path.trim_start_matches('/'))
    }
}

impl FakeHttp {
    pub fn start() -> FakeHttp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve(conn, &st));
            }
        });
        FakeHttp { addr, state, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The answer to `route` from now on (after any scripted ones).
    pub fn set(&self, route: &str, reply: Reply) {
        self.state
            .lock()
            .unwrap()
            .defaults
            .insert(route.to_owned(), reply);
    }

    /// Answers given once each, in order, before the default.
    pub fn script(&self, route: &str, replies: Vec<Reply>) {
        self.state
            .lock()
            .unwrap()
            .scripted
            .insert(route.to_owned(), replies.into());
    }

    /// The answer to every route without one of its own.
    pub fn set_fallback(&self, reply: Reply) {
        self.state.lock().unwrap().fallback = Some(reply);
    }

    pub fn hits(&self, route: &str) -> u64 {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(route)
            .copied()
            .unwrap_or(0)
    }

    pub fn total_hits(&self) -> u64 {
        self.state.lock().unwrap().hits.values().sum()
    }
}

impl Drop for FakeHttp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(mut conn: TcpStream, state: &Mutex<State>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let route = route_of(&target);
    let reply = {
        let mut s = state.lock().unwrap();
        *s.hits.entry(route.clone()).or_default() += 1;
        let scripted = s.scripted.get_mut(&route).and_then(VecDeque::pop_front);
        scripted
            .or_else(|| s.defaults.get(&route).cloned())
            .or_else(|| s.fallback.clone())
    };
    let reply = reply.unwrap_or_else(|| {
        // As the real ones answer: an XRPC error name from a PDS, a bare message from PLC.
        let body = if route.starts_with("getRecord:") {
            r#"{"error":"RecordNotFound","message":"Could not locate record"}"#
        } else {
            r#"{"message":"DID not registered"}"#
        };
        Reply::Status(404, vec![], body.to_owned())
    });
    respond(&mut conn, reply);
}

fn respond(conn: &mut TcpStream, reply: Reply) {
    let (status, headers, body, kind) = match reply {
        Reply::Car(b) => (200, vec![], b, "application/vnd.ipld.car"),
        Reply::Json(j) => (200, vec![], j.into_bytes(), "application/json"),
        Reply::Status(s, h, b) => (s, h, b.into_bytes(), "application/json"),
        Reply::Slow(d, inner) => {
            std::thread::sleep(d);
            return respond(conn, *inner);
        }
    };
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&body);
    let _ = conn.flush();
}
