//! The fault suite's tooling (`tests/faults_*.rs`): a seeded TCP fault proxy, and the few
//! helpers every fault test shares (sizing, the exactly-once and cursor-not-ahead checks,
//! the peak memory of a process).
//!
//! [`FaultProxy`] listens on `127.0.0.1:0` in front of one upstream (Redis, or the fake
//! Jetstream) and forwards bytes both ways, on a thread of its own with its own tokio
//! runtime, so it works from any test. On request it misbehaves the way networks do:
//! - [`FaultProxy::reset_all`]: every current connection is aborted with a RST on both sides
//!   (`SO_LINGER 0`, then close);
//! - [`FaultProxy::close_all`]: every current connection gets a clean FIN on both sides;
//! - [`FaultProxy::stall`]: stop forwarding (sockets kept, nothing lost) until unstalled:
//!   congestion, or a peer that stopped reading;
//! - [`FaultProxy::blackhole_current`]: the current connections silently swallow everything,
//!   both ways, while their sockets stay open (a dead path); new connections work;
//! - [`FaultProxy::slow`]: forward at most so many bytes per second, each way;
//! - [`FaultProxy::cut_after`]: after N more bytes towards the client (over all connections),
//!   the connection carrying byte N is reset, mid-message;
//! - [`FaultProxy::refuse`]: new connections are reset as soon as they are accepted.
//!
//! Deterministic from its seed: with [`FaultProxy::fragment`] on, every forwarded chunk is
//! split into seeded pieces (exercising partial reads), and [`plan`] draws a fault sequence
//! from a seed. toxiproxy and tc netem are not available on our machines; this needs neither.
//!
//! Failure: `start` panics if it cannot bind or spawn (a test setup error). A connection
//! whose upstream cannot be reached is reset (counted in `upstream_failures`); nothing else
//! stops the proxy before it is dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{RngExt as _, SeedableRng as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What happens to a connection from the outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    Alive,
    Reset,
    Close,
}

struct Conn {
    kill: watch::Sender<Kill>,
    blackholed: Arc<AtomicBool>,
}

/// Counters of a proxy, as of the call.
#[derive(Debug, Clone, Default)]
pub struct ProxyStats {
    /// Connections accepted and forwarded (not those refused).
    pub accepted: u64,
    /// Connections reset at accept because `refuse` was on.
    pub refused: u64,
    /// Connections reset because the upstream could not be reached.
    pub upstream_failures: u64,
    /// Connections currently open.
    pub active: usize,
    /// Connections aborted by `reset_all` or `cut_after`.
    pub resets: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

struct Ctl {
    upstream: SocketAddr,
    stalled: watch::Sender<bool>,
    refuse: AtomicBool,
    fragment: AtomicBool,
    /// Bytes per second each way; 0 = unlimited.
    rate: AtomicU64,
    /// Bytes towards the client still allowed before the one-shot cut.
    cut_budget: Mutex<Option<u64>>,
    conns: Mutex<HashMap<u64, Conn>>,
    next_id: AtomicU64,
    rng: Mutex<rand::rngs::StdRng>,
    /// When each connection attempt arrived (accepted or refused).
    attempts: Mutex<Vec<Instant>>,
    accepted: AtomicU64,
    refused: AtomicU64,
    upstream_failures: AtomicU64,
    resets: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

/// A running proxy; dropping it stops it and closes every connection.
pub struct FaultProxy {
    addr: SocketAddr,
    ctl: Arc<Ctl>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy on `127.0.0.1:0` forwarding to `upstream`, its randomness seeded by `seed`.
    pub fn start(upstream: SocketAddr, seed: u64) -> FaultProxy {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("proxy runtime");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("proxy address");
        let listener = {
            let _in = runtime.enter();
            TcpListener::from_std(std_listener).expect("tokio listener")
        };
        let ctl = Arc::new(Ctl {
            upstream,
            stalled: watch::Sender::new(false),
            refuse: AtomicBool::new(false),
            fragment: AtomicBool::new(false),
            rate: AtomicU64::new(0),
            cut_budget: Mutex::new(None),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
            attempts: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            upstream_failures: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
        });
        let (stop, stop_rx) = watch::channel(false);
        let run_ctl = Arc::clone(&ctl);
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(accept_loop(listener, run_ctl, stop_rx));
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("proxy thread");
        FaultProxy {
            addr,
            ctl,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://127.0.0.1:PORT` through the proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// `ws://127.0.0.1:PORT/subscribe` through the proxy.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/subscribe", self.addr)
    }

    /// Aborts every current connection with a RST both ways. Returns how many.
    pub fn reset_all(&self) -> usize {
        self.signal_all(Kill::Reset)
    }

    /// Closes every current connection cleanly (FIN both ways). Returns how many.
    pub fn close_all(&self) -> usize {
        self.signal_all(Kill::Close)
    }

    fn signal_all(&self, kill: Kill) -> usize {
        let conns = self.ctl.conns.lock().expect("conns");
        for c in conns.values() {
            c.kill.send_replace(kill);
        }
        conns.len()
    }

    /// Stops (true) or resumes (false) forwarding on every connection, new ones included.
    /// Sockets stay open and nothing is lost: the bytes wait in the kernel buffers.
    pub fn stall(&self, on: bool) {
        self.ctl.stalled.send_replace(on);
    }

    /// The current connections swallow everything from now on, both ways, sockets open.
    /// Returns how many.
    pub fn blackhole_current(&self) -> usize {
        let conns = self.ctl.conns.lock().expect("conns");
        for c in conns.values() {
            c.blackholed.store(true, Ordering::SeqCst);
        }
        conns.len()
    }

    /// At most `bytes_per_second` each way per connection; `None` = full speed.
    pub fn slow(&self, bytes_per_second: Option<u64>) {
        self.ctl
            .rate
            .store(bytes_per_second.unwrap_or(0), Ordering::SeqCst);
    }

    /// One shot: after `bytes` more bytes towards the client, the connection that carries
    /// the next one is reset (the bytes before it are delivered, the rest never is).
    pub fn cut_after(&self, bytes: u64) {
        *self.ctl.cut_budget.lock().expect("cut") = Some(bytes);
    }

    /// Whether a cut is still armed.
    pub fn cut_pending(&self) -> bool {
        self.ctl.cut_budget.lock().expect("cut").is_some()
    }

    /// New connections are reset at accept (true) or forwarded (false).
    pub fn refuse(&self, on: bool) {
        self.ctl.refuse.store(on, Ordering::SeqCst);
    }

    /// Splits every forwarded chunk into seeded pieces, written one by one.
    pub fn fragment(&self, on: bool) {
        self.ctl.fragment.store(on, Ordering::SeqCst);
    }

    pub fn stats(&self) -> ProxyStats {
        let c = &self.ctl;
        ProxyStats {
            accepted: c.accepted.load(Ordering::SeqCst),
            refused: c.refused.load(Ordering::SeqCst),
            upstream_failures: c.upstream_failures.load(Ordering::SeqCst),
            active: c.conns.lock().expect("conns").len(),
            resets: c.resets.load(Ordering::SeqCst),
            bytes_up: c.bytes_up.load(Ordering::SeqCst),
            bytes_down: c.bytes_down.load(Ordering::SeqCst),
        }
    }

    /// Arrival times of every connection attempt so far (accepted or refused).
    pub fn attempts(&self) -> Vec<Instant> {
        self.ctl.attempts.lock().expect("attempts").clone()
    }

    /// Applies one planned fault: `Close`, `Reset`, `Blackhole` act at once; `Cut` arms the
    /// cut; `Stall` starts the stall (the caller ends it with `stall(false)` after its
    /// duration). Returns the number of connections hit (0 for `Cut`).
    pub fn apply(&self, fault: Fault) -> usize {
        match fault {
            Fault::Close => self.close_all(),
            Fault::Reset => self.reset_all(),
            Fault::Blackhole => self.blackhole_current(),
            Fault::Cut { after_bytes } => {
                self.cut_after(after_bytes);
                0
            }
            Fault::Stall { .. } => {
                self.stall(true);
                self.stats().active
            }
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A connection fault, for seeded plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Clean close (FIN) of the current connections.
    Close,
    /// RST of the current connections.
    Reset,
    /// The current connections go silent both ways, sockets open.
    Blackhole,
    /// A RST after this many more bytes towards the client (mid-message, usually).
    Cut { after_bytes: u64 },
    /// Nothing forwarded for this long, then everything (a congested link, not a dead one).
    Stall { ms: u64 },
}

/// `n` faults drawn from `seed`, cycling through the five kinds in a seeded order so each
/// appears about `n / 5` times; cut points are drawn in `1..max_cut`, stalls in
/// `1..max_stall_ms` milliseconds.
pub fn plan(seed: u64, n: usize, max_cut: u64, max_stall_ms: u64) -> Vec<Fault> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut round = [
            Fault::Close,
            Fault::Reset,
            Fault::Blackhole,
            Fault::Cut { after_bytes: 0 },
            Fault::Stall { ms: 0 },
        ];
        for i in (1..round.len()).rev() {
            round.swap(i, rng.random_range(0..=i));
        }
        for f in round {
            out.push(match f {
                Fault::Cut { .. } => Fault::Cut {
                    after_bytes: rng.random_range(1..max_cut.max(2)),
                },
                Fault::Stall { .. } => Fault::Stall {
                    ms: rng.random_range(1..max_stall_ms.max(2)),
                },
                other => other,
            });
        }
    }
    out.truncate(n);
    out
}

async fn accept_loop(listener: TcpListener, ctl: Arc<Ctl>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((client, _)) = accepted else {
            continue;
        };
        ctl.attempts.lock().expect("attempts").push(Instant::now());
        if ctl.refuse.load(Ordering::SeqCst) {
            ctl.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        ctl.accepted.fetch_add(1, Ordering::SeqCst);
        let id = ctl.next_id.fetch_add(1, Ordering::SeqCst);
        let (kill, kill_rx) = watch::channel(Kill::Alive);
        let blackholed = Arc::new(AtomicBool::new(false));
        ctl.conns.lock().expect("conns").insert(
            id,
            Conn {
                kill,
                blackholed: Arc::clone(&blackholed),
            },
        );
        let conn_ctl = Arc::clone(&ctl);
        let stop = stop.clone();
        tokio::spawn(async move {
            serve(client, &conn_ctl, kill_rx, &blackholed, stop).await;
            conn_ctl.conns.lock().expect("conns").remove(&id);
        });
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Both directions saw EOF and were shut down.
    Done,
    Reset,
    Close,
}

async fn serve(
    mut client: TcpStream,
    ctl: &Ctl,
    mut kill: watch::Receiver<Kill>,
    blackholed: &AtomicBool,
    mut stop: watch::Receiver<bool>,
) {
    let connect = TcpStream::connect(ctl.upstream);
    let mut upstream = match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Ok(Ok(s)) => s,
        _ => {
            ctl.upstream_failures.fetch_add(1, Ordering::SeqCst);
            let _ = client.set_zero_linger();
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let end = {
        let (cr, cw) = client.split();
        let (ur, uw) = upstream.split();
        let mut up = pin!(pump(cr, uw, false, ctl, blackholed));
        let mut down = pin!(pump(ur, cw, true, ctl, blackholed));
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                r = &mut up, if !up_done => match r {
                    Ok(()) => up_done = true,
                    Err(_) => break End::Reset,
                },
                r = &mut down, if !down_done => match r {
                    Ok(()) => down_done = true,
                    Err(_) => break End::Reset,
                },
                k = kill.wait_for(|k| *k != Kill::Alive) => {
                    break match k.map(|k| *k) {
                        Ok(Kill::Close) => End::Close,
                        _ => End::Reset,
                    };
                }
                _ = stop.wait_for(|s| *s) => break End::Close,
            }
            if up_done && down_done {
                break End::Done;
            }
        }
    };
    match end {
        End::Done => {}
        End::Close => {
            let _ = client.shutdown().await;
            let _ = upstream.shutdown().await;
        }
        End::Reset => {
            ctl.resets.fetch_add(1, Ordering::SeqCst);
            let _ = client.set_zero_linger();
            let _ = upstream.set_zero_linger();
        }
    }
}

/// Forwards one direction until EOF (`Ok`, after shutting the writer down) or an error /
/// a cut (`Err`: the connection is then reset).
async fn pump(
    mut from: tokio::net::tcp::ReadHalf<'_>,
    mut to: tokio::net::tcp::WriteHalf<'_>,
    downstream: bool,
    ctl: &Ctl,
    blackholed: &AtomicBool,
) -> std::io::Result<()> {
    let mut stalled = ctl.stalled.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let _ = stalled.wait_for(|s| !*s).await;
        let n = from.read(&mut buf).await?;
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        if blackholed.load(Ordering::SeqCst) {
            continue;
        }
        // A stall that began while we were reading holds this chunk back too.
        let _ = stalled.wait_for(|s| !*s).await;
        let mut data = &buf[..n];
        let mut cut = false;
        if downstream {
            let mut budget = ctl.cut_budget.lock().expect("cut");
            if let Some(b) = *budget {
                if (n as u64) > b {
                    data = &buf[..usize::try_from(b).unwrap_or(n)];
                    *budget = None;
                    cut = true;
                } else {
                    *budget = Some(b - n as u64);
                }
            }
        }
        write_paced(&mut to, data, ctl).await?;
        let counter = if downstream {
            &ctl.bytes_down
        } else {
            &ctl.bytes_up
        };
        counter.fetch_add(data.len() as u64, Ordering::SeqCst);
        if cut {
            return Err(std::io::Error::other("cut"));
        }
    }
}

/// Writes `data`, in seeded pieces when fragmenting and at the configured rate when slowed.
async fn write_paced(
    to: &mut tokio::net::tcp::WriteHalf<'_>,
    mut data: &[u8],
    ctl: &Ctl,
) -> std::io::Result<()> {
    while !data.is_empty() {
        let rate = ctl.rate.load(Ordering::SeqCst);
        let mut piece = data.len();
        if rate > 0 {
            // 20 pieces a second at most, each at least one byte.
            piece = piece.min(usize::try_from(rate / 20).unwrap_or(usize::MAX).max(1));
        }
        if ctl.fragment.load(Ordering::SeqCst) {
            piece = ctl.rng.lock().expect("rng").random_range(1..=piece);
        }
        to.write_all(&data[..piece]).await?;
        data = &data[piece..];
        if rate > 0 {
            tokio::time::sleep(Duration::from_secs_f64(piece as f64 / rate as f64)).await;
        }
    }
    Ok(())
}

// ---- Suite helpers -------------------------------------------------------------------------

/// `JSI_FAULT_SCALE=full`: the full sizes (what `scripts/soak.sh` runs) instead of
/// the CI sizes.
pub fn full_scale() -> bool {
    std::env::var("JSI_FAULT_SCALE").is_ok_and(|v| v == "full")
}

/// `ci` normally, `full` with `JSI_FAULT_SCALE=full`.
pub fn sized(ci: usize, full: usize) -> usize {
    if full_scale() { full } else { ci }
}

/// Follows the job streams under a prefix incrementally (only entries added since the last
/// look are read), to check after every crash that the stored cursor is not ahead of the
/// jobs without re-reading streams that only grow.
pub struct JobTracker {
    prefix: String,
    /// Source identities with their `time_us`, in time order.
    source: Vec<(String, u64)>,
    /// How many of `source` (from the front) are known to be in the streams.
    verified: usize,
    /// Last entry id read per stream.
    last_ids: HashMap<&'static str, String>,
    counts: HashMap<String, usize>,
}

impl JobTracker {
    pub fn new(prefix: &str, source: &[String]) -> JobTracker {
        let mut ids: Vec<(String, u64)> = source
            .iter()
            .filter_map(|l| super::source_identity(l))
            .collect();
        ids.sort_by_key(|(_, t)| *t);
        JobTracker {
            prefix: prefix.to_owned(),
            source: ids,
            verified: 0,
            last_ids: HashMap::new(),
            counts: HashMap::new(),
        }
    }

    fn refresh(&mut self, con: &mut redis::Connection) {
        for stream in ["records", "identity"] {
            let key = format!("{}{stream}", self.prefix);
            loop {
                let from = self
                    .last_ids
                    .get(stream)
                    .map_or_else(|| "-".to_owned(), |id| format!("({id}"));
                let page: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                    .arg(&key)
                    .arg(&from)
                    .arg("+")
                    .arg("COUNT")
                    .arg(5000)
                    .query(con)
                    .expect("XRANGE");
                let n = page.len();
                for (id, fields) in page {
                    let e: HashMap<String, String> = fields.into_iter().collect();
                    *self.counts.entry(super::entry_identity(&e)).or_default() += 1;
                    self.last_ids.insert(stream, id);
                }
                if n < 5000 {
                    break;
                }
            }
        }
    }

    /// The stored cursor is never ahead of the stored jobs: every source event at or before
    /// it is in the job streams, and none twice. Returns the cursor (None: nothing stored).
    pub fn assert_cursor_not_ahead(&mut self, con: &mut redis::Connection) -> Option<u64> {
        let cursor = super::stored_cursor(con, &self.prefix);
        self.refresh(con);
        let dups = self.counts.values().filter(|n| **n > 1).count();
        assert_eq!(dups, 0, "{dups} identities written twice");
        let cursor = cursor?;
        let mut behind = Vec::new();
        for (id, t) in &self.source[self.verified..] {
            if *t > cursor {
                break;
            }
            if !self.counts.contains_key(id) {
                behind.push(id.clone());
            }
        }
        assert!(
            behind.is_empty(),
            "stored cursor {cursor} is ahead of the jobs: {} events at or before it are missing, e.g. {:?}",
            behind.len(),
            behind.first()
        );
        self.verified = self.source.partition_point(|(_, t)| *t <= cursor);
        Some(cursor)
    }
}

/// The peak resident set (`VmHWM`) of a running process, in KiB.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmHWM")
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM` …), in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
