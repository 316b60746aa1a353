//! Fake Jetstream: a server that speaks the Jetstream v1 `/subscribe` WebSocket protocol,
//! for the ingestor's integration tests (in-process), the `fake-jetstream` CLI subcommand
//! (users testing their consumers offline) and the demo.
//!
//! It serves either a file of JSON lines (verbatim, in file order: malformed lines included,
//! so consumers can be tested against them) or generated live events, with the real
//! protocol's query parameters (`wantedCollections`, `wantedDids`, `cursor`, `compress`,
//! `requireHello`, `maxMessageSizeBytes`), `options_update` messages, zstd frames with the
//! Jetstream v1 dictionary (the one embedded in the reader, unless another file is given),
//! ping/pong and backpressure. The server runs on its own thread with
//! its own tokio runtime, so it works from any test (actix or not) and any thread.
//!
//! It also misbehaves on request, the way public hosts do: its own clock (`clock_offset_us`
//! shifts every `time_us` it serves and the cursors it is given are read in that clock), a
//! limited retention (older cursors are clamped to its oldest event, silently), going silent
//! after N events (no events, no pongs, socket kept open), ignoring `maxMessageSizeBytes`.
//!
//! Layout: `server` (accept loop, HTTP checks, connection records), `session` (one
//! subscriber), `filter` (query and `options_update`), `feed` (file lines and per-connection
//! position), `clock` (the host's own clock), `live` (generate mode's ring buffer and
//! producer), `generate`, `posts` and `ids` (the events themselves), `http` (request heads
//! and error responses).
//!
//! Failure: [`FakeJetstream::start`] fails with an `io::Error` when the config is invalid,
//! the address cannot be bound, or the source file or dictionary cannot be read. After that,
//! a failing connection ends only itself (see [`ConnectionEnd`]); the server stops only on
//! [`FakeJetstream::shutdown`] or drop.

mod clock;
mod feed;
mod filter;
mod generate;
mod http;
mod ids;
mod live;
mod posts;
mod server;
mod session;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

pub use generate::generate_corpus;

/// How to run a fake Jetstream.
#[derive(Debug, Clone)]
pub struct FakeJetstreamConfig {
    /// Address to listen on; `127.0.0.1:0` picks a free port (read it back with
    /// [`FakeJetstream::addr`]).
    pub listen: SocketAddr,
    /// Where events come from.
    pub source: Source,
    /// Pacing of every connection in events per second; `None` sends as fast as the client
    /// reads.
    pub rate: Option<u32>,
    /// After this many events on a connection, the server sends a Close frame (1000) and
    /// closes it: exercises the consumer's reconnect and cursor resume.
    pub close_every: Option<u64>,
    /// File mode: close (1000) after the last line instead of idling with the socket open.
    pub close_at_end: bool,
    /// A zstd dictionary file to compress with instead of the Jetstream v1 dictionary
    /// embedded in the reader (`actors::jetstream::config::JETSTREAM_V1_ZSTD_DICTIONARY`),
    /// which `None` uses: `compress=true` subscribers always get zstd frames, as from real
    /// Jetstream.
    pub zstd_dictionary: Option<PathBuf>,
    /// This server's clock minus the source's, in µs: every `time_us` served is shifted by it
    /// (rewritten in the frame), and cursors are read in the shifted clock. Two servers with
    /// different offsets behave like two Jetstream hosts with different clocks.
    pub clock_offset_us: i64,
    /// After this many events on a connection, stop sending and stop answering pings, with
    /// the socket left open: a silent host, for idle-timeout and failover tests.
    pub silent_after: Option<u64>,
    /// Keep only events this recent (measured back from the newest; generate mode: 5 min by
    /// default). A cursor older than the oldest kept event starts at that event, silently,
    /// as real Jetstream does.
    pub retention: Option<Duration>,
    /// Honour `maxMessageSizeBytes` (skip bigger frames for that subscriber), as Jetstream
    /// does; off simulates a host that ignores it.
    pub honor_max_message_size: bool,
    /// Resume this much earlier than the cursor asked for: a host that replays more than
    /// asked (Jetstream v2 with a time cursor may start up to an hour early).
    pub resume_early: Option<Duration>,
}

impl FakeJetstreamConfig {
    /// A config on `127.0.0.1:0` with no pacing, no forced closes, the embedded dictionary,
    /// the source's own clock, full retention and no silence.
    pub fn new(source: Source) -> FakeJetstreamConfig {
        FakeJetstreamConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            source,
            rate: None,
            close_every: None,
            close_at_end: false,
            zstd_dictionary: None,
            clock_offset_us: 0,
            silent_after: None,
            retention: None,
            honor_max_message_size: true,
            resume_early: None,
        }
    }
}

impl Default for FakeJetstreamConfig {
    /// [`FakeJetstreamConfig::new`] with an empty source (serves nothing): a base for
    /// `FakeJetstreamConfig { source, ..Default::default() }`.
    fn default() -> Self {
        FakeJetstreamConfig::new(Source::Lines(Vec::new()))
    }
}

/// Where a fake Jetstream's events come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file of Jetstream JSON lines, loaded once at start and served verbatim in file order
    /// (from the first line with `time_us >= cursor` when a cursor is given). Lines that are
    /// not events are served too, and travel with the event before them (for the cursor and
    /// the filters); lines that are not UTF-8 go out as binary frames; empty lines are skipped.
    File(PathBuf),
    /// The same, from memory: each string is one line (or several, separated by `\n`).
    Lines(Vec<String>),
    /// Live generated events at `rate` per second, deterministic for `seed` apart from their
    /// times (the wall clock). The last five minutes (at most 600,000 events) can be replayed
    /// with a cursor; without one, a subscriber starts at the next event.
    Generate { rate: u32, seed: u64 },
}

/// How a subscription ended (or that it has not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEnd {
    /// Still running.
    Open,
    /// Refused before the upgrade, e.g. 400 for a bad cursor.
    Rejected { status: u16, message: String },
    /// The WebSocket handshake failed.
    HandshakeFailed(String),
    /// The subscriber closed (with this close code, if it sent one) or went away.
    ClientClosed { code: Option<u16> },
    /// The server closed it after `close_every` events.
    CloseEvery,
    /// The server closed it after the last line (`close_at_end`).
    EndOfFile,
    /// The server went silent after `silent_after` events (the socket stayed open until the
    /// subscriber went away or the server shut down).
    Silent,
    /// The server shut down.
    Shutdown,
    /// A socket or protocol error.
    Error(String),
}

/// One `/subscribe` request the server received (including those it refused with a 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    /// The request target: path and query, as sent.
    pub uri: String,
    /// The `cursor` parameter.
    pub cursor: Option<u64>,
    /// The `wantedCollections` parameters, as sent (later `options_update`s not included).
    pub wanted_collections: Vec<String>,
    /// The `wantedDids` parameters, as sent.
    pub wanted_dids: Vec<String>,
    /// Whether zstd was asked for (`compress=true` or `Socket-Encoding: zstd`).
    pub compress: bool,
    pub require_hello: bool,
    /// Valid `options_update` messages applied.
    pub options_updates: u64,
    /// For each filter change (`options_update`, the hello included), how many events had
    /// been sent on this connection when it took effect: what came after obeys it.
    pub filter_changes_at: Vec<u64>,
    /// Events sent on this connection.
    pub events_sent: u64,
    pub end: ConnectionEnd,
}

/// A running fake Jetstream. Dropping it shuts it down.
pub struct FakeJetstream {
    addr: SocketAddr,
    shared: Arc<server::Shared>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeJetstream {
    /// Loads the source, binds the address and starts serving on a thread of its own with
    /// its own tokio runtime. Returns once the socket is listening.
    pub fn start(cfg: FakeJetstreamConfig) -> io::Result<FakeJetstream> {
        if cfg.rate == Some(0) {
            return Err(invalid("rate must be at least 1 event/s"));
        }
        if cfg.close_every == Some(0) {
            return Err(invalid("close_every must be at least 1"));
        }
        if cfg.silent_after == Some(0) {
            return Err(invalid("silent_after must be at least 1"));
        }
        let retention_us = cfg
            .retention
            .map(|r| u64::try_from(r.as_micros()).unwrap_or(u64::MAX));
        let offset = cfg.clock_offset_us;
        let (source, generator) = match &cfg.source {
            Source::File(path) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("reading {}: {e}", path.display()))
                })?;
                let lines = feed::lines_from_bytes(&bytes, offset);
                (
                    feed::SourceData::File(Arc::new(feed::retain(lines, retention_us))),
                    None,
                )
            }
            Source::Lines(lines) => {
                let lines = feed::lines_from_strings(lines, offset);
                (
                    feed::SourceData::File(Arc::new(feed::retain(lines, retention_us))),
                    None,
                )
            }
            Source::Generate { rate: 0, .. } => {
                return Err(invalid("generate rate must be at least 1 event/s"));
            }
            Source::Generate { rate, seed } => (
                feed::SourceData::Live(Arc::new(live::LiveHub::new(retention_us))),
                Some((*rate, *seed)),
            ),
        };
        let dictionary = match &cfg.zstd_dictionary {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("reading {}: {e}", path.display()))
                })?;
                zstd::dict::EncoderDictionary::try_copy(&bytes, 3)?
            }
            None => zstd::dict::EncoderDictionary::try_copy(
                actors::jetstream::config::JETSTREAM_V1_ZSTD_DICTIONARY,
                3,
            )?,
        };
        let shared = Arc::new(server::Shared::default());
        let ctx = Arc::new(server::ServerCtx {
            source,
            generator,
            rate: cfg.rate,
            close_every: cfg.close_every,
            close_at_end: cfg.close_at_end,
            dictionary,
            clock_offset_us: offset,
            silent_after: cfg.silent_after,
            honor_max_message_size: cfg.honor_max_message_size,
            resume_early_us: cfg
                .resume_early
                .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            shared: Arc::clone(&shared),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("fake-jetstream")
            .build()?;
        let std_listener = std::net::TcpListener::bind(cfg.listen)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let listener = {
            let _in_runtime = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };
        let (stop, stop_rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name(format!("fake-jetstream-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(server::run(listener, ctx, stop_rx));
                runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            })?;
        info!(%addr, "fake jetstream listening");
        Ok(FakeJetstream {
            addr,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The subscribe URL, `ws://HOST:PORT/subscribe`.
    pub fn url(&self) -> String {
        format!("ws://{}/subscribe", self.addr)
    }

    /// Every `/subscribe` request received so far, in arrival order.
    pub fn connections(&self) -> Vec<ConnectionRecord> {
        self.shared.snapshot()
    }

    /// Events sent so far, over all connections.
    pub fn events_sent(&self) -> u64 {
        self.shared.events_sent.load(Ordering::Relaxed)
    }

    /// Stops accepting, closes every session (Close 1001) and joins the server thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.send_replace(true);
        if thread.join().is_err() {
            error!(addr = %self.addr, "fake jetstream thread panicked");
        }
    }
}

impl Drop for FakeJetstream {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.to_owned())
}

/// Runs a fake Jetstream until ctrl-c, then shuts it down (for the CLI). Blocking.
pub fn serve_until_ctrl_c(cfg: FakeJetstreamConfig) -> io::Result<()> {
    let server = FakeJetstream::start(cfg)?;
    info!(url = %server.url(), "fake jetstream serving; ctrl-c to stop");
    eprintln!("fake jetstream: {} (ctrl-c to stop)", server.url());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signal = runtime.block_on(tokio::signal::ctrl_c());
    if let Err(err) = &signal {
        warn!(%err, "cannot wait for ctrl-c");
    }
    info!(
        events_sent = server.events_sent(),
        "fake jetstream stopping"
    );
    server.shutdown();
    signal
}
