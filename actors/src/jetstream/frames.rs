//! What each frame of a session becomes: binary frames inflated with the zstd dictionary
//! (bounded, `inflate.rs`) when `compress` is on, text decoded (`decode.rs`), events and dead
//! letters put into the pending batch in wire order, the first event checked for a gap
//! (`gap.rs`), and full batches flushed downstream with a credit of the in-flight window.
//!
//! Failure: nothing here ends the reading except replay's `until` and a probe's first frame;
//! a frame that does not inflate or decode becomes a dead letter with its reason
//! (`zstd_too_large`, `zstd_error`, `binary_frame`, or the decoder's), counted and logged.
//! A flush fails only when the downstream stage is gone.

use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, warn};

use super::decode::{Decoded, decode_frame};
use super::gap::detect_gap;
use super::inflate::{InflateError, Inflater};
use super::read_loop::{Dial, ReadLoop};
use super::session::SessionEnd;
use crate::messages::{Batch, Credit, GapAlarm, Item, PushBatch};
use crate::model::DeadLetter;

/// A batch being filled.
pub(super) struct Pending {
    pub items: Vec<Item>,
    pub cursor: Option<u64>,
    pub received_at: Instant,
}

fn new_pending() -> Pending {
    Pending {
        items: Vec::with_capacity(64),
        cursor: None,
        received_at: Instant::now(),
    }
}

/// Per-session bookkeeping.
pub(super) struct Sess {
    pub id: u64,
    pub source: Arc<str>,
    pub pending: Option<Pending>,
    pub progressed: bool,
    pub first_time: Option<u64>,
    pub last_time: Option<u64>,
    /// `maxMessageSizeBytes` is in force on this socket (lifted after the first event).
    pub cap_active: bool,
}

impl Sess {
    pub fn end(&self, reason: &'static str, error: Option<String>, finished: bool) -> SessionEnd {
        SessionEnd {
            progressed: self.progressed,
            reason,
            error,
            finished,
            refused: None,
            first_time: self.first_time,
            last_time: self.last_time,
        }
    }
}

/// What one decoded frame asks of the session.
pub(super) enum Step {
    Continue,
    /// Flush, then end with this reason (`finished` for replay's end).
    End(&'static str, bool),
}

impl ReadLoop {
    /// Builds the zstd context the first time a compressed dial needs it.
    pub(super) fn ensure_inflater(&mut self) -> Result<(), String> {
        if !self.cfg.compress || self.inflater.is_some() {
            return Ok(());
        }
        let dictionary = match self.cfg.load_dictionary() {
            Ok(Some(d)) => d,
            Ok(None) => {
                return Err(
                    "jetstream.compress is on but jetstream.zstd_dictionary is not set".into(),
                );
            }
            Err(e) => return Err(e.to_string()),
        };
        self.inflater = Some(Inflater::new(
            Some(&dictionary),
            self.cfg.max_decompressed_bytes,
        )?);
        Ok(())
    }

    /// A binary frame: zstd when `compress` is on, otherwise a dead letter.
    pub(super) fn binary(&mut self, raw: &[u8]) -> Decoded {
        let Some(inflater) = self.inflater.as_mut().filter(|_| self.cfg.compress) else {
            return Decoded::Dead(DeadLetter::new(
                "binary_frame",
                "binary frame received but jetstream.compress is off",
                raw,
            ));
        };
        match inflater.inflate(raw) {
            Ok(plain) => decode_frame(plain),
            Err(e @ InflateError::TooLarge { .. }) => {
                Decoded::Dead(DeadLetter::new("zstd_too_large", e.to_string(), raw))
            }
            Err(e @ InflateError::Corrupt(_)) => {
                Decoded::Dead(DeadLetter::new("zstd_error", e.to_string(), raw))
            }
        }
    }

    /// Puts one decoded frame into the pending batch (or ends the session).
    pub(super) fn take(&mut self, decoded: Decoded, st: &mut Sess, dial: &Dial) -> Step {
        let time = match &decoded {
            Decoded::Event(ev) => Some(ev.time_us()),
            Decoded::Skipped { time_us, .. } => Some(*time_us),
            Decoded::Dead(d) => d.time_us,
        };
        if let Some(t) = time {
            if st.first_time.is_none() {
                st.first_time = Some(t);
                if dial.probe() {
                    // Only the position was wanted: past the oversized frame.
                    return Step::End("oversize_probe", false);
                }
                if dial.skip.is_some() {
                    self.skip_passed(dial, t);
                } else {
                    self.check_gap(dial, t, st.id);
                }
            }
            st.last_time = Some(t);
        }
        match decoded {
            Decoded::Event(ev) => {
                let t = ev.time_us();
                if self.cfg.until.is_some_and(|u| t > u) {
                    return Step::End("until_reached", true);
                }
                let mut c = self.shared.counters.borrow_mut();
                if !st.progressed {
                    // The host works: status says so now, not when the session ends. And an
                    // explicit start cursor is used up: what is read from now on is committed
                    // before the next dial, which starts from the committed cursor.
                    st.progressed = true;
                    self.shared.dial_override.set(None);
                    c.consecutive_failures = 0;
                    metrics::gauge!("jetstream_ingestor_reader_consecutive_failures").set(0.0);
                }
                c.events_received += 1;
                drop(c);
                let p = st.pending.get_or_insert_with(new_pending);
                p.cursor = Some(p.cursor.map_or(t, |c| c.max(t)));
                p.items.push(Item::Event(ev));
            }
            Decoded::Skipped { time_us, kind } => {
                debug!(kind, time_us, "skipping event of unknown kind");
                metrics::counter!("jetstream_ingestor_events_skipped_total", "reason" => "unknown_kind").increment(1);
                let p = st.pending.get_or_insert_with(new_pending);
                p.cursor = Some(p.cursor.map_or(time_us, |c| c.max(time_us)));
            }
            Decoded::Dead(d) => {
                warn!(reason = d.reason, message = %d.message, len = d.raw_len, "frame dead-lettered");
                metrics::counter!("jetstream_ingestor_dead_letters_total", "reason" => d.reason)
                    .increment(1);
                self.shared.counters.borrow_mut().dead_letters += 1;
                let p = st.pending.get_or_insert_with(new_pending);
                if let Some(t) = d.time_us {
                    p.cursor = Some(p.cursor.map_or(t, |c| c.max(t)));
                }
                p.items.push(Item::Dead(d));
            }
        }
        Step::Continue
    }

    /// The first event of a session far beyond the position asked for: raise the alarm.
    fn check_gap(&self, dial: &Dial, first_event_us: u64, session: u64) {
        let Some(gap_us) = detect_gap(
            dial.cursor,
            dial.rewind,
            first_event_us,
            self.cfg.gap_threshold,
        ) else {
            return;
        };
        let requested_cursor = dial.cursor.unwrap_or_default();
        warn!(
            session,
            endpoint = %dial.endpoint,
            requested_cursor,
            first_event_us,
            gap_secs = gap_us as f64 / 1e6,
            "gap: the host's first event is far newer than the cursor asked for; the events in between are missing (older than its retention?)"
        );
        metrics::counter!("jetstream_ingestor_gaps_total").increment(1);
        let mut c = self.shared.counters.borrow_mut();
        c.gaps += 1;
        c.last_gap = Some(GapAlarm {
            session,
            endpoint: dial.endpoint.clone(),
            requested_cursor,
            first_event_us,
            gap_us,
        });
    }

    /// Sends the pending batch downstream, waiting for a credit if the window is full.
    /// Returns whether it had to wait (the socket was not read meanwhile).
    pub(super) async fn flush(
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
