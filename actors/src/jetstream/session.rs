//! One session: dials the planned URL (filters in the query, or `requireHello` with the
//! filters as the first `options_update`), then reads frames until the session ends: text
//! frames are decoded, binary frames inflated with the zstd dictionary (bounded) when
//! `compress` is on, events grouped into batches (size or linger bound) and pushed with a
//! credit of the in-flight window; no credit, no reading, so backpressure reaches the TCP
//! socket. Filter updates go out as `options_update` on the live socket. What each frame
//! becomes (inflate, decode, batch, gap check, flush) is `frames.rs`.
//!
//! Failure: a session ends on close, EOF, socket error, idle timeout, a frame the WebSocket
//! layer refuses (too large, or a text frame that is not UTF-8: its dead letter and the skip
//! are the read loop's business), or a stop request; it always flushes what it read first. A frame that does not decode,
//! inflate or fit is dead-lettered and reading goes on.

use std::sync::Arc;
use std::time::Instant;

use futures_util::{FutureExt as _, SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::{debug, info, warn};

use super::dial::Dial;
use super::end::{EndReason, RefusedFrame, SessionEnd};
use super::frames::{JUMP_HOLD, Sess, Step};
use super::heartbeat::{Heartbeat, Liveness};
use super::read_loop::{Control, ReadLoop};
use super::subscribe::{DialOptions, options_update, plan_dial, source_of};
use crate::messages::ReaderState;

impl ReadLoop {
    /// Dials once and reads until the session ends.
    pub(super) async fn session(&mut self, dial: &Dial) -> SessionEnd {
        let mut filters_rx = self.shared.filters.subscribe();
        let filters = filters_rx.borrow_and_update().clone();
        let max_message_size = dial.cap().then_some(self.cfg.max_frame_bytes);
        let plan = match plan_dial(
            &dial.endpoint,
            &DialOptions {
                filters: &filters,
                cursor: dial.cursor,
                compress: self.cfg.compress,
                require_hello: self.cfg.require_hello,
                max_message_size,
            },
        ) {
            Ok(p) => p,
            Err(e) => {
                return SessionEnd::failed(EndReason::BadUrl, format!("{}: {e}", dial.endpoint));
            }
        };
        if let Err(e) = self.ensure_inflater() {
            return SessionEnd::failed(EndReason::BadDictionary, e);
        }
        let session_id = self.shared.next_session.get();
        self.shared.next_session.set(session_id + 1);
        self.shared.current_session.set(session_id);
        self.shared.counters.borrow_mut().sessions_started += 1;
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
            .max_message_size(Some(self.cfg.max_frame_bytes))
            .max_frame_size(Some(self.cfg.max_frame_bytes));
        let connect =
            tokio_tungstenite::connect_async_with_config(plan.url.as_str(), Some(ws_config), true);
        let ws = match tokio::time::timeout(self.cfg.connect_timeout, connect).await {
            Err(_) => {
                metrics::counter!("jetstream_ingestor_connects_total", "outcome" => "timeout")
                    .increment(1);
                return SessionEnd::failed(
                    EndReason::ConnectTimeout,
                    format!(
                        "no answer from {} within {:?}",
                        dial.endpoint, self.cfg.connect_timeout
                    ),
                );
            }
            Ok(Err(e)) => {
                metrics::counter!("jetstream_ingestor_connects_total", "outcome" => "failed")
                    .increment(1);
                return SessionEnd::failed(
                    EndReason::ConnectFailed,
                    format!("{}: {e}", dial.endpoint),
                );
            }
            Ok(Ok((ws, _response))) => ws,
        };
        metrics::counter!("jetstream_ingestor_connects_total", "outcome" => "ok").increment(1);
        let (mut sink, mut stream) = ws.split();
        if let Some(hello) = plan.hello {
            // requireHello: the host sends nothing before this first options_update.
            if let Err(e) = sink.send(WsMessage::text(hello)).await {
                return SessionEnd::failed(EndReason::WsError, format!("sending the hello: {e}"));
            }
            metrics::counter!("jetstream_ingestor_options_updates_total", "why" => "hello")
                .increment(1);
        }
        self.shared.set_state(ReaderState::Streaming);
        {
            // The stall clock starts with the first session, and is not reset by later ones:
            // a host that keeps sending nothing newer across reconnects is still stalled.
            let mut c = self.shared.counters.borrow_mut();
            c.last_advance_at.get_or_insert_with(Instant::now);
        }

        let hb = Heartbeat {
            ping_interval: self.cfg.ping_interval,
            idle_timeout: self.cfg.idle_timeout,
        };
        let mut st = Sess {
            id: session_id,
            source: Arc::from(source_of(&dial.endpoint)),
            pending: None,
            progressed: false,
            first_time: None,
            last_time: None,
            cap_active: max_message_size.is_some(),
            early: 0,
            caught_up: false,
            held: None,
            frame_at: Instant::now(),
        };
        let mut last_frame = Instant::now();
        let mut last_ping: Option<Instant> = None;
        let mut control = self.control.clone();
        let mut filters_open = true;
        let linger = self.cfg.batch_linger;
        let frames_received = metrics::counter!("jetstream_ingestor_frames_received_total");

        // Flushes the pending batch; evaluates to whether it waited for a credit.
        macro_rules! flush_or_end {
            () => {
                match self.flush(&mut st.pending, st.id, &st.source).await {
                    Ok(waited) => waited,
                    Err(e) => return st.end(EndReason::DownstreamGone, Some(e), true),
                }
            };
        }
        // A deliberate end: our Close frame, then the host's answer (bounded), so the host
        // sees a clean close handshake rather than a reset. What it sends meanwhile is not
        // taken: the next dial rewinds over it.
        macro_rules! close_cleanly {
            () => {
                if sink.send(WsMessage::Close(None)).await.is_ok() {
                    let answer = async {
                        while let Some(Ok(m)) = stream.next().await {
                            if m.is_close() {
                                break;
                            }
                        }
                    };
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), answer).await;
                }
            };
        }
        macro_rules! send_or_end {
            ($msg:expr) => {
                if let Err(e) = sink.send($msg).await {
                    flush_or_end!();
                    return st.end(EndReason::WsError, Some(e.to_string()), false);
                }
            };
        }

        loop {
            if st.cap_active && st.first_time.is_some() {
                // Past the oversized frame: lift the cap so later big frames are refused
                // (and dead-lettered) by us rather than skipped silently by the host.
                st.cap_active = false;
                let current = filters_rx.borrow_and_update().clone();
                send_or_end!(WsMessage::text(options_update(&current, None)));
                metrics::counter!("jetstream_ingestor_options_updates_total", "why" => "lift_cap")
                    .increment(1);
            }
            let now = Instant::now();
            let next_check = match hb.check(now, last_frame, last_ping) {
                Liveness::Dead => {
                    flush_or_end!();
                    metrics::counter!("jetstream_ingestor_idle_timeouts_total").increment(1);
                    warn!(session = st.id, endpoint = %dial.endpoint, idle_timeout_ms = self.cfg.idle_timeout.as_millis() as u64, "jetstream host silent");
                    let error = format!(
                        "no frame from {} for {:?}",
                        dial.endpoint, self.cfg.idle_timeout
                    );
                    return st.end(EndReason::IdleTimeout, Some(error), false);
                }
                Liveness::SendPing => {
                    last_ping = Some(now);
                    debug!(session = st.id, "sending ping");
                    send_or_end!(WsMessage::Ping(Default::default()));
                    continue;
                }
                Liveness::Alive { next_check } => next_check,
            };
            let linger_at = st.pending.as_ref().map(|p| p.received_at + linger);
            let hold_at = st.held.as_ref().map(|h| h.at + JUMP_HOLD);
            let linger_at = match (linger_at, hold_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                biased;
                changed = control.changed() => {
                    let c = if changed.is_ok() { *control.borrow_and_update() } else { Control::Drain };
                    if c != Control::Run {
                        flush_or_end!();
                        close_cleanly!();
                        return st.end(EndReason::Stopped, None, false);
                    }
                }
                changed = filters_rx.changed(), if filters_open => {
                    if changed.is_err() {
                        filters_open = false;
                        continue;
                    }
                    let current = filters_rx.borrow_and_update().clone();
                    let cap = st.cap_active.then_some(self.cfg.max_frame_bytes);
                    info!(session = st.id, "sending options_update with the new filters");
                    send_or_end!(WsMessage::text(options_update(&current, cap)));
                    metrics::counter!("jetstream_ingestor_options_updates_total", "why" => "filters").increment(1);
                }
                _ = tokio::time::sleep_until(linger_at.unwrap_or(now).into()), if linger_at.is_some() => {
                    if st.held.as_ref().is_some_and(|h| h.at.elapsed() >= JUMP_HOLD)
                        && let Step::End(reason, finished) = self.release_held(&mut st, dial)
                    {
                        flush_or_end!();
                        close_cleanly!();
                        return st.end(reason, None, finished);
                    }
                    if flush_or_end!() {
                        last_frame = Instant::now();
                    }
                }
                _ = tokio::time::sleep_until(next_check.into()) => {}
                msg = stream.next() => {
                    // Frames already read from the socket are taken in this one round (up to
                    // a batch): no timers are armed and no select is re-entered per frame.
                    let mut next = Some(msg);
                    let mut drained = 0usize;
                    while let Some(msg) = next.take() {
                        last_frame = Instant::now();
                        st.frame_at = last_frame;
                        let frame;
                        let (decoded, size) = match msg {
                            Some(Ok(WsMessage::Text(t))) => {
                                let d = self.text(t.as_str());
                                frame = WsMessage::Text(t);
                                (d, frame.len())
                            }
                            Some(Ok(WsMessage::Binary(b))) => {
                                let d = self.binary(&b);
                                frame = WsMessage::Binary(b);
                                d
                            }
                            // Control frames (tungstenite answers pings) end this round; `next` is empty.
                            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => continue,
                            Some(Ok(WsMessage::Close(frame))) => {
                                flush_or_end!();
                                let detail = frame.as_ref().map(|f| format!("{} {}", f.code, f.reason)).unwrap_or_default();
                                return st.end(EndReason::ServerClosed, Some(format!("close frame {detail}")), false);
                            }
                            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                                // The payload was never read. The read loop dead-letters it and
                                // dials past it (oversize.rs).
                                flush_or_end!();
                                let mut end = st.end(EndReason::FrameTooLarge, Some(format!("message of {size} bytes over the {max_size} limit")), false);
                                end.refused = Some(RefusedFrame { reason: "frame_too_large", size: Some(size) });
                                return end;
                            }
                            Some(Err(WsError::Utf8(e))) => {
                                // A text frame that is not UTF-8: dead-lettered and skipped by
                                // the read loop, like an oversized one.
                                flush_or_end!();
                                let mut end = st.end(EndReason::InvalidUtf8, Some(format!("text frame that is not UTF-8: {e}")), false);
                                end.refused = Some(RefusedFrame { reason: "invalid_utf8", size: None });
                                return end;
                            }
                            Some(Err(e)) => {
                                flush_or_end!();
                                return st.end(EndReason::WsError, Some(e.to_string()), false);
                            }
                            None => {
                                flush_or_end!();
                                return st.end(EndReason::Eof, Some("connection closed without a close frame".into()), false);
                            }
                        };
                        frames_received.increment(1);
                        let raw: &[u8] = match &frame {
                            WsMessage::Text(t) => t.as_bytes(),
                            WsMessage::Binary(b) => b,
                            _ => &[],
                        };
                        match self.take(decoded, raw, size, &mut st, dial) {
                            Step::Continue => {}
                            Step::End(reason, finished) => {
                                flush_or_end!();
                                close_cleanly!();
                                return st.end(reason, None, finished);
                            }
                        }
                        if self.pending_full(&st) && flush_or_end!() {
                            last_frame = Instant::now();
                        }
                        drained += 1;
                        if drained < self.cfg.batch_max_events {
                            next = stream.next().now_or_never();
                        }
                    }
                }
            }
        }
    }
}
