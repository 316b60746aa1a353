//! One session, one connection: [`Session::open`] dials the planned URL (filters in the
//! query, or `requireHello` with the filters as the first `options_update`), then
//! [`Session::read`] reads frames until the session ends and says how ([`SessionEnd`]).
//! What each frame becomes (inflate, decode, batch, gap check) is `frames.rs`; full batches
//! and lingering ones go downstream through the outbox (`outbox.rs`) with a credit of the
//! in-flight window: no credit, no reading, so backpressure reaches the TCP socket. Filter
//! updates go out as `options_update` on the live socket; pings and the idle timeout follow
//! `heartbeat.rs`.
//!
//! Failure: a session ends on close, EOF, socket error, idle timeout, a frame the WebSocket
//! layer refuses (too large, or a text frame that is not UTF-8: its dead letter and the skip
//! are the read loop's business), or a stop request; it always flushes what it read first,
//! and a flush that fails (the downstream stage is gone) ends it for good. A frame that does
//! not decode, inflate or fit is dead-lettered and reading goes on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt as _, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, warn};

use super::config::ReaderConfig;
use super::dial::Dial;
use super::end::{EndReason, RefusedFrame, SessionEnd};
use super::frames::{Frames, JUMP_HOLD, Step};
use super::heartbeat::{Heartbeat, Liveness};
use super::inflate::Inflater;
use super::outbox::Outbox;
use super::oversize::OversizeSkip;
use super::shared::{Control, Shared};
use super::subscribe::{DialOptions, Filters, options_update, plan_dial};
use crate::messages::ReaderState;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A live connection and what its frames have told so far.
pub(super) struct Session<'a> {
    cfg: &'a ReaderConfig,
    shared: &'a Shared,
    outbox: &'a Outbox,
    dial: &'a Dial,
    control: watch::Receiver<Control>,
    filters: watch::Receiver<Arc<Filters>>,
    sink: SplitSink<Socket, WsMessage>,
    stream: SplitStream<Socket>,
    frames: Frames<'a>,
    frames_received: metrics::Counter,
}

/// What a session borrows from the read loop.
pub(super) struct Parts<'a> {
    pub cfg: &'a ReaderConfig,
    pub shared: &'a Shared,
    pub outbox: &'a Outbox,
    pub control: &'a watch::Receiver<Control>,
    /// zstd context and buffer, built at the first compressed dial and reused.
    pub inflater: &'a mut Option<Inflater>,
    /// Getting past an oversized frame, if one was met.
    pub skip: &'a mut Option<OversizeSkip>,
}

impl<'a> Session<'a> {
    /// Dials once. A session that could not start ends here.
    pub async fn open(lp: Parts<'a>, dial: &'a Dial) -> Result<Session<'a>, SessionEnd> {
        let Parts {
            cfg,
            shared,
            outbox,
            control,
            inflater,
            skip,
        } = lp;
        let mut filters = shared.filters.subscribe();
        let current = filters.borrow_and_update().clone();
        let max_message_size = dial.cap().then_some(cfg.max_frame_bytes);
        let plan = match plan_dial(
            &dial.endpoint,
            &DialOptions {
                filters: &current,
                cursor: dial.cursor,
                compress: cfg.compress,
                require_hello: cfg.require_hello,
                max_message_size,
            },
        ) {
            Ok(p) => p,
            Err(e) => {
                let error = format!("{}: {e}", dial.endpoint);
                return Err(SessionEnd::failed(EndReason::BadUrl, error));
            }
        };
        if let Err(e) = ensure_inflater(cfg, inflater) {
            return Err(SessionEnd::failed(EndReason::BadDictionary, e));
        }
        let session_id = shared.next_session.get();
        shared.next_session.set(session_id + 1);
        shared.current_session.set(session_id);
        shared.counters.borrow_mut().sessions_started += 1;
        info!(
            session = session_id,
            url = %plan.url,
            require_hello = plan.hello.is_some(),
            probe = dial.probe(),
            "dialing jetstream"
        );

        // Read buffer 16 KiB instead of tungstenite's 128 KiB: every socket read zeroes the
        // buffer's spare room first, which at live rates (one frame per read) was the
        // reader's largest cost; at full speed a read still takes ~30 frames.
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(16 * 1024)
            .max_message_size(Some(cfg.max_frame_bytes))
            .max_frame_size(Some(cfg.max_frame_bytes));
        let connect =
            tokio_tungstenite::connect_async_with_config(plan.url.as_str(), Some(ws_config), true);
        let ws = match tokio::time::timeout(cfg.connect_timeout, connect).await {
            Err(_) => {
                metrics::counter!("jetstream_ingestor_connects_total", "outcome" => "timeout")
                    .increment(1);
                let error = format!(
                    "no answer from {} within {:?}",
                    dial.endpoint, cfg.connect_timeout
                );
                return Err(SessionEnd::failed(EndReason::ConnectTimeout, error));
            }
            Ok(Err(e)) => {
                metrics::counter!("jetstream_ingestor_connects_total", "outcome" => "failed")
                    .increment(1);
                let error = format!("{}: {e}", dial.endpoint);
                return Err(SessionEnd::failed(EndReason::ConnectFailed, error));
            }
            Ok(Ok((ws, _response))) => ws,
        };
        metrics::counter!("jetstream_ingestor_connects_total", "outcome" => "ok").increment(1);
        let (mut sink, stream) = ws.split();
        if let Some(hello) = plan.hello {
            // requireHello: the host sends nothing before this first options_update.
            if let Err(e) = sink.send(WsMessage::text(hello)).await {
                let error = format!("sending the hello: {e}");
                return Err(SessionEnd::failed(EndReason::WsError, error));
            }
            metrics::counter!("jetstream_ingestor_options_updates_total", "why" => "hello")
                .increment(1);
        }
        shared.set_state(ReaderState::Streaming);
        {
            // The stall clock starts with the first session, and is not reset by later ones:
            // a host that keeps sending nothing newer across reconnects is still stalled.
            let mut c = shared.counters.borrow_mut();
            c.last_advance_at.get_or_insert_with(Instant::now);
        }
        let frames = Frames::new(
            cfg,
            shared,
            dial,
            inflater.as_mut(),
            skip,
            session_id,
            max_message_size.is_some(),
        );
        Ok(Session {
            cfg,
            shared,
            outbox,
            dial,
            control: control.clone(),
            filters,
            sink,
            stream,
            frames,
            frames_received: metrics::counter!("jetstream_ingestor_frames_received_total"),
        })
    }

    /// Reads until the session ends.
    pub async fn read(mut self) -> SessionEnd {
        let hb = Heartbeat {
            ping_interval: self.cfg.ping_interval,
            idle_timeout: self.cfg.idle_timeout,
        };
        let mut last_frame = Instant::now();
        let mut last_ping: Option<Instant> = None;
        let mut filters_open = true;
        let linger = self.cfg.batch_linger;

        loop {
            if self.frames.cap_active && self.frames.first_time.is_some() {
                // Past the oversized frame: lift the cap so later big frames are refused
                // (and dead-lettered) by us rather than skipped silently by the host.
                self.frames.cap_active = false;
                let current = self.filters.borrow_and_update().clone();
                if let Err(end) = self
                    .send(WsMessage::text(options_update(&current, None)))
                    .await
                {
                    return end;
                }
                metrics::counter!("jetstream_ingestor_options_updates_total", "why" => "lift_cap")
                    .increment(1);
            }
            let now = Instant::now();
            let next_check = match hb.check(now, last_frame, last_ping) {
                Liveness::Dead => {
                    if let Err(end) = self.flush().await {
                        return end;
                    }
                    metrics::counter!("jetstream_ingestor_idle_timeouts_total").increment(1);
                    warn!(session = self.frames.id, endpoint = %self.dial.endpoint, idle_timeout_ms = self.cfg.idle_timeout.as_millis() as u64, "jetstream host silent");
                    let error = format!(
                        "no frame from {} for {:?}",
                        self.dial.endpoint, self.cfg.idle_timeout
                    );
                    return self.frames.end(EndReason::IdleTimeout, Some(error), false);
                }
                Liveness::SendPing => {
                    last_ping = Some(now);
                    debug!(session = self.frames.id, "sending ping");
                    if let Err(end) = self.send(WsMessage::Ping(Default::default())).await {
                        return end;
                    }
                    continue;
                }
                Liveness::Alive { next_check } => next_check,
            };
            let linger_at = self.frames.pending.as_ref().map(|p| p.received_at + linger);
            let hold_at = self.frames.held.as_ref().map(|h| h.at + JUMP_HOLD);
            let linger_at = match (linger_at, hold_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                biased;
                changed = self.control.changed() => {
                    let c = if changed.is_ok() { *self.control.borrow_and_update() } else { Control::Drain };
                    if c != Control::Run {
                        return self.end_cleanly(EndReason::Stopped, false).await;
                    }
                }
                changed = self.filters.changed(), if filters_open => {
                    if changed.is_err() {
                        filters_open = false;
                        continue;
                    }
                    let current = self.filters.borrow_and_update().clone();
                    let cap = self.frames.cap_active.then_some(self.cfg.max_frame_bytes);
                    info!(session = self.frames.id, "sending options_update with the new filters");
                    if let Err(end) = self.send(WsMessage::text(options_update(&current, cap))).await {
                        return end;
                    }
                    metrics::counter!("jetstream_ingestor_options_updates_total", "why" => "filters").increment(1);
                }
                _ = tokio::time::sleep_until(linger_at.unwrap_or(now).into()), if linger_at.is_some() => {
                    if self.frames.held.as_ref().is_some_and(|h| h.at.elapsed() >= JUMP_HOLD)
                        && let Step::End(reason, finished) = self.frames.release_held()
                    {
                        return self.end_cleanly(reason, finished).await;
                    }
                    match self.flush().await {
                        Ok(true) => last_frame = Instant::now(),
                        Ok(false) => {}
                        Err(end) => return end,
                    }
                }
                _ = tokio::time::sleep_until(next_check.into()) => {}
                msg = self.stream.next() => {
                    if let Err(end) = self.take_round(msg, &mut last_frame).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Takes `first` and the frames already read from the socket after it, in this one
    /// round (up to a batch): no timers are armed and no select is re-entered per frame.
    /// `last_frame` is when a frame last arrived (or reading last resumed after a wait for
    /// a credit).
    async fn take_round(
        &mut self,
        first: Option<Result<WsMessage, WsError>>,
        last_frame: &mut Instant,
    ) -> Result<(), SessionEnd> {
        let mut next = Some(first);
        let mut drained = 0usize;
        while let Some(msg) = next.take() {
            *last_frame = Instant::now();
            self.frames.frame_at = *last_frame;
            let frame;
            let (decoded, size) = match msg {
                Some(Ok(WsMessage::Text(t))) => {
                    let d = self.frames.text(t.as_str());
                    frame = WsMessage::Text(t);
                    (d, frame.len())
                }
                Some(Ok(WsMessage::Binary(b))) => {
                    let d = self.frames.binary(&b);
                    frame = WsMessage::Binary(b);
                    d
                }
                // Control frames (tungstenite answers pings) end this round; `next` is empty.
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => continue,
                Some(Ok(WsMessage::Close(frame))) => {
                    let detail = frame
                        .as_ref()
                        .map(|f| format!("{} {}", f.code, f.reason))
                        .unwrap_or_default();
                    let error = format!("close frame {detail}");
                    return Err(self.end_flushed(EndReason::ServerClosed, error, None).await);
                }
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                    // The payload was never read. The read loop dead-letters it and dials past
                    // it (oversize.rs).
                    let error = format!("message of {size} bytes over the {max_size} limit");
                    let refused = RefusedFrame {
                        reason: "frame_too_large",
                        size: Some(size),
                    };
                    return Err(self
                        .end_flushed(EndReason::FrameTooLarge, error, Some(refused))
                        .await);
                }
                Some(Err(WsError::Utf8(e))) => {
                    // A text frame that is not UTF-8: dead-lettered and skipped by the read
                    // loop, like an oversized one.
                    let error = format!("text frame that is not UTF-8: {e}");
                    let refused = RefusedFrame {
                        reason: "invalid_utf8",
                        size: None,
                    };
                    return Err(self
                        .end_flushed(EndReason::InvalidUtf8, error, Some(refused))
                        .await);
                }
                Some(Err(e)) => {
                    return Err(self
                        .end_flushed(EndReason::WsError, e.to_string(), None)
                        .await);
                }
                None => {
                    let error = "connection closed without a close frame".to_owned();
                    return Err(self.end_flushed(EndReason::Eof, error, None).await);
                }
            };
            self.frames_received.increment(1);
            let raw: &[u8] = match &frame {
                WsMessage::Text(t) => t.as_bytes(),
                WsMessage::Binary(b) => b,
                _ => &[],
            };
            if let Step::End(reason, finished) = self.frames.take(decoded, raw, size) {
                return Err(self.end_cleanly(reason, finished).await);
            }
            if self.frames.pending_full() && self.flush().await? {
                *last_frame = Instant::now();
            }
            drained += 1;
            if drained < self.cfg.batch_max_events {
                next = self.stream.next().now_or_never();
            }
        }
        Ok(())
    }

    /// Sends the pending batch downstream; says whether it waited for a credit. The
    /// downstream stage being gone ends the session for good.
    async fn flush(&mut self) -> Result<bool, SessionEnd> {
        let id = self.frames.id;
        let shared = self.shared;
        let sent = self
            .outbox
            .flush(&mut self.frames.pending, id, &self.frames.source, || {
                shared.cursors().replaying(id)
            })
            .await;
        sent.map_err(|e| self.frames.end(EndReason::DownstreamGone, Some(e), true))
    }

    /// Sends on the socket; a failure flushes and ends the session (`ws_error`).
    async fn send(&mut self, msg: WsMessage) -> Result<(), SessionEnd> {
        let Err(e) = self.sink.send(msg).await else {
            return Ok(());
        };
        self.flush().await?;
        Err(self
            .frames
            .end(EndReason::WsError, Some(e.to_string()), false))
    }

    /// The connection ended (or refused a frame): flushes, then ends with `reason`.
    async fn end_flushed(
        &mut self,
        reason: EndReason,
        error: String,
        refused: Option<RefusedFrame>,
    ) -> SessionEnd {
        if let Err(end) = self.flush().await {
            return end;
        }
        let mut end = self.frames.end(reason, Some(error), false);
        end.refused = refused;
        end
    }

    /// A deliberate end: flushes, then closes cleanly (our Close frame, then the host's
    /// answer, bounded), so the host sees a clean close handshake rather than a reset. What
    /// it sends meanwhile is not taken: the next dial rewinds over it.
    async fn end_cleanly(&mut self, reason: EndReason, finished: bool) -> SessionEnd {
        if let Err(end) = self.flush().await {
            return end;
        }
        if self.sink.send(WsMessage::Close(None)).await.is_ok() {
            let stream = &mut self.stream;
            let answer = async {
                while let Some(Ok(m)) = stream.next().await {
                    if m.is_close() {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
        }
        self.frames.end(reason, None, finished)
    }
}

/// Builds the zstd context the first time a compressed dial needs it.
fn ensure_inflater(cfg: &ReaderConfig, inflater: &mut Option<Inflater>) -> Result<(), String> {
    if !cfg.compress || inflater.is_some() {
        return Ok(());
    }
    let dictionary = cfg.load_dictionary().map_err(|e| e.to_string())?;
    *inflater = Some(Inflater::new(
        Some(&dictionary),
        cfg.max_decompressed_bytes,
    )?);
    Ok(())
}
