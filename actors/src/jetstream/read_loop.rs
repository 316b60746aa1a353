//! The read loop of one actor start, across sessions: picks the endpoint and the cursor of
//! every dial, runs the session (`session.rs`), then settles how it ended: counters and
//! backoff, the failover policy (`failover.rs`), getting past oversized frames
//! (`oversize.rs`), and the reconnect delay.
//!
//! The cursor of every dial is [`choose_dial`] (`dial.rs`, pure and tested) over the cursor
//! facts in [`Shared`] (`cursors.rs`). "Since the last explicit start" (the line): a
//! `Restart` from an older cursor is carried through to the end, across reconnects and
//! failovers, instead of jumping back to the newest cursor ever committed.
//!
//! Failure: never gives up. Every session end is counted by reason; sessions without events
//! and silent sessions are failures (backoff grows, failover may move); before each dial the
//! loop waits for every pushed batch to be committed, so the committed cursor covers all it
//! read.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tracing::{info, warn};

use super::clock::position_now;
use super::config::ReaderConfig;
use super::dial::{Dial, DialCursor, Rewinds, choose_dial};
use super::end::{RefusedFrame, SessionEnd};
use super::failover::Next;
use super::inflate::Inflater;
use super::outbox::{Outbox, Pending};
use super::oversize::{OversizeSkip, Probe};
use super::session::{Parts, Session};
use super::shared::{Control, Shared};
use super::subscribe::source_of;
use crate::backoff::full_jitter;
use crate::messages::{FailoverNote, Item, ReaderState};
use crate::model::DeadLetter;

pub(super) struct ReadLoop {
    cfg: Arc<ReaderConfig>,
    shared: Rc<Shared>,
    outbox: Rc<Outbox>,
    control: watch::Receiver<Control>,
    /// zstd context and buffer, built at the first compressed dial and reused.
    inflater: Option<Inflater>,
    /// Getting past an oversized frame, if one was met.
    skip: Option<OversizeSkip>,
}

impl ReadLoop {
    pub fn new(
        cfg: Arc<ReaderConfig>,
        shared: Rc<Shared>,
        outbox: Rc<Outbox>,
        control: watch::Receiver<Control>,
    ) -> ReadLoop {
        ReadLoop {
            cfg,
            shared,
            outbox,
            control,
            inflater: None,
            skip: None,
        }
    }

    pub async fn run(mut self) {
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
            self.outbox.drained().await;

            let dial = self.next_dial();
            let parts = Parts {
                cfg: &self.cfg,
                shared: &self.shared,
                outbox: &self.outbox,
                control: &self.control,
                inflater: &mut self.inflater,
                skip: &mut self.skip,
            };
            let end = match Session::open(parts, &dial).await {
                Ok(session) => session.read().await,
                Err(end) => end,
            };
            let session = self.shared.current_session.get();
            self.shared
                .update_cursors(|k| k.host.note_order(session, end.disordered));
            let urgent = self.settle(&dial, &end).await;
            if end.finished {
                info!(reason = end.reason.as_str(), "reader finished");
                self.shared.set_state(ReaderState::Finished);
                return;
            }
            if *self.control.borrow() != Control::Run || urgent {
                continue;
            }
            let ceiling = self.shared.backoff.borrow_mut().next_ceiling();
            self.shared.counters.borrow_mut().backoff_ceiling = ceiling;
            let delay = full_jitter(ceiling);
            let failures = self.shared.counters.borrow().consecutive_failures;
            warn!(
                reason = end.reason.as_str(),
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

    fn next_dial(&mut self) -> Dial {
        let index = self.shared.failover.borrow_mut().dial() % self.cfg.endpoints.len().max(1);
        let endpoint = self.cfg.endpoints.get(index).cloned().unwrap_or_default();
        let skip = self.skip.as_mut().map(|skip| skip.next_dial());
        let facts = self.shared.cursors().facts(skip);
        let rewinds = Rewinds {
            rewind: self.cfg.rewind,
            failover_rewind: self.cfg.effective_failover_rewind(),
        };
        let DialCursor { cursor, rewind } = choose_dial(&facts, &rewinds);
        Dial {
            endpoint,
            endpoint_index: index,
            cursor,
            rewind,
            skip,
        }
    }

    /// Counts the session, applies the failover policy and the oversize skip. Returns true
    /// when the next dial should go out without the reconnect delay.
    async fn settle(&mut self, dial: &Dial, end: &SessionEnd) -> bool {
        let urgent = self.settle_oversize(dial, end).await;
        let outcome = end.outcome();
        let healthy = self.shared.counters.borrow_mut().session_ended(
            end.progressed,
            outcome,
            end.error.as_ref(),
        );
        if healthy {
            self.shared.backoff.borrow_mut().reset();
        }
        let failures = self.shared.counters.borrow().consecutive_failures;
        metrics::counter!("jetstream_ingestor_sessions_ended_total", "reason" => end.reason.as_str())
            .increment(1);
        metrics::gauge!("jetstream_ingestor_reader_consecutive_failures").set(f64::from(failures));
        let next = self.shared.failover.borrow_mut().record(outcome);
        if let Next::Move { to, .. } = next {
            let note = {
                let mut c = self.shared.counters.borrow_mut();
                c.failovers += 1;
                let note = FailoverNote {
                    session: self.shared.current_session.get(),
                    from: dial.endpoint.clone(),
                    to: self.cfg.endpoints.get(to).cloned().unwrap_or_default(),
                    reason: end.reason.as_str(),
                    error: c.last_error.clone(),
                };
                c.last_failover = Some(note.clone());
                note
            };
            let next = self.shared.next_session.get();
            self.shared.update_cursors(|k| k.moved_host(next));
            // Skip positions are in the old host's clock.
            self.skip = None;
            metrics::counter!("jetstream_ingestor_failovers_total").increment(1);
            warn!(
                from = %note.from,
                to = %note.to,
                reason = note.reason,
                error = note.error.as_deref().unwrap_or(""),
                rewind_ms = self.cfg.effective_failover_rewind().as_millis() as u64,
                "failing over to the next jetstream endpoint"
            );
            return false;
        }
        urgent
    }

    /// Oversized frames: feeds a skip in progress with what this dial found, or starts one
    /// (with its dead letter) when a regular session met such a frame. A real (non-probe)
    /// skip session that got past the frame has already ended the skip
    /// (`Frames::skip_passed`, at its first event).
    async fn settle_oversize(&mut self, dial: &Dial, end: &SessionEnd) -> bool {
        if let (Some(step), Some(skip)) = (dial.skip, self.skip.as_mut()) {
            let found = if end.first_time.is_some() {
                Probe::Passed
            } else if end.refused.is_some() {
                Probe::Refused
            } else {
                // Nothing learnt (the dial failed): the same step is tried again later.
                return false;
            };
            // Not over: over is decided in-session, by `Frames::skip_passed`.
            let _ = skip.observe(step, found);
            return skip.urgent();
        }
        let Some(refused) = end.refused else {
            return false;
        };
        // A frame refused in a regular session (or after a skip finished in this one).
        let skip = OversizeSkip::new(end.last_time, dial.cursor);
        if let (Some((index, origin, resume)), Some(at)) =
            (self.shared.skipped.get(), skip.origin())
            && index == dial.endpoint_index
            && origin == at
        {
            info!(
                resume,
                "met the oversized frame skipped before; going past it again"
            );
            metrics::counter!("jetstream_ingestor_oversize_skips_total", "how" => "known")
                .increment(1);
            self.shared.update_cursors(|k| k.resume_past(resume));
            return true;
        }
        self.dead_letter_refused(refused, dial, end).await;
        let urgent = skip.urgent();
        self.skip = Some(skip);
        urgent
    }

    /// `frame_too_large` / `invalid_utf8`: the frame's bytes were never read or not kept, so
    /// its dead letter carries what we know instead: its size if known, and where it sits
    /// (the event it came after, or the dial cursor when it came first). That is its dedupe
    /// identity, so it must not depend on where the dial started: a redial rewound to before
    /// it (a reconnect; `skipped` remembers only the last frame skipped) meets it again, and
    /// must not dead-letter it twice. The batch carries that event's time as its cursor (the
    /// stored cursor never moves back) so the identity is kept for the dedupe window.
    async fn dead_letter_refused(&mut self, refused: RefusedFrame, dial: &Dial, end: &SessionEnd) {
        let after = end.last_time.map_or_else(
            || format!("first frame from cursor {:?}", dial.cursor),
            |t| format!("after time_us {t}"),
        );
        let what = match refused.size {
            Some(size) => format!(
                "frame of {size} bytes refused (jetstream.max_frame_bytes = {})",
                self.cfg.max_frame_bytes
            ),
            None => "text frame that is not UTF-8 refused".to_owned(),
        };
        let message = format!("{what}, {after} on {}; skipped", dial.endpoint);
        warn!(reason = refused.reason, size = ?refused.size, max = self.cfg.max_frame_bytes, after_time_us = ?end.last_time, endpoint = %dial.endpoint, "refused frame dead-lettered");
        metrics::counter!("jetstream_ingestor_dead_letters_total", "reason" => refused.reason)
            .increment(1);
        self.shared.counters.borrow_mut().dead_letters += 1;
        let position = match end.last_time {
            Some(t) => serde_json::json!({ "size": refused.size, "after_time_us": t }),
            None => serde_json::json!({ "size": refused.size, "dial_cursor": dial.cursor }),
        };
        let mut descriptor = serde_json::Map::new();
        descriptor.insert(refused.reason.to_owned(), position);
        let descriptor = serde_json::Value::Object(descriptor).to_string();
        let mut d = DeadLetter::new(refused.reason, message, descriptor.as_bytes());
        d.raw_len = refused.size.unwrap_or(0);
        d.position_us = Some(position_now(end.last_time, dial.cursor));
        let mut pending = Some(Pending {
            items: vec![Item::Dead(d)],
            cursor: end.last_time.or(dial.cursor),
            received_at: Instant::now(),
            bytes: 0,
        });
        let source: Arc<str> = Arc::from(source_of(&dial.endpoint));
        let session = self.shared.current_session.get();
        let shared = &self.shared;
        let sent = self
            .outbox
            .flush(&mut pending, session, &source, || {
                shared.cursors().replaying(session)
            })
            .await;
        if let Err(e) = sent {
            warn!(error = %e, reason = refused.reason, "cannot hand the dead letter on");
        }
    }
}
