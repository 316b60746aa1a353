//! Generate mode: the task that produces live events at a steady rate, and the bounded ring
//! buffer ([`LiveHub`]) that every live connection reads from, so a `cursor` within the last
//! few minutes replays from the buffer and then continues live.
//!
//! Producing runs on the blocking pool one tick at a time (CID computation is CPU work), so
//! the server's runtime thread stays free for the sockets. Connections pull from the ring at
//! their own pace; one that falls behind the oldest kept event skips ahead to it (logged), so
//! memory stays bounded whatever the clients do.
//!
//! Failure: nothing here can fail except the blocking task panicking, which stops generation
//! (logged); connected clients then idle.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tracing::{debug, error, warn};

use super::feed::Line;
use super::generate::Generator;

/// How long generated events stay replayable unless the config says otherwise.
const RETENTION_US: u64 = 5 * 60 * 1_000_000;
/// Hard cap on buffered events, whatever the rate.
const MAX_BUFFERED: usize = 600_000;
/// Production tick.
const TICK: Duration = Duration::from_millis(10);

/// The ring buffer of recent live events, numbered by a sequence that only grows.
pub(crate) struct LiveHub {
    ring: Mutex<Ring>,
    retention_us: u64,
    /// Carries the sequence number of the next event to be produced; bumped on every push.
    next: watch::Sender<u64>,
}

struct Ring {
    /// Sequence number of `events[0]`.
    first_seq: u64,
    events: VecDeque<Arc<Line>>,
}

impl LiveHub {
    /// `retention_us`: how long events stay replayable (default five minutes).
    pub fn new(retention_us: Option<u64>) -> LiveHub {
        LiveHub {
            retention_us: retention_us.unwrap_or(RETENTION_US),
            ring: Mutex::new(Ring {
                first_seq: 0,
                events: VecDeque::new(),
            }),
            next: watch::channel(0).0,
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.next.subscribe()
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends events (in time order) and evicts what is past retention or over the cap.
    pub fn push(&self, lines: Vec<Arc<Line>>) {
        let next = {
            let mut ring = self.ring();
            ring.events.extend(lines);
            let newest = ring.events.back().map_or(0, |l| l.time_us);
            let horizon = newest.saturating_sub(self.retention_us);
            while ring
                .events
                .front()
                .is_some_and(|l| l.time_us < horizon || ring.events.len() > MAX_BUFFERED)
            {
                ring.events.pop_front();
                ring.first_seq += 1;
            }
            ring.first_seq + ring.events.len() as u64
        };
        self.next.send_replace(next);
    }

    /// Where a new connection starts: the first kept event with `time_us >= cursor` (the
    /// oldest kept one if the cursor is older), or the next event to come without a cursor.
    pub fn start_seq(&self, cursor: Option<u64>) -> u64 {
        let ring = self.ring();
        match cursor {
            None => ring.first_seq + ring.events.len() as u64,
            Some(c) => ring.first_seq + ring.events.partition_point(|l| l.time_us < c) as u64,
        }
    }

    /// Copies up to `max` events from `from` into `out`; returns the sequence to read next.
    pub fn read(&self, from: u64, max: usize, out: &mut VecDeque<Arc<Line>>) -> u64 {
        let ring = self.ring();
        let from = if from < ring.first_seq {
            warn!(
                skipped = ring.first_seq - from,
                "live subscriber fell behind the buffer; skipping ahead"
            );
            ring.first_seq
        } else {
            from
        };
        let start = usize::try_from(from - ring.first_seq).unwrap_or(usize::MAX);
        let taken = ring.events.iter().skip(start).take(max).cloned();
        let before = out.len();
        out.extend(taken);
        from + (out.len() - before) as u64
    }
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Produces `rate` events per second into `hub` until `stop` turns true. Times are the wall
/// clock in microseconds shifted by `clock_offset_us`, strictly increasing.
pub(crate) async fn run_generator(
    hub: Arc<LiveHub>,
    rate: u32,
    seed: u64,
    clock_offset_us: i64,
    mut stop: watch::Receiver<bool>,
) {
    let mut generator = Some(Box::new(Generator::new(seed)));
    let started = Instant::now();
    let mut produced: u64 = 0;
    let mut last_time_us = 0u64;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
                continue;
            }
        }
        let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        // After a stall, do not burst more than one second's worth.
        if due.saturating_sub(produced) > u64::from(rate) {
            produced = due - u64::from(rate);
        }
        let count = due.saturating_sub(produced);
        if count == 0 {
            continue;
        }
        let Some(mut g) = generator.take() else {
            break;
        };
        let first_time = last_time_us;
        let made = tokio::task::spawn_blocking(move || {
            let mut lines = Vec::with_capacity(count as usize);
            let mut t = first_time;
            for _ in 0..count {
                t = super::clock::shifted(now_us(), clock_offset_us).max(t + 1);
                let text = g.next_event(t);
                lines.push(Arc::new(Line::from_bytes(text.as_bytes(), t)));
            }
            (g, lines, t)
        })
        .await;
        match made {
            Ok((g, lines, t)) => {
                generator = Some(g);
                last_time_us = t;
                produced += count;
                debug!(count, "generated live events");
                hub.push(lines);
            }
            Err(err) => {
                error!(%err, "live event generator failed; generation stopped");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t: u64) -> Arc<Line> {
        Arc::new(Line::from_bytes(
            format!("{{\"time_us\":{t}}}").as_bytes(),
            t,
        ))
    }

    #[test]
    fn ring_replays_from_cursor_and_evicts_old_events() {
        let hub = LiveHub::new(None);
        hub.push(vec![line(1), line(2), line(3)]);
        assert_eq!(hub.start_seq(None), 3);
        assert_eq!(hub.start_seq(Some(2)), 1);
        let mut out = VecDeque::new();
        assert_eq!(hub.read(1, 10, &mut out), 3);
        assert_eq!(out.len(), 2);
        // An event far in the future evicts everything older than the retention.
        hub.push(vec![line(RETENTION_US + 10)]);
        assert_eq!(hub.start_seq(Some(0)), 3);
        let mut out = VecDeque::new();
        assert_eq!(hub.read(0, 10, &mut out), 4);
        assert_eq!(out.len(), 1);
    }
}
