//! `JetstreamReader`: owns the WebSocket. Dials `<endpoint>?…&cursor=` built on every dial from
//! the committed cursor minus the rewind, decodes frames, groups them into numbered batches
//! (size or linger bound) and pushes them downstream. Every batch holds a credit of the
//! in-flight window; when no credit is free the reader stops reading, so backpressure reaches
//! the TCP socket. Before each dial it waits for the window to drain, so the committed cursor
//! it dials from covers everything it ever pushed.
//!
//! Failure: a session ends on close, error, EOF or idle timeout; the reader redials after a
//! full-jitter delay from the shared [`Backoff`] (reset when the session made progress). It
//! runs under `actix::Supervisor`: `Restart` stops it and the supervisor starts it again with
//! the same struct, so cursor, backoff and counters survive (STYLE rule 5).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::{debug, info, warn};

use super::config::ReaderConfig;
use super::decode::{Decoded, decode_frame};
use super::heartbeat::{Heartbeat, Liveness};
use super::subscribe::{source_of, subscribe_url};
use crate::backoff::{Backoff, full_jitter};
use crate::messages::{
    Batch, BatchCommitted, Credit, Drain, GetReaderStatus, Item, Pause, PushBatch, ReaderState,
    ReaderStatus, Restart, Resume,
};
use crate::model::Cursor;

/// Where the first dial starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartCursor {
    /// Redis holds this committed cursor: dial from it minus the rewind.
    Committed(u64),
    /// Dial from exactly this cursor (config `initial_cursor`, `--cursor`, `replay --from`).
    Exact(u64),
    /// Nothing stored, nothing asked: live tail.
    Live,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Run,
    Pause,
    Drain,
}

#[derive(Default)]
struct Counters {
    consecutive_failures: u32,
    last_error: Option<String>,
    events_received: u64,
    dead_letters: u64,
    batches_committed: u64,
    sessions_started: u64,
    backoff_ceiling: Duration,
}

/// State shared between the actor's handlers and its read loop (same thread).
struct Shared {
    committed: Cell<Option<u64>>,
    /// Next dial starts exactly here instead of from the committed cursor.
    dial_override: Cell<Option<u64>>,
    next_seq: Cell<u64>,
    next_session: Cell<u64>,
    current_session: Cell<u64>,
    backoff: RefCell<Backoff>,
    counters: RefCell<Counters>,
    state: watch::Sender<ReaderState>,
    endpoint: RefCell<String>,
}

impl Shared {
    fn set_state(&self, s: ReaderState) {
        self.state.send_replace(s);
    }
}

pub struct JetstreamReader {
    cfg: Arc<ReaderConfig>,
    downstream: Recipient<PushBatch>,
    shared: Rc<Shared>,
    window: Arc<Semaphore>,
    control: watch::Sender<Control>,
}

impl JetstreamReader {
    pub fn new(cfg: ReaderConfig, downstream: Recipient<PushBatch>, start: StartCursor) -> Self {
        let (committed, dial_override) = match start {
            StartCursor::Committed(c) => (Some(c), None),
            StartCursor::Exact(c) => (None, Some(c)),
            StartCursor::Live => (None, None),
        };
        let window = Arc::new(Semaphore::new(cfg.max_in_flight_batches));
        let shared = Rc::new(Shared {
            committed: Cell::new(committed),
            dial_override: Cell::new(dial_override),
            next_seq: Cell::new(1),
            next_session: Cell::new(1),
            current_session: Cell::new(0),
            backoff: RefCell::new(Backoff::new(cfg.backoff_min, cfg.backoff_max)),
            counters: RefCell::new(Counters::default()),
            state: watch::Sender::new(ReaderState::Starting),
            endpoint: RefCell::new(cfg.endpoints.first().cloned().unwrap_or_default()),
        });
        let (control, _) = watch::channel(Control::Run);
        JetstreamReader {
            cfg: Arc::new(cfg),
            downstream,
            shared,
            window,
            control,
        }
    }
}

impl Actor for JetstreamReader {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let lp = ReadLoop {
            cfg: self.cfg.clone(),
            shared: self.shared.clone(),
            window: self.window.clone(),
            downstream: self.downstream.clone(),
            control: self.control.subscribe(),
        };
        ctx.spawn(actix::fut::wrap_future(lp.run()));
    }
}

impl actix::Supervised for JetstreamReader {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        info!(
            next_session = self.shared.next_session.get(),
            "reader restarting"
        );
        metrics::counter!("jetstream_ingestor_reader_restarts_total").increment(1);
    }
}

impl Handler<BatchCommitted> for JetstreamReader {
    type Result = ();

    fn handle(&mut self, msg: BatchCommitted, _ctx: &mut Self::Context) {
        if let Some(c) = msg.cursor {
            let newest = self.shared.committed.get().map_or(c, |old| old.max(c));
            self.shared.committed.set(Some(newest));
            metrics::gauge!("jetstream_ingestor_committed_cursor_us").set(newest as f64);
        }
        self.shared.counters.borrow_mut().batches_committed += 1;
        metrics::histogram!("jetstream_ingestor_receive_to_commit_seconds")
            .record(msg.received_at.elapsed().as_secs_f64());
        drop(msg.credit);
    }
}

impl Handler<GetReaderStatus> for JetstreamReader {
    type Result = MessageResult<GetReaderStatus>;

    fn handle(&mut self, _: GetReaderStatus, _ctx: &mut Self::Context) -> Self::Result {
        let c = self.shared.counters.borrow();
        MessageResult(ReaderStatus {
            state: *self.shared.state.borrow(),
            endpoint: self.shared.endpoint.borrow().clone(),
            session_id: self.shared.current_session.get(),
            committed_cursor: self.shared.committed.get(),
            consecutive_failures: c.consecutive_failures,
            last_error: c.last_error.clone(),
            events_received: c.events_received,
            dead_letters: c.dead_letters,
            batches_committed: c.batches_committed,
            sessions_started: c.sessions_started,
            backoff_ceiling_ms: u64::try_from(c.backoff_ceiling.as_millis()).unwrap_or(u64::MAX),
        })
    }
}

impl Handler<Restart> for JetstreamReader {
    type Result = u64;

    /// Stops this actor; `actix::Supervisor` starts it again (same fields), which dials anew.
    fn handle(&mut self, msg: Restart, ctx: &mut Self::Context) -> u64 {
        if let Some(c) = msg.from_cursor {
            self.shared.dial_override.set(Some(c));
        }
        info!(from_cursor = ?msg.from_cursor, "restart requested");
        self.control.send_replace(Control::Run);
        ctx.stop();
        self.shared.next_session.get()
    }
}

impl Handler<Pause> for JetstreamReader {
    type Result = ();
    fn handle(&mut self, _: Pause, _ctx: &mut Self::Context) {
        info!("pause requested");
        self.control.send_replace(Control::Pause);
    }
}

impl Handler<Resume> for JetstreamReader {
    type Result = ();
    fn handle(&mut self, _: Resume, _ctx: &mut Self::Context) {
        info!("resume requested");
        self.control.send_replace(Control::Run);
    }
}

impl Handler<Drain> for JetstreamReader {
    type Result = ResponseFuture<()>;

    /// Stops reading, then answers once every pushed batch is committed.
    fn handle(&mut self, _: Drain, _ctx: &mut Self::Context) -> Self::Result {
        self.control.send_replace(Control::Drain);
        let mut state = self.shared.state.subscribe();
        let window = self.window.clone();
        let n = u32::try_from(self.cfg.max_in_flight_batches).unwrap_or(u32::MAX);
        Box::pin(async move {
            let _ = state.wait_for(|s| *s == ReaderState::Finished).await;
            let _ = window.acquire_many(n).await;
        })
    }
}

/// How a session ended.
struct SessionEnd {
    /// At least one event arrived: the host works, so the backoff resets.
    progressed: bool,
    reason: &'static str,
    error: Option<String>,
    /// Stop redialing (drain requested, or replay reached `until`).
    finished: bool,
}

impl SessionEnd {
    fn failed(reason: &'static str, error: String) -> Self {
        SessionEnd {
            progressed: false,
            reason,
            error: Some(error),
            finished: false,
        }
    }
}

/// A batch being filled.
struct Pending {
    items: Vec<Item>,
    cursor: Option<u64>,
    received_at: Instant,
}

/// The read loop: runs for the lifetime of one actor start, across sessions.
struct ReadLoop {
    cfg: Arc<ReaderConfig>,
    shared: Rc<Shared>,
    window: Arc<Semaphore>,
    downstream: Recipient<PushBatch>,
    control: watch::Receiver<Control>,
}

impl ReadLoop {
    async fn run(mut self) {
        let mut endpoint_idx = 0usize;
        loop {
            let control = *self.control.borrow_and_update();
            match control {
                Control::Run => {}
                Control::Pause => {
                    self.shared.set_state(ReaderState::Paused);
                    let _ = self.control.wait_for(|c| *c != Control::Pause).await;
                    continue;
                }
                Control::Drain => {
                    self.shared.set_state(ReaderState::Finished);
                    return;
                }
            }
            // Everything pushed so far must be committed before we pick the dial cursor.
            self.shared.set_state(ReaderState::Connecting);
            self.wait_window_drained().await;

            let endpoint = self.cfg.endpoints[endpoint_idx % self.cfg.endpoints.len()].clone();
            *self.shared.endpoint.borrow_mut() = endpoint.clone();
            let cursor = match self.shared.dial_override.take() {
                Some(c) => Some(c),
                None => self
                    .shared
                    .committed
                    .get()
                    .map(|c| Cursor(c).rewound(self.cfg.rewind).0),
            };
            let end = self.session(&endpoint, cursor).await;

            let failures = {
                let mut c = self.shared.counters.borrow_mut();
                if end.progressed {
                    self.shared.backoff.borrow_mut().reset();
                    c.consecutive_failures = 0;
                } else {
                    c.consecutive_failures = c.consecutive_failures.saturating_add(1);
                }
                if let Some(e) = &end.error {
                    c.last_error = Some(e.clone());
                }
                c.consecutive_failures
            };
            metrics::counter!("jetstream_ingestor_sessions_ended_total", "reason" => end.reason)
                .increment(1);
            metrics::gauge!("jetstream_ingestor_reader_consecutive_failures")
                .set(f64::from(failures));
            if end.finished {
                info!(reason = end.reason, "reader finished");
                self.shared.set_state(ReaderState::Finished);
                return;
            }
            if !end.progressed && self.cfg.endpoints.len() > 1 {
                endpoint_idx += 1;
            }
            if *self.control.borrow() != Control::Run {
                continue;
            }
            let ceiling = self.shared.backoff.borrow_mut().next_ceiling();
            self.shared.counters.borrow_mut().backoff_ceiling = ceiling;
            let delay = full_jitter(ceiling);
            warn!(
                reason = end.reason,
                error = end.error.as_deref().unwrap_or(""),
                consecutive_failures = failures,
                delay_ms = delay.as_millis() as u64,
                "jetstream session ended, reconnecting"
            );
            self.shared.set_state(ReaderState::Backoff);
            let mut control = self.control.clone();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = control.changed() => {}
            }
        }
    }

    async fn wait_window_drained(&self) {
        let n = u32::try_from(self.cfg.max_in_flight_batches).unwrap_or(u32::MAX);
        let _all = self.window.acquire_many(n).await;
    }

    /// Dials once and reads until the session ends.
    async fn session(&mut self, endpoint: &str, cursor: Option<u64>) -> SessionEnd {
        let filters = self.cfg.filters();
        let url = match subscribe_url(endpoint, &filters, cursor) {
            Ok(u) => u,
            Err(e) => return SessionEnd::failed("bad_url", format!("{endpoint}: {e}")),
        };
        let session_id = self.shared.next_session.get();
        self.shared.next_session.set(session_id + 1);
        self.shared.current_session.set(session_id);
        self.shared.counters.borrow_mut().sessions_started += 1;
        info!(session = session_id, url = %url, "dialing jetstream");

        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(self.cfg.max_frame_bytes))
            .max_frame_size(Some(self.cfg.max_frame_bytes));
        let dial =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws_config), true);
        let ws = match tokio::time::timeout(self.cfg.connect_timeout, dial).await {
            Err(_) => {
                metrics::counter!("jetstream_ingestor_connects_total", "outcome" => "timeout")
                    .increment(1);
                return SessionEnd::failed(
                    "connect_timeout",
                    format!(
                        "no answer from {endpoint} within {:?}",
                        self.cfg.connect_timeout
                    ),
                );
            }
            Ok(Err(e)) => {
                metrics::counter!("jetstream_ingestor_connects_total", "outcome" => "failed")
                    .increment(1);
                return SessionEnd::failed("connect_failed", format!("{endpoint}: {e}"));
            }
            Ok(Ok((ws, _response))) => ws,
        };
        metrics::counter!("jetstream_ingestor_connects_total", "outcome" => "ok").increment(1);
        self.shared.set_state(ReaderState::Streaming);
        let source: Arc<str> = Arc::from(source_of(endpoint));
        let (mut sink, mut stream) = ws.split();

        let hb = Heartbeat {
            ping_interval: self.cfg.ping_interval,
            idle_timeout: self.cfg.idle_timeout,
        };
        let mut pending: Option<Pending> = None;
        let mut last_frame = Instant::now();
        let mut last_ping: Option<Instant> = None;
        let mut progressed = false;
        let mut control = self.control.clone();
        let linger = self.cfg.batch_linger;

        // Flushes the pending batch; evaluates to whether it waited for a credit.
        macro_rules! flush_or_end {
            () => {
                match self.flush(&mut pending, session_id, &source).await {
                    Ok(waited) => waited,
                    Err(e) => {
                        return SessionEnd {
                            progressed,
                            reason: "downstream_gone",
                            error: Some(e),
                            finished: true,
                        }
                    }
                }
            };
        }

        loop {
            let now = Instant::now();
            let next_check = match hb.check(now, last_frame, last_ping) {
                Liveness::Dead => {
                    flush_or_end!();
                    metrics::counter!("jetstream_ingestor_idle_timeouts_total").increment(1);
                    return SessionEnd {
                        progressed,
                        reason: "idle_timeout",
                        error: Some(format!(
                            "no frame from {endpoint} for {:?}",
                            self.cfg.idle_timeout
                        )),
                        finished: false,
                    };
                }
                Liveness::SendPing => {
                    last_ping = Some(now);
                    debug!(session = session_id, "sending ping");
                    if let Err(e) = sink.send(WsMessage::Ping(Default::default())).await {
                        flush_or_end!();
                        return SessionEnd {
                            progressed,
                            reason: "ws_error",
                            error: Some(e.to_string()),
                            finished: false,
                        };
                    }
                    continue;
                }
                Liveness::Alive { next_check } => next_check,
            };
            let linger_at = pending.as_ref().map(|p| p.received_at + linger);
            tokio::select! {
                biased;
                changed = control.changed() => {
                    let c = if changed.is_ok() { *control.borrow_and_update() } else { Control::Drain };
                    if c != Control::Run {
                        flush_or_end!();
                        let _ = sink.send(WsMessage::Close(None)).await;
                        return SessionEnd { progressed, reason: "stopped", error: None, finished: false };
                    }
                }
                _ = tokio::time::sleep_until(linger_at.unwrap_or(now).into()), if linger_at.is_some() => {
                    if flush_or_end!() {
                        last_frame = Instant::now();
                    }
                }
                _ = tokio::time::sleep_until(next_check.into()) => {}
                msg = stream.next() => {
                    last_frame = Instant::now();
                    let bytes: &[u8] = match &msg {
                        Some(Ok(WsMessage::Text(t))) => t.as_bytes(),
                        Some(Ok(WsMessage::Binary(b))) => {
                            self.push_dead(&mut pending, "binary_frame", "binary frame received but jetstream.compress is off", b);
                            continue;
                        }
                        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => continue,
                        Some(Ok(WsMessage::Close(frame))) => {
                            flush_or_end!();
                            let detail = frame.as_ref().map(|f| format!("{} {}", f.code, f.reason)).unwrap_or_default();
                            return SessionEnd { progressed, reason: "server_closed", error: Some(format!("close frame {detail}")), finished: false };
                        }
                        Some(Err(e)) => {
                            flush_or_end!();
                            return SessionEnd { progressed, reason: "ws_error", error: Some(e.to_string()), finished: false };
                        }
                        None => {
                            flush_or_end!();
                            return SessionEnd { progressed, reason: "eof", error: Some("connection closed without a close frame".into()), finished: false };
                        }
                    };
                    metrics::counter!("jetstream_ingestor_frames_received_total").increment(1);
                    match decode_frame(bytes) {
                        Decoded::Event(ev) => {
                            let t = ev.time_us();
                            if self.cfg.until.is_some_and(|u| t > u) {
                                flush_or_end!();
                                return SessionEnd { progressed, reason: "until_reached", error: None, finished: true };
                            }
                            progressed = true;
                            self.shared.counters.borrow_mut().events_received += 1;
                            let p = pending.get_or_insert_with(new_pending);
                            p.cursor = Some(p.cursor.map_or(t, |c| c.max(t)));
                            p.items.push(Item::Event(ev));
                        }
                        Decoded::Skipped { time_us, kind } => {
                            debug!(kind, time_us, "skipping event of unknown kind");
                            metrics::counter!("jetstream_ingestor_events_skipped_total", "reason" => "unknown_kind").increment(1);
                            let p = pending.get_or_insert_with(new_pending);
                            p.cursor = Some(p.cursor.map_or(time_us, |c| c.max(time_us)));
                        }
                        Decoded::Dead(d) => {
                            warn!(reason = d.reason, message = %d.message, "undecodable frame dead-lettered");
                            metrics::counter!("jetstream_ingestor_dead_letters_total", "reason" => d.reason).increment(1);
                            self.shared.counters.borrow_mut().dead_letters += 1;
                            let p = pending.get_or_insert_with(new_pending);
                            if let Some(t) = d.time_us {
                                p.cursor = Some(p.cursor.map_or(t, |c| c.max(t)));
                            }
                            p.items.push(Item::Dead(d));
                        }
                    }
                    if pending.as_ref().is_some_and(|p| p.items.len() >= self.cfg.batch_max_events) && flush_or_end!() {
                        last_frame = Instant::now();
                    }
                }
            }
        }
    }

    fn push_dead(
        &self,
        pending: &mut Option<Pending>,
        reason: &'static str,
        message: &str,
        raw: &[u8],
    ) {
        warn!(reason, message, len = raw.len(), "frame dead-lettered");
        metrics::counter!("jetstream_ingestor_dead_letters_total", "reason" => reason).increment(1);
        self.shared.counters.borrow_mut().dead_letters += 1;
        let d = crate::model::DeadLetter::new(reason, message, raw);
        pending
            .get_or_insert_with(new_pending)
            .items
            .push(Item::Dead(d));
    }

    /// Sends the pending batch downstream, waiting for a credit if the window is full.
    /// Returns whether it had to wait (the socket was not read meanwhile).
    async fn flush(
        &self,
        pending: &mut Option<Pending>,
        session: u64,
        source: &Arc<str>,
    ) -> Result<bool, String> {
        let Some(p) = pending.take() else {
            return Ok(false);
        };
        let (permit, waited) = match self.window.clone().try_acquire_owned() {
            Ok(permit) => (permit, false),
            Err(_) => {
                metrics::counter!("jetstream_ingestor_backpressure_waits_total").increment(1);
                debug!(session, "in-flight window full, reading paused");
                match self.window.clone().acquire_owned().await {
                    Ok(permit) => (permit, true),
                    Err(e) => return Err(format!("window closed: {e}")),
                }
            }
        };
        let seq = self.shared.next_seq.get();
        self.shared.next_seq.set(seq + 1);
        let batch = Batch {
            seq,
            session,
            source: source.clone(),
            items: p.items,
            cursor: p.cursor,
            received_at: p.received_at,
            credit: Credit(permit),
        };
        self.downstream
            .send(PushBatch(batch))
            .await
            .map_err(|e| format!("downstream stage is gone: {e}"))?;
        Ok(waited)
    }
}

fn new_pending() -> Pending {
    Pending {
        items: Vec::with_capacity(64),
        cursor: None,
        received_at: Instant::now(),
    }
}
