//! What operators see: [`Sampler`] turns the supervisor's successive `GetStatus` answers
//! (polled by `app.rs` every 250 ms) into rates (events/s, jobs/s over the last 10 s) and the
//! wall-clock time of the last event; [`StatusView`] is the one flat shape shown by
//! `GET /admin/status`, written into the heartbeat hash and printed by `admin status`; and
//! [`readiness`] decides `/readyz`. Pure: no I/O, the caller passes the clocks.
//!
//! Everything is computed at the edge from counters the actors already keep, so the actors
//! need no extra state for it.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actors::messages::{FailoverNote, ReaderState, Status};
use actors::model::Cursor;
use serde::{Deserialize, Serialize};

/// Rates are averaged over this window.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// The latest observation, shared (through a `watch` channel) with the admin API and the
/// heartbeat.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// `None` until the pipeline has started (it waits for Redis first).
    pub status: Option<Status>,
    pub events_per_second: f64,
    pub jobs_per_second: f64,
    /// Wall clock (unix ms) of the last sample in which `events_received` grew.
    pub last_event_unix_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    events: u64,
    jobs: u64,
}

/// Keeps the samples of the last [`RATE_WINDOW`].
#[derive(Debug, Default)]
pub struct Sampler {
    samples: VecDeque<Sample>,
    last_event_unix_ms: Option<u64>,
}

impl Sampler {
    /// Adds a sample taken at `at` (monotonic) / `wall` and returns the new observation.
    pub fn observe(&mut self, at: Instant, wall: SystemTime, status: &Status) -> Observed {
        let (events_per_second, jobs_per_second) = self.add(
            at,
            wall,
            status.reader.events_received,
            status.writer.entries_written,
        );
        Observed {
            status: Some(status.clone()),
            events_per_second,
            jobs_per_second,
            last_event_unix_ms: self.last_event_unix_ms,
        }
    }

    /// Adds counter values; returns (events/s, jobs/s) over the window.
    fn add(&mut self, at: Instant, wall: SystemTime, events: u64, jobs: u64) -> (f64, f64) {
        let sample = Sample { at, events, jobs };
        if self
            .samples
            .back()
            .is_none_or(|prev| sample.events > prev.events)
            && sample.events > 0
        {
            self.last_event_unix_ms = Some(unix_ms(wall));
        }
        self.samples.push_back(sample);
        while self
            .samples
            .front()
            .is_some_and(|s| at.duration_since(s.at) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        match self.samples.front() {
            Some(first) if at > first.at => {
                let secs = at.duration_since(first.at).as_secs_f64();
                (
                    sample.events.saturating_sub(first.events) as f64 / secs,
                    sample.jobs.saturating_sub(first.jobs) as f64 / secs,
                )
            }
            _ => (0.0, 0.0),
        }
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// How far the committed cursor (Jetstream event time) is behind `now`, in seconds.
pub fn lag_seconds(committed_cursor: Option<u64>, now: SystemTime) -> Option<f64> {
    committed_cursor.map(|c| Cursor(c).lag_at(now).as_secs_f64())
}

/// The state name as the API shows it (`connecting`, `streaming`, …); `starting` before the
/// pipeline runs.
pub fn state_name(state: Option<ReaderState>) -> String {
    state
        .and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "starting".to_owned())
}

/// `GET /admin/status`, the heartbeat hash and `admin status`: one flat, documented shape.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusView {
    /// `starting` (waiting for Redis), `connecting`, `streaming`, `backoff`, `paused`,
    /// `finished`.
    pub state: String,
    pub instance: String,
    pub version: String,
    pub endpoint: Option<String>,
    pub endpoint_index: Option<usize>,
    pub session_id: Option<u64>,
    /// Jetstream `time_us` of the newest committed event.
    pub committed_cursor: Option<u64>,
    pub lag_seconds: Option<f64>,
    pub last_event_unix_ms: Option<u64>,
    pub consecutive_failures: u32,
    pub consecutive_commit_failures: u32,
    pub last_error: Option<String>,
    pub last_commit_error: Option<String>,
    pub events_per_second: f64,
    pub jobs_per_second: f64,
    pub events_received: u64,
    pub jobs_written: u64,
    pub jobs_skipped: u64,
    pub dead_letters: u64,
    pub commits: u64,
    pub queued_batches: usize,
    pub sessions_started: u64,
    pub reader_restarts: u64,
    pub failovers: u64,
    /// The last move to another endpoint and why: `session 7: ws://a -> ws://b
    /// (connect_failed: …)`.
    pub last_failover: Option<String>,
    /// Gap alarms (the host no longer had the events after the requested cursor).
    pub gaps: u64,
    pub uptime_secs: u64,
    pub ready: bool,
    pub not_ready_reason: Option<String>,
    /// `[ha]`: role (`leader`/`standby`), owner id, fencing token, the lease's holder as
    /// last read, acquisitions and handovers; absent without `[ha]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<actors::messages::HaStatus>,
}

impl StatusView {
    /// Builds the view; `fresh` (a status asked for just now) wins over the sampled one.
    pub fn new(
        observed: &Observed,
        fresh: Option<&Status>,
        instance: &str,
        now: SystemTime,
    ) -> StatusView {
        let status = fresh.or(observed.status.as_ref());
        let (ready, reason) = readiness(status);
        let reader = status.map(|s| &s.reader);
        let writer = status.map(|s| &s.writer);
        StatusView {
            state: state_name(reader.map(|r| r.state)),
            instance: instance.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            endpoint: reader.map(|r| r.endpoint.clone()),
            endpoint_index: reader.map(|r| r.endpoint_index),
            session_id: reader.map(|r| r.session_id),
            committed_cursor: reader.and_then(|r| r.committed_cursor),
            lag_seconds: lag_seconds(reader.and_then(|r| r.committed_cursor), now),
            last_event_unix_ms: observed.last_event_unix_ms,
            consecutive_failures: reader.map_or(0, |r| r.consecutive_failures),
            consecutive_commit_failures: writer.map_or(0, |w| w.consecutive_commit_failures),
            last_error: reader.and_then(|r| r.last_error.clone()),
            last_commit_error: writer.and_then(|w| w.last_error.clone()),
            events_per_second: round1(observed.events_per_second),
            jobs_per_second: round1(observed.jobs_per_second),
            events_received: reader.map_or(0, |r| r.events_received),
            jobs_written: writer.map_or(0, |w| w.entries_written),
            jobs_skipped: writer.map_or(0, |w| w.entries_skipped),
            dead_letters: reader.map_or(0, |r| r.dead_letters),
            commits: writer.map_or(0, |w| w.commits),
            queued_batches: writer.map_or(0, |w| w.queued_batches),
            sessions_started: reader.map_or(0, |r| r.sessions_started),
            reader_restarts: status.map_or(0, |s| s.reader_restarts),
            failovers: reader.map_or(0, |r| r.failovers),
            last_failover: reader
                .and_then(|r| r.last_failover.as_ref())
                .map(describe_failover),
            gaps: reader.map_or(0, |r| r.gaps),
            uptime_secs: status.map_or(0, |s| s.uptime_secs),
            ready,
            not_ready_reason: reason,
            ha: status.and_then(|s| s.ha.clone()),
        }
    }

    /// The heartbeat hash: every field as a string, absent values as empty strings.
    pub fn heartbeat_fields(&self, updated_unix_ms: u64) -> Vec<(&'static str, String)> {
        fn opt<T: ToString>(v: Option<T>) -> String {
            v.map(|v| v.to_string()).unwrap_or_default()
        }
        vec![
            ("instance", self.instance.clone()),
            ("version", self.version.clone()),
            ("state", self.state.clone()),
            ("endpoint", opt(self.endpoint.as_ref())),
            ("session_id", opt(self.session_id)),
            ("committed_cursor", opt(self.committed_cursor)),
            (
                "lag_seconds",
                opt(self.lag_seconds.map(|l| format!("{l:.3}"))),
            ),
            ("last_event_unix_ms", opt(self.last_event_unix_ms)),
            (
                "consecutive_failures",
                self.consecutive_failures.to_string(),
            ),
            (
                "consecutive_commit_failures",
                self.consecutive_commit_failures.to_string(),
            ),
            ("events_total", self.events_received.to_string()),
            ("jobs_total", self.jobs_written.to_string()),
            ("dead_letters_total", self.dead_letters.to_string()),
            (
                "events_per_second",
                format!("{:.1}", self.events_per_second),
            ),
            ("jobs_per_second", format!("{:.1}", self.jobs_per_second)),
            ("uptime_secs", self.uptime_secs.to_string()),
            ("ready", self.ready.to_string()),
            ("updated_unix_ms", updated_unix_ms.to_string()),
        ]
    }
}

/// One line for a failover: `session 7: ws://a -> ws://b (connect_failed: …)`.
fn describe_failover(f: &FailoverNote) -> String {
    let error = f
        .error
        .as_deref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    format!(
        "session {}: {} -> {} ({}{error})",
        f.session, f.from, f.to, f.reason
    )
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `/readyz`: streaming, at least one batch committed, the last commit did not fail, and the
/// reader is not stalled (frames arriving, none newer than the cursor for
/// `jetstream.stall_timeout`). A standby (`[ha]`) is ready: it is healthy and takes over
/// when the leader goes; it is not the writer (its status says `ha.role`).
pub fn readiness(status: Option<&Status>) -> (bool, Option<String>) {
    if let Some(ha) = status.and_then(|s| s.ha.as_ref())
        && ha.role == actors::messages::HaRole::Standby
    {
        return (
            true,
            Some(format!(
                "standby: healthy, not the writer (lease held by {})",
                ha.holder.as_deref().unwrap_or("nobody yet")
            )),
        );
    }
    if let Some(secs) = status.and_then(|s| s.reader.stalled_secs) {
        return (
            false,
            Some(format!(
                "reader stalled: frames arrive but none moved the cursor for {secs} s (dead letters, or events older than the cursor)"
            )),
        );
    }
    ready_when(status.map(|s| {
        (
            s.reader.state,
            s.reader.batches_committed,
            s.writer.consecutive_commit_failures,
        )
    }))
}

/// Why a reader that is not streaming is not ready, as a sentence (the state's API name,
/// `backoff`, does not read as one: "reader is backoff").
fn not_streaming(state: ReaderState) -> &'static str {
    match state {
        ReaderState::Starting => "reader is starting",
        ReaderState::Connecting => "reader is connecting",
        ReaderState::Streaming => "reader is streaming",
        ReaderState::Backoff => "reader is waiting to reconnect (backoff after a failure)",
        ReaderState::Paused => "reader is paused",
        ReaderState::Finished => "reader has finished",
    }
}

/// The rule of [`readiness`] on the three facts it reads: state, batches committed, consecutive
/// commit failures (`None`: the pipeline has not started).
fn ready_when(facts: Option<(ReaderState, u64, u32)>) -> (bool, Option<String>) {
    let Some((state, committed, commit_failures)) = facts else {
        return (false, Some("pipeline starting (waiting for Redis)".into()));
    };
    if state != ReaderState::Streaming {
        return (false, Some(not_streaming(state).to_owned()));
    }
    if committed == 0 {
        return (false, Some("no batch committed yet".into()));
    }
    if commit_failures > 0 {
        return (
            false,
            Some(format!("{commit_failures} consecutive commit failures")),
        );
    }
    (true, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failover_reads_as_one_line() {
        let mut f = FailoverNote {
            session: 7,
            from: "ws://a".into(),
            to: "ws://b".into(),
            reason: "connect_failed",
            error: Some("ws://a: refused".into()),
        };
        assert_eq!(
            describe_failover(&f),
            "session 7: ws://a -> ws://b (connect_failed: ws://a: refused)"
        );
        f.error = None;
        assert_eq!(
            describe_failover(&f),
            "session 7: ws://a -> ws://b (connect_failed)"
        );
    }

    #[test]
    fn rates_come_from_successive_samples() {
        let mut s = Sampler::default();
        let t0 = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(s.add(t0, wall, 0, 0), (0.0, 0.0));
        assert_eq!(s.last_event_unix_ms, None);
        let (e, j) = s.add(
            t0 + Duration::from_secs(2),
            wall + Duration::from_secs(2),
            200,
            100,
        );
        assert!(
            (e - 100.0).abs() < 1e-9 && (j - 50.0).abs() < 1e-9,
            "{e} {j}"
        );
        assert_eq!(s.last_event_unix_ms, Some(1_002_000));
        // Quiet for 20 s: the window forgets the burst, the last event time stays.
        let (e, _) = s.add(
            t0 + Duration::from_secs(22),
            wall + Duration::from_secs(22),
            200,
            100,
        );
        assert_eq!(e, 0.0);
        assert_eq!(s.last_event_unix_ms, Some(1_002_000));
    }

    #[test]
    fn readiness_needs_streaming_and_a_commit() {
        assert!(!ready_when(None).0);
        assert!(!ready_when(Some((ReaderState::Connecting, 0, 0))).0);
        assert!(!ready_when(Some((ReaderState::Streaming, 0, 0))).0);
        assert!(ready_when(Some((ReaderState::Streaming, 1, 0))).0);
        assert!(!ready_when(Some((ReaderState::Streaming, 1, 2))).0);
        let (_, why) = ready_when(Some((ReaderState::Paused, 5, 0)));
        assert_eq!(why.as_deref(), Some("reader is paused"));
        let (_, why) = ready_when(Some((ReaderState::Backoff, 5, 0)));
        assert_eq!(
            why.as_deref(),
            Some("reader is waiting to reconnect (backoff after a failure)")
        );
        let (_, why) = ready_when(Some((ReaderState::Finished, 5, 0)));
        assert_eq!(why.as_deref(), Some("reader has finished"));
    }

    /// Every field of the heartbeat hash is in docs/jobs.md's heartbeat table.
    #[test]
    fn docs_jobs_md_lists_every_heartbeat_field() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/jobs.md"))
            .unwrap_or_else(|e| panic!("docs/jobs.md: {e}"));
        let section = doc
            .split("### `<prefix>heartbeat` fields")
            .nth(1)
            .expect("docs/jobs.md has a heartbeat fields section");
        let table: String = section
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .map(|l| l.split(" | ").next().unwrap_or_default().to_owned())
            .collect();
        let v = StatusView::new(&Observed::default(), None, "host-1", UNIX_EPOCH);
        let missing: Vec<&str> = v
            .heartbeat_fields(0)
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| !table.contains(&format!("`{k}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "heartbeat fields not documented: {missing:?}"
        );
    }

    #[test]
    fn view_before_start_and_lag() {
        let now = UNIX_EPOCH + Duration::from_micros(1_700_000_002_500_000);
        assert_eq!(lag_seconds(Some(1_700_000_000_000_000), now), Some(2.5));
        assert_eq!(lag_seconds(Some(1_800_000_000_000_000), now), Some(0.0));
        let v = StatusView::new(&Observed::default(), None, "host-1", now);
        assert_eq!(v.state, "starting");
        assert!(!v.ready);
        let fields = v.heartbeat_fields(5);
        assert!(fields.contains(&("state", "starting".to_owned())));
        assert!(fields.contains(&("instance", "host-1".to_owned())));
        assert!(fields.contains(&("committed_cursor", String::new())));
    }
}
