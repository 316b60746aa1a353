//! What each frame of a session becomes: binary frames inflated with the zstd dictionary
//! (bounded, `inflate.rs`) when `compress` is on, text decoded (`decode.rs`), events and dead
//! letters put into the pending batch in wire order, the first event checked for a gap
//! (`gap.rs`); the session flushes the batch (`outbox.rs`) when it is full in events or in
//! bytes ([`Frames::pending_full`]).
//!
//! Why times are checked here: a frame's `time_us` becomes the cursor, the next dial's
//! position, a dedupe score and a bucket clock, so one wrong time can stop ingest for good
//! (a cursor in the future) or lose what follows it. Times beyond the wall clock plus
//! `future_tolerance` are dead-lettered (`time_in_future`); a time that jumps far ahead of the
//! stream and is contradicted by the next event is dead-lettered (`time_out_of_order`);
//! events from before the dial cursor are dropped (a host replaying more than asked); dead
//! letters never move the cursor.
//!
//! Failure: nothing here ends the reading except replay's `until` and a probe's first frame;
//! a frame that does not inflate or decode becomes a dead letter with its reason
//! (`zstd_too_large`, `zstd_error`, `binary_frame`, or the decoder's), counted and logged.

use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info, warn};

use super::clock::{duration_us, now_us, position_now, screen};
use super::config::ReaderConfig;
use super::decode::{Decoded, decode_frame, decode_text};
use super::dial::Dial;
use super::end::{EndReason, SessionEnd};
use super::gap::detect_gap;
use super::inflate::{InflateError, Inflater};
use super::outbox::Pending;
use super::oversize::{OversizeSkip, Probe};
use super::shared::Shared;
use super::subscribe::source_of;
use crate::messages::{GapAlarm, Item};
use crate::model::DeadLetter;

/// What the frames of one session become, and what they told so far. Borrows from the
/// read loop what outlives the session (config, shared state, the zstd context, a skip in
/// progress).
pub(super) struct Frames<'a> {
    cfg: &'a ReaderConfig,
    shared: &'a Shared,
    dial: &'a Dial,
    /// Built before the dial when `compress` is on.
    inflater: Option<&'a mut Inflater>,
    /// Getting past an oversized frame: this session ends it at its first event.
    skip: &'a mut Option<OversizeSkip>,
    pub id: u64,
    pub source: Arc<str>,
    pub pending: Option<Pending>,
    pub progressed: bool,
    pub first_time: Option<u64>,
    pub last_time: Option<u64>,
    /// A frame told a time below the one before it (see `SessionEnd::disordered`).
    pub disordered: bool,
    /// `maxMessageSizeBytes` is in force on this socket (lifted after the first event).
    pub cap_active: bool,
    /// Events older than the dial cursor the host sent anyway (dropped).
    pub early: u64,
    /// An event at or after the dial cursor has arrived.
    pub caught_up: bool,
    /// An event whose time jumped far ahead, waiting for the next one (see `take`).
    pub held: Option<Held>,
    /// When the frame being taken arrived (one clock read per frame, by the session).
    pub frame_at: Instant,
}

/// How long a frame whose time jumped ahead waits for the next event before it is written
/// anyway (without moving the cursor).
pub(super) const JUMP_HOLD: std::time::Duration = std::time::Duration::from_secs(1);

/// A frame held by the jump check: the decoded frame, its bytes (for the dead letter if the
/// jump is refuted), its time and the position it jumped from.
pub(super) struct Held {
    decoded: Decoded,
    raw: Vec<u8>,
    size: usize,
    time: u64,
    from: u64,
    pub at: Instant,
}

/// What one decoded frame asks of the session.
pub(super) enum Step {
    Continue,
    /// Flush, then end with this reason (`finished` for replay's end).
    End(EndReason, bool),
}

impl<'a> Frames<'a> {
    pub fn new(
        cfg: &'a ReaderConfig,
        shared: &'a Shared,
        dial: &'a Dial,
        inflater: Option<&'a mut Inflater>,
        skip: &'a mut Option<OversizeSkip>,
        id: u64,
        cap_active: bool,
    ) -> Frames<'a> {
        Frames {
            cfg,
            shared,
            dial,
            inflater,
            skip,
            id,
            source: Arc::from(source_of(&dial.endpoint)),
            pending: None,
            progressed: false,
            first_time: None,
            last_time: None,
            disordered: false,
            cap_active,
            early: 0,
            caught_up: false,
            held: None,
            frame_at: Instant::now(),
        }
    }

    /// How the session ends, with what its frames told.
    pub fn end(&self, reason: EndReason, error: Option<String>, finished: bool) -> SessionEnd {
        SessionEnd {
            progressed: self.progressed,
            reason,
            error,
            finished,
            refused: None,
            first_time: self.first_time,
            last_time: self.last_time,
            disordered: self.disordered,
        }
    }

    /// A binary frame: zstd when `compress` is on, otherwise a dead letter.
    ///
    /// Also returns the bytes the frame weighs in memory (inflated, when it inflates): its
    /// share of the byte budget.
    pub(super) fn binary(&mut self, raw: &[u8]) -> (Decoded, usize) {
        let Some(inflater) = self.inflater.as_deref_mut().filter(|_| self.cfg.compress) else {
            let d = DeadLetter::new(
                "binary_frame",
                "binary frame received but jetstream.compress is off",
                raw,
            );
            return (Decoded::Dead(d), raw.len());
        };
        let limit = now_us().saturating_add(duration_us(self.cfg.future_tolerance));
        match inflater.inflate(raw) {
            Ok(plain) => (
                screen(decode_frame(plain), plain, limit),
                plain.len().max(raw.len()),
            ),
            Err(e @ InflateError::TooLarge { .. }) => (
                Decoded::Dead(DeadLetter::new("zstd_too_large", e.to_string(), raw)),
                raw.len(),
            ),
            Err(e @ InflateError::Corrupt(_)) => (
                Decoded::Dead(DeadLetter::new("zstd_error", e.to_string(), raw)),
                raw.len(),
            ),
        }
    }

    /// Decodes a text frame, its time checked against the wall clock ([`screen`]).
    pub(super) fn text(&self, text: &str) -> Decoded {
        let limit = now_us().saturating_add(duration_us(self.cfg.future_tolerance));
        screen(decode_text(text), text.as_bytes(), limit)
    }

    /// Puts one decoded frame of `size` bytes into the pending batch (or ends the session).
    ///
    /// Only events (and skipped kinds) tell the position: a dead letter never moves the
    /// cursor, whatever time it claims. An event older than the dial cursor is dropped: the
    /// host replays from earlier than asked (Jetstream v2 with a time cursor may start an
    /// hour early), and those events were committed before the dial, possibly longer ago
    /// than the dedupe index remembers; so is a dead letter met while the host is still
    /// sending from before the cursor.
    ///
    /// An event whose time jumps more than `max_time_jump` ahead of the session's position is
    /// held ([`Held`]) until the next event says whether the stream really moved there: if
    /// the next one is older, the jump was a lie (a hostile or broken frame) and the held
    /// frame is dead-lettered `time_out_of_order`, so its time never becomes the cursor, a
    /// dial position or a bucket clock. Held past [`JUMP_HOLD`] without a next event (a
    /// quiet filtered stream), it is written as usual, unless its time is also ahead of the
    /// wall clock: then its time does not move the cursor.
    pub(super) fn take(&mut self, decoded: Decoded, raw: &[u8], size: usize) -> Step {
        let time = match &decoded {
            Decoded::Event(ev) => Some(ev.time_us()),
            Decoded::Skipped { time_us, .. } => Some(*time_us),
            Decoded::Dead(_) => None,
        };
        self.shared.counters.borrow_mut().last_frame_at = Some(self.frame_at);
        if let (Some(t), Some(from)) = (time, self.dial.cursor)
            && t < from
        {
            metrics::counter!("jetstream_ingestor_events_skipped_total", "reason" => "before_cursor")
                .increment(1);
            if self.early == 0 {
                warn!(session = self.id, endpoint = %self.dial.endpoint, cursor = from, time_us = t, early_secs = (from - t) as f64 / 1e6, "the host sends events from before the cursor asked for; dropping them (they were committed before this dial)");
            }
            self.early += 1;
            return Step::Continue;
        }
        if time.is_none() && self.early > 0 && !self.caught_up {
            // Among the events from before the cursor: met (and dead-lettered) before.
            metrics::counter!("jetstream_ingestor_events_skipped_total", "reason" => "before_cursor")
                .increment(1);
            return Step::Continue;
        }
        if time.is_some() {
            self.caught_up = true;
        }
        let Some(t) = time else {
            return self.accept(decoded, size, true);
        };
        if let Some(held) = self.held.take() {
            let step = if t >= held.time {
                self.accept(held.decoded, held.size, true)
            } else {
                self.refute(held, t)
            };
            if let Step::End(..) = step {
                return step;
            }
        }
        let jump = duration_us(self.cfg.max_time_jump);
        let reference = self.last_time.or(self.dial.cursor);
        if jump > 0
            && self.dial.skip.is_none()
            && reference.is_some_and(|r| t > r.saturating_add(jump))
        {
            metrics::counter!("jetstream_ingestor_time_jumps_total", "outcome" => "held")
                .increment(1);
            self.held = Some(Held {
                decoded,
                raw: raw.to_vec(),
                size,
                time: t,
                from: reference.unwrap_or(0),
                at: self.frame_at,
            });
            return Step::Continue;
        }
        self.accept(decoded, size, true)
    }

    /// A held frame's jump was not confirmed by the next event (older than it): a
    /// `time_out_of_order` dead letter.
    fn refute(&mut self, held: Held, next: u64) -> Step {
        metrics::counter!("jetstream_ingestor_time_jumps_total", "outcome" => "refuted")
            .increment(1);
        let message = format!(
            "time_us {} jumps {:.1} s ahead of the stream (position {}) and the next event is back at {next}: not trusted as a position",
            held.time,
            (held.time - held.from) as f64 / 1e6,
            held.from
        );
        let mut d = DeadLetter::new("time_out_of_order", message, &held.raw);
        if let Decoded::Event(ev) = &held.decoded {
            d.did = Some(ev.did().to_owned());
        }
        self.accept(Decoded::Dead(d), held.size, true)
    }

    /// A held frame no event came after within [`JUMP_HOLD`]: written; its time moves the
    /// position unless it is ahead of the wall clock.
    pub(super) fn release_held(&mut self) -> Step {
        let Some(held) = self.held.take() else {
            return Step::Continue;
        };
        // Nothing contradicted it: a quiet (filtered) stream after a gap. Trusted unless it is
        // also ahead of our own clock, which no honest host's event can be.
        let trusted = held.time <= now_us().saturating_add(1_000_000);
        let outcome = if trusted {
            "released"
        } else {
            "released_untrusted"
        };
        metrics::counter!("jetstream_ingestor_time_jumps_total", "outcome" => outcome).increment(1);
        self.accept(held.decoded, held.size, trusted)
    }

    /// Puts a frame into the pending batch; `trusted`: its time may move the position.
    fn accept(&mut self, decoded: Decoded, size: usize, trusted: bool) -> Step {
        let time = match &decoded {
            Decoded::Event(ev) if trusted => Some(ev.time_us()),
            Decoded::Skipped { time_us, .. } if trusted => Some(*time_us),
            _ => None,
        };
        if let Some(t) = time {
            if self.first_time.is_none() {
                self.first_time = Some(t);
                if self.dial.probe() {
                    // Only the position was wanted: past the oversized frame.
                    return Step::End(EndReason::OversizeProbe, false);
                }
                if self.dial.skip.is_some() {
                    self.skip_passed(t);
                } else {
                    self.check_gap(t);
                }
            }
            if self.last_time.is_some_and(|l| t < l) {
                self.disordered = true;
            }
            self.last_time = Some(t);
        }
        match decoded {
            Decoded::Event(ev) => {
                let t = ev.time_us();
                if self.cfg.until.is_some_and(|u| t > u) {
                    return Step::End(EndReason::UntilReached, true);
                }
                let mut c = self.shared.counters.borrow_mut();
                if !self.progressed {
                    // The host works: status says so now, not when the session ends. And an
                    // explicit start cursor is used up: what is read from now on is committed
                    // before the next dial, which starts from the committed cursor.
                    self.progressed = true;
                    self.shared.update_cursors(|k| k.event_received(t));
                    c.consecutive_failures = 0;
                    metrics::gauge!("jetstream_ingestor_reader_consecutive_failures").set(0.0);
                }
                c.events_received += 1;
                // Past what the current line (a replay's own progress, else the stored
                // cursor) has committed: a replay of older events is progress too.
                if trusted && self.shared.cursors().line.is_none_or(|done| t > done) {
                    c.last_advance_at = Some(self.frame_at);
                }
                drop(c);
                let p = self.pending.get_or_insert_with(Pending::new);
                if trusted {
                    p.cursor = Some(p.cursor.map_or(t, |c| c.max(t)));
                }
                p.bytes += size;
                p.items.push(Item::Event(ev));
            }
            Decoded::Skipped { time_us, kind } => {
                debug!(kind, time_us, "skipping event of unknown kind");
                metrics::counter!("jetstream_ingestor_events_skipped_total", "reason" => "unknown_kind").increment(1);
                if trusted {
                    let p = self.pending.get_or_insert_with(Pending::new);
                    p.cursor = Some(p.cursor.map_or(time_us, |c| c.max(time_us)));
                }
            }
            Decoded::Dead(mut d) => {
                warn!(reason = d.reason, message = %d.message, len = d.raw_len, "frame dead-lettered");
                metrics::counter!("jetstream_ingestor_dead_letters_total", "reason" => d.reason)
                    .increment(1);
                self.shared.counters.borrow_mut().dead_letters += 1;
                d.position_us = Some(position_now(self.last_time, self.dial.cursor));
                let p = self.pending.get_or_insert_with(Pending::new);
                p.bytes += size;
                p.items.push(Item::Dead(d));
            }
        }
        Step::Continue
    }

    /// Whether the pending batch must go now: full in events, or in bytes (its fair share of
    /// the byte budget, so one batch never waits for the whole budget to free up).
    pub(super) fn pending_full(&self) -> bool {
        let share = self.cfg.max_in_flight_bytes / self.cfg.max_in_flight_batches.max(1);
        self.pending
            .as_ref()
            .is_some_and(|p| p.items.len() >= self.cfg.batch_max_events || p.bytes >= share.max(1))
    }

    /// The first event of a session far beyond the position asked for: raise the alarm.
    fn check_gap(&self, first_event_us: u64) {
        let session = self.id;
        let Some(gap_us) = detect_gap(
            self.dial.cursor,
            self.dial.rewind,
            first_event_us,
            self.cfg.gap_threshold,
        ) else {
            return;
        };
        let requested_cursor = self.dial.cursor.unwrap_or_default();
        warn!(
            session,
            endpoint = %self.dial.endpoint,
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
            endpoint: self.dial.endpoint.clone(),
            requested_cursor,
            first_event_us,
            gap_us,
        });
    }

    /// The first event of a real skip session: the oversized frame is behind us. Ends the
    /// skip and remembers where it was, so a later rewind across it goes straight past.
    fn skip_passed(&mut self, first_time: u64) {
        let (Some(step), Some(skip)) = (self.dial.skip, self.skip.as_mut()) else {
            return;
        };
        if !skip.observe(step, Probe::Passed) {
            return;
        }
        // Asked the host to skip it: resume at the first event after it; probed: exactly.
        let resume = if step.cap {
            first_time
        } else {
            step.cursor.unwrap_or(first_time)
        };
        info!(
            dials = skip.dials(),
            resumed_at = resume,
            "got past the oversized frame"
        );
        metrics::counter!("jetstream_ingestor_oversize_skips_total", "how" => if step.cap { "host" } else { "probed" })
            .increment(1);
        if let Some(origin) = skip.origin() {
            self.shared
                .skipped
                .set(Some((self.dial.endpoint_index, origin, resume)));
        }
        *self.skip = None;
    }
}
