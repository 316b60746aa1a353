//! The messages that cross rooms. Rooms never import each other; they hold `Recipient`s of
//! these messages, handed to them by the supervisor (docs/design.md §7).
//!
//! Flow: reader --PushBatch--> [verifier pool] --PushBatch--> writer --BatchCommitted--> reader.
//! A batch carries a [`Credit`] (a permit of the reader's in-flight window) that is released
//! only once the batch is committed and the reader has seen the commit, so the window bounds
//! everything between the socket and Redis.

use std::sync::Arc;
use std::time::Instant;

use actix::Message;
use tokio::sync::OwnedSemaphorePermit;

use crate::model::{DeadLetter, Event, StateOp, Transition};

/// One permit of the reader's in-flight window, and the batch's share of its byte budget.
/// Dropping it frees both.
#[derive(Debug)]
pub struct Credit {
    pub window: OwnedSemaphorePermit,
    /// Permits of the byte budget (`jetstream.max_in_flight_bytes`), one per frame byte.
    pub bytes: Option<OwnedSemaphorePermit>,
}

impl Credit {
    /// A window slot without a byte share (tests, benches).
    pub fn new(window: OwnedSemaphorePermit) -> Credit {
        Credit {
            window,
            bytes: None,
        }
    }
}

/// One element of a batch, in wire order.
#[derive(Debug)]
pub enum Item {
    Event(Event),
    Dead(DeadLetter),
    /// A bucket membership change (appended by the buckets room, in time order).
    Transition(Transition),
    /// A bucket state write, committed atomically with the batch.
    State(StateOp),
}

/// A numbered group of consecutive frames from one session.
#[derive(Debug)]
pub struct Batch {
    /// Strictly increasing over the reader's lifetime (across sessions and restarts).
    pub seq: u64,
    /// The session (dial) that produced it.
    pub session: u64,
    /// Host the frames came from (`source` field of every job).
    pub source: Arc<str>,
    pub items: Vec<Item>,
    /// The cursor to store once this batch is committed: the `time_us` of the newest frame
    /// in it (including frames we skipped on purpose). `None` if no frame told a time.
    pub cursor: Option<u64>,
    /// When the first frame of the batch arrived, for receive→commit latency.
    pub received_at: Instant,
    pub credit: Credit,
    /// Read by a replay behind the stored cursor (`Restart { from_cursor }` into the past):
    /// its commit records the replay's progress, so a crash does not abandon the replay.
    pub replay: bool,
}

/// Hand a batch to the next stage. The handler must only enqueue (bounded by credits).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PushBatch(pub Batch);

/// Redis acknowledged the commit of a batch.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct BatchCommitted {
    pub seq: u64,
    pub session: u64,
    /// The cursor now stored in Redis (if the batch carried one).
    pub cursor: Option<u64>,
    /// Entries written / skipped as already committed.
    pub written: usize,
    pub skipped: usize,
    pub received_at: Instant,
    /// Released when the reader handles this message.
    pub credit: Credit,
}

/// What to ask Jetstream for: the payload of `options_update` and the filters of the
/// subscribe URL. Validated by `jetstream::subscribe` (`Filters::validate`: limits 100
/// collections, 10,000 DIDs, syntax). Serialised with Jetstream's names, so an admin request
/// body `{"wantedCollections": [...], "wantedDids": [...]}` deserialises into it directly.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Filters {
    #[serde(rename = "wantedCollections", default)]
    pub wanted_collections: Vec<String>,
    #[serde(rename = "wantedDids", default)]
    pub wanted_dids: Vec<String>,
}

/// Replace the subscription's filters: validated, sent to Jetstream as an `options_update`
/// on the live socket (no reconnect) and kept for later dials (not across process restarts:
/// the config file wins then). `Err` carries the validation message.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), String>")]
pub struct UpdateFilters {
    pub filters: Filters,
}

/// Why the supervisor did not carry out a `Restart`, `Pause` or `Resume` (`[ha]`).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error(
        "this instance is a standby (the writer lease is held by {holder}); send it to the leader"
    )]
    Standby { holder: String },
    #[error("this instance lost the writer lease while the restart was prepared: {0}")]
    Fenced(String),
    #[error(
        "the pipeline is being reset (taking the writer lease over, or after a Redis rollback); try again in a moment"
    )]
    Resetting,
    #[error("the fleet's pause could not be stored in Redis ({0}); nothing was changed")]
    NotStored(String),
}

/// Tear the session down and dial again, from `from_cursor` or the committed cursor.
/// Answers the id of the next session.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<u64, Refused>")]
pub struct Restart {
    pub from_cursor: Option<u64>,
}

/// Close the socket and stop reading until `Resume`.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), Refused>")]
pub struct Pause;

#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), Refused>")]
pub struct Resume;

/// Stop reading (as `Pause`), then answer once every batch read so far has left the
/// pipeline (committed, or dropped by a writer halted by a rollback). The reader stays
/// paused until a `Restart` or `RewindTo`; unlike `Drain` it never reports `Finished`, which
/// would end the process.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Quiesce;

/// Stop reading, commit what is in flight, then answer. Used for SIGTERM and `replay`.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Drain;

/// The reader's state machine, as shown in status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReaderState {
    Starting,
    Connecting,
    Streaming,
    Backoff,
    Paused,
    /// Replay reached its `until` cursor, or a drain finished.
    Finished,
}

/// The reader's view, returned by `GetReaderStatus`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReaderStatus {
    pub state: ReaderState,
    pub endpoint: String,
    pub session_id: u64,
    pub committed_cursor: Option<u64>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub events_received: u64,
    pub dead_letters: u64,
    pub batches_committed: u64,
    pub sessions_started: u64,
    /// Ceiling of the last reconnect delay (the delay itself is drawn below it).
    pub backoff_ceiling_ms: u64,
    /// Index of `endpoint` in `jetstream.endpoints`.
    pub endpoint_index: usize,
    /// Moves to another endpoint since start.
    pub failovers: u64,
    /// `gap` alarms raised since start, and the last one.
    pub gaps: u64,
    pub last_gap: Option<GapAlarm>,
    /// The last move to another endpoint, with the error that caused it (later sessions
    /// overwrite `last_error`; this keeps why the reader left a host).
    pub last_failover: Option<FailoverNote>,
    /// Frames keep arriving but none moved the position for this many seconds (more than
    /// `jetstream.stall_timeout`): dead letters only, or events older than the cursor.
    pub stalled_secs: Option<u64>,
    /// The newest cursor committed since the last explicit start (the stored cursor at
    /// start, a `Restart { from_cursor }`, a rollback): a replay's progress. Dials resume
    /// from it.
    pub line_cursor: Option<u64>,
    /// The line is a replay behind the stored cursor (`Restart { from_cursor }` into the
    /// past, or one resumed at start) that has not caught up yet.
    pub replaying: bool,
    /// Frame bytes in flight between the socket and Redis, and the most seen at once: never
    /// above `jetstream.max_in_flight_bytes`.
    pub in_flight_bytes: u64,
    pub peak_in_flight_bytes: u64,
}

/// Why and where the reader last moved to another Jetstream endpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailoverNote {
    /// The session (dial) whose end caused the move.
    pub session: u64,
    pub from: String,
    pub to: String,
    /// How that session ended (`connect_failed`, `idle_timeout`, …).
    pub reason: &'static str,
    /// The reader's last error on `from` when it moved.
    pub error: Option<String>,
}

/// A session's first event was much newer than the cursor asked for: the host no longer had
/// the events in between (older than its retention, or it missed them). Those events are
/// not in Redis; replay them from another host if they matter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GapAlarm {
    pub session: u64,
    pub endpoint: String,
    /// The `cursor` of the dial.
    pub requested_cursor: u64,
    /// `time_us` of the first event the host sent.
    pub first_event_us: u64,
    /// How far the first event lies beyond the position the reader expected (the requested
    /// cursor plus the rewind it applied), in microseconds.
    pub gap_us: u64,
}

#[derive(Message)]
#[rtype(result = "ReaderStatus")]
pub struct GetReaderStatus;

/// The writer's view, returned by `GetWriterStatus`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WriterStatus {
    pub queued_batches: usize,
    pub commits: u64,
    pub entries_written: u64,
    pub entries_skipped: u64,
    /// Times Redis was found holding less than it acknowledged (see `RolledBack`).
    pub rollbacks: u64,
    pub consecutive_commit_failures: u32,
    pub last_error: Option<String>,
    pub stored_cursor: Option<u64>,
    /// `redis.wait_replicas`: a batch counts as committed once this many replicas have it
    /// (0: once the master has it).
    pub wait_replicas: u32,
}

#[derive(Message)]
#[rtype(result = "WriterStatus")]
pub struct GetWriterStatus;

/// The writer found Redis holding less than it acknowledged (chain token unknown, or the
/// stored cursor behind what this process committed). It drops every batch until
/// `ResumeWriting`; the supervisor stops the reader, reloads the bucket state, resumes the
/// writer and restarts the reader from `stored_cursor` (what Redis holds).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct RolledBack {
    pub stored_cursor: Option<u64>,
    /// The progress of a replay that was under way, as Redis holds it.
    pub replay_cursor: Option<u64>,
}

/// Accept batches again after a rollback, or after this instance took the writer lease
/// (`[ha]`); the reader is stopped and nothing is in flight. The writer reads the chain
/// afresh; `stored_cursor` is what Redis holds now (a later cursor below it is a rollback).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ResumeWriting {
    pub stored_cursor: Option<u64>,
    /// The fencing token of the lease just taken (`[ha]`): every commit checks it.
    pub fence: Option<u64>,
    /// The chain token, when the sender read it with `stored_cursor` (a takeover); `None`:
    /// the writer reads it.
    pub chain: Option<Option<String>>,
}

/// `[ha]`: this instance is not (or no longer) the writer: drop every batch until
/// `ResumeWriting`, commit nothing more.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct StandBy;

/// `[ha]`: a commit was refused because another instance holds a newer fencing token (it
/// took the lease over): this one must step down.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Fenced {
    pub token: u64,
    pub error: String,
}

/// A room met an error it cannot go on from (a worker thread gone, the writer gone, a bucket
/// evaluation failed): only the supervisor decides what happens to the process (it stops it,
/// exit code 70, rather than commit past events it lost).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Fatal {
    pub room: &'static str,
    pub error: String,
}

impl Fatal {
    /// Tells `to`; a room started without a supervisor (benchmarks, unit tests) stops its
    /// actix system itself.
    pub fn report(self, to: Option<&actix::Recipient<Fatal>>) {
        match to {
            Some(to) => to.do_send(self),
            None => {
                tracing::error!(room = self.room, error = %self.error, "fatal error and no supervisor; stopping");
                actix::System::current().stop_with_code(70);
            }
        }
    }
}

/// `[ha]`: what the lease keeper tells the supervisor.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub enum Leadership {
    /// The lease is ours, with this fencing token: take over from what Redis holds.
    Acquired { token: u64 },
    /// The lease is not ours any more (taken, expired, unrenewable): stop writing now.
    Lost { token: u64, reason: String },
}

/// `[ha]`: give the lease up (after the shutdown drain), so a standby takes over at once.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "bool")]
pub struct ReleaseLease;

/// `[ha]`: the keeper stops renewing the lease with this token (the writer was fenced: the
/// lease is another's). About an older token, it changes nothing.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct StepDown {
    pub token: u64,
}

/// `[ha]`: the lease as the keeper last saw it.
#[derive(Message)]
#[rtype(result = "HaStatus")]
pub struct GetHaStatus;

/// `[ha]`: whether this instance writes.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HaRole {
    Leader,
    Standby,
}

/// `[ha]` in the status: who writes, and how this instance stands.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct HaStatus {
    /// `leader` (this instance writes) or `standby`.
    pub role: HaRole,
    /// This instance's owner id.
    pub owner: String,
    /// This instance's fencing token while leader.
    pub token: Option<u64>,
    /// Who holds the lease, as last read (`owner token`), when another does.
    pub holder: Option<String>,
    /// Times this instance took the lease.
    pub acquisitions: u64,
    /// Times it lost or gave it up.
    pub handovers: u64,
}

/// Restart the reader from what Redis holds after a rollback: `Some(cursor)` minus the
/// rewind, or, when Redis holds no cursor at all, from where this process started.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct RewindTo {
    pub stored_cursor: Option<u64>,
    /// A replay behind the stored cursor to go on with (its progress as Redis holds it).
    pub replay_cursor: Option<u64>,
}

/// Retention of one stream, as of the keeper's last pass.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamRetention {
    pub stream: String,
    pub length: u64,
    /// The length bound (0 = none).
    pub bound: u64,
    pub trimmed_last: u64,
    /// Consumer groups holding the stream above its bound (their unread jobs are kept).
    pub blocking: Vec<Blocking>,
}

/// A consumer group holding a stream above its retention bound.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Blocking {
    pub group: String,
    /// Entries it has not been delivered yet (if Redis can tell).
    pub lag: Option<u64>,
    /// Entries delivered to it but not acknowledged.
    pub pending: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RetentionStatus {
    pub streams: Vec<StreamRetention>,
    pub last_error: Option<String>,
}

#[derive(Message)]
#[rtype(result = "RetentionStatus")]
pub struct GetRetentionStatus;

/// One enabled bucket, as shown in status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BucketInfo {
    pub id: String,
    /// Current members (suppressed `once_per_period` memberships included).
    pub members: u64,
    pub criteria_hash: String,
    /// The hash stored in Redis at start (`None`: first run of this bucket).
    pub stored_criteria_hash: Option<String>,
    /// The criteria differ from the stored ones: members left with `criteria_changed`.
    pub criteria_changed: bool,
}

/// The buckets room's view, returned by `GetBucketStatus`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BucketStatus {
    pub shards: usize,
    pub tracked_dids: u64,
    /// Transitions appended to batches since start (emitted ones only).
    pub transitions: u64,
    /// Commit events handed to the shards / skipped as already applied.
    pub events_evaluated: u64,
    pub events_skipped: u64,
    /// Every event at or before this time is in the bucket state.
    pub applied_to: u64,
    pub buckets: Vec<BucketInfo>,
    /// Ids of buckets defined with `enabled = false`.
    pub disabled: Vec<String>,
}

#[derive(Message)]
#[rtype(result = "BucketStatus")]
pub struct GetBucketStatus;

/// Everything the supervisor knows, returned by `GetStatus`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub reader: ReaderStatus,
    pub writer: WriterStatus,
    pub retention: RetentionStatus,
    /// `None` when no buckets are configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buckets: Option<BucketStatus>,
    pub uptime_secs: u64,
    pub reader_restarts: u64,
    /// The pipeline is being reset after a Redis rollback (reader stopped, writer dropping
    /// batches, bucket state reloading): nothing read so far counts as done.
    pub resetting: bool,
    /// `None` without `[ha]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaStatus>,
}

#[derive(Message)]
#[rtype(result = "Result<Status, actix::MailboxError>")]
pub struct GetStatus;
