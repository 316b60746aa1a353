//! `RedisWriter`: commits batches strictly in arrival order, one atomic script per batch
//! (`commit.rs`), then tells the reader (`BatchCommitted`, carrying the batch's credit back).
//!
//! Pipelining: up to `redis.pipeline_depth` commits are in flight on the one connection, so
//! Redis executes batch k+1 while we prepare k+2 and handle k's reply. Order holds because
//! Redis executes a connection's commands in order, and safety holds because every script
//! first checks that the chain key holds its predecessor's token: if commit k fails, k+1
//! refuses to apply (before writing anything), so no cursor ever passes events that are not
//! in Redis.
//!
//! Failure: when a commit fails (Redis down, OOM, paused, timeout, chain broken), nothing new
//! is sent; once every in-flight reply is in, the writer reads the chain key to learn which
//! queued batches did land (an unknown outcome after a dropped connection), pops those, and
//! retries the rest from the first unlanded one, with capped full-jitter backoff, forever;
//! nothing is skipped. A retried batch that had landed writes nothing twice (dedupe index).
//! Meanwhile credits stay held, the reader's window fills and reading stops: nothing is
//! dropped and nothing queues without bound.
//!
//! Tests only (cargo feature `failpoints`, see [`failpoint`]): the process can be made to
//! abort at a named commit boundary, to prove the rules above against real crashes.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use actix::prelude::*;
use rand::RngExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::{error, info, warn};

use super::commit::{
    COMMIT_SCRIPT, CommitLimits, EXPECTED_ARG, Invocation, Keys, entries_of, invocation,
    state_ops_of,
};
use super::config::WriterConfig;
use crate::backoff::Backoff;
use crate::messages::{BatchCommitted, Credit, GetWriterStatus, PushBatch, WriterStatus};

/// One batch ready to commit.
struct Prepared {
    seq: u64,
    session: u64,
    cursor: Option<u64>,
    received_at: Instant,
    entries: usize,
    credit: Credit,
    /// This batch's chain token (`<writer epoch>:<seq>`).
    token: Rc<str>,
    invocation: Rc<Invocation>,
    /// The reply, once in: `(written, skipped)`.
    done: Option<(u64, u64)>,
}

pub struct RedisWriter {
    cfg: WriterConfig,
    keys: Rc<Keys>,
    limits: CommitLimits,
    client: redis::Client,
    conn: Option<ConnectionManager>,
    committed_to: Recipient<BatchCommitted>,
    /// Uncommitted batches in order; the first `sent` of them have been sent.
    queue: VecDeque<Prepared>,
    sent: usize,
    /// Replies still outstanding.
    in_flight: usize,
    /// A commit failed: send nothing until recovery has run.
    failed: bool,
    /// Waiting out the backoff before resending.
    waiting: bool,
    /// Token of the newest batch known to be committed (`None` = unchecked).
    last_token: Option<Rc<str>>,
    /// Random per writer incarnation, so tokens of two runs never collide.
    epoch: u64,
    retry: Backoff,
    script_sha: Rc<str>,
    status: WriterStatus,
}

/// How many queued batches (from the front) landed, given the chain key's value.
pub fn landed_prefix(chain: Option<&str>, queued_tokens: &[&str]) -> usize {
    match chain {
        Some(c) => queued_tokens
            .iter()
            .position(|t| *t == c)
            .map_or(0, |i| i + 1),
        None => 0,
    }
}

impl RedisWriter {
    /// Fails only if the URL cannot be parsed (validated earlier by settings).
    pub fn new(
        cfg: WriterConfig,
        committed_to: Recipient<BatchCommitted>,
    ) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(cfg.url.as_str())?;
        let limits = CommitLimits {
            dedupe_window_us: u64::try_from(cfg.dedupe_window.as_micros()).unwrap_or(u64::MAX),
        };
        Ok(RedisWriter {
            keys: Rc::new(Keys::new(&cfg.key_prefix)),
            limits,
            client,
            conn: None,
            committed_to,
            queue: VecDeque::new(),
            sent: 0,
            in_flight: 0,
            failed: false,
            waiting: false,
            last_token: None,
            epoch: rand::rng().random::<u64>(),
            retry: Backoff::new(cfg.retry_min, cfg.retry_max),
            script_sha: Rc::from(redis::Script::new(COMMIT_SCRIPT).get_hash()),
            status: WriterStatus {
                queued_batches: 0,
                commits: 0,
                entries_written: 0,
                entries_skipped: 0,
                consecutive_commit_failures: 0,
                last_error: None,
                stored_cursor: None,
            },
            cfg,
        })
    }

    fn manager_config(cfg: &WriterConfig) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(cfg.retry_max)
    }

    /// Sends queued batches until the pipeline is full.
    fn kick(&mut self, ctx: &mut Context<Self>) {
        let Some(conn) = self.conn.clone() else {
            return;
        };
        while !self.failed
            && !self.waiting
            && self.sent < self.queue.len()
            && self.sent < self.cfg.pipeline_depth
        {
            let i = self.sent;
            let expected = if i == 0 {
                self.last_token.clone()
            } else {
                Some(self.queue[i - 1].token.clone())
            };
            let item = &self.queue[i];
            let (inv, seq) = (item.invocation.clone(), item.seq);
            let sha = self.script_sha.clone();
            let conn = conn.clone();
            let started = Instant::now();
            failpoint::hit(failpoint::Point::BeforeCommit);
            self.sent += 1;
            self.in_flight += 1;
            let fut = async move {
                run_commit(conn, &sha, &inv, expected.as_deref().unwrap_or("")).await
            };
            ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
                act.in_flight -= 1;
                metrics::histogram!("jetstream_ingestor_commit_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                match res {
                    Ok(counts) => {
                        failpoint::hit(failpoint::Point::AfterCommitBeforeAck);
                        failpoint::hit(failpoint::Point::DuringDrain);
                        if let Some(p) = act.queue.iter_mut().find(|p| p.seq == seq) {
                            p.done = Some(counts);
                        }
                        act.pop_done();
                    }
                    Err(e) => act.on_failure(seq, &e),
                }
                if act.failed && act.in_flight == 0 {
                    act.recover(ctx);
                } else {
                    act.kick(ctx);
                }
            }));
        }
    }

    /// Pops every committed batch at the front and notifies the reader.
    fn pop_done(&mut self) {
        while let Some((written, skipped)) = self.queue.front().and_then(|p| p.done) {
            let Some(done) = self.queue.pop_front() else {
                break;
            };
            self.sent = self.sent.saturating_sub(1);
            self.retry.reset();
            self.status.consecutive_commit_failures = 0;
            self.last_token = Some(done.token.clone());
            self.notify(done, written, skipped);
        }
    }

    fn on_failure(&mut self, seq: u64, e: &redis::RedisError) {
        let chain = e.code() == Some("CHAIN");
        if !self.failed && !chain {
            self.status.consecutive_commit_failures =
                self.status.consecutive_commit_failures.saturating_add(1);
            self.status.last_error = Some(e.to_string());
            metrics::counter!("jetstream_ingestor_commit_failures_total").increment(1);
            warn!(error = %e, seq, attempt = self.status.consecutive_commit_failures, queued = self.queue.len(), "batch commit failed; recovering (nothing is skipped)");
        }
        self.failed = true;
    }

    /// After a failure, with no reply outstanding: learn which batches landed from the chain
    /// key, pop them, then resend the rest after a backoff delay.
    fn recover(&mut self, ctx: &mut Context<Self>) {
        let Some(mut conn) = self.conn.clone() else {
            return;
        };
        let chain_key = self.keys.chain.clone();
        let fut = async move {
            redis::cmd("GET")
                .arg(&chain_key)
                .query_async::<Option<String>>(&mut conn)
                .await
        };
        self.waiting = true;
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            match res {
                Ok(chain) => {
                    let tokens: Vec<&str> = act.queue.iter().map(|p| &*p.token).collect();
                    let landed = landed_prefix(chain.as_deref(), &tokens);
                    let known = chain.as_deref() == act.last_token.as_deref();
                    if landed == 0 && !known && chain.is_some() && act.last_token.is_some() {
                        // Neither ours nor in the queue: Redis lost acknowledged commits (a
                        // restart without fsync) or another writer uses this prefix.
                        metrics::counter!("jetstream_ingestor_commit_chain_unexpected_total").increment(1);
                        error!(chain = ?chain, last = ?act.last_token, "commit chain holds an unknown token: another writer on this key prefix, or Redis lost acknowledged writes (use appendfsync always)");
                    }
                    for p in act.queue.iter_mut().take(landed) {
                        // Landed before the connection broke; counts unknown: all written.
                        p.done = p.done.or(Some((p.entries as u64, 0)));
                    }
                    act.pop_done();
                    act.last_token = chain.map(Rc::from);
                    for p in &mut act.queue {
                        p.done = None;
                    }
                    act.sent = 0;
                    act.failed = false;
                }
                Err(e) => {
                    act.status.consecutive_commit_failures = act.status.consecutive_commit_failures.saturating_add(1);
                    act.status.last_error = Some(e.to_string());
                    metrics::counter!("jetstream_ingestor_commit_failures_total").increment(1);
                    warn!(error = %e, attempt = act.status.consecutive_commit_failures, "cannot read the commit chain to recover; retrying");
                }
            }
            let delay = act.retry.next_delay();
            ctx.run_later(delay, |act, ctx| {
                act.waiting = false;
                if act.failed {
                    // Recovery itself failed: try it again.
                    act.recover(ctx);
                } else {
                    act.kick(ctx);
                }
            });
        }));
    }

    fn notify(&mut self, done: Prepared, written: u64, skipped: u64) {
        self.status.commits += 1;
        self.status.entries_written += written;
        self.status.entries_skipped += skipped;
        if let Some(c) = done.cursor {
            self.status.stored_cursor = Some(self.status.stored_cursor.map_or(c, |o| o.max(c)));
        }
        metrics::counter!("jetstream_ingestor_commits_total").increment(1);
        metrics::counter!("jetstream_ingestor_entries_written_total").increment(written);
        metrics::counter!("jetstream_ingestor_entries_skipped_total", "reason" => "already_committed").increment(skipped);
        metrics::gauge!("jetstream_ingestor_writer_queue_batches").set(self.queue.len() as f64);
        if skipped > 0 {
            info!(
                seq = done.seq,
                skipped, "entries already committed were skipped (replay overlap)"
            );
        }
        // Bounded: every notification carries one of the reader's credits.
        self.committed_to.do_send(BatchCommitted {
            seq: done.seq,
            session: done.session,
            cursor: done.cursor,
            written: usize::try_from(written).unwrap_or(usize::MAX),
            skipped: usize::try_from(skipped).unwrap_or(usize::MAX),
            received_at: done.received_at,
            credit: done.credit,
        });
    }
}

/// One attempt: EVALSHA (with the predecessor token filled in), loading the script first if
/// Redis lost it (restart, flush).
async fn run_commit(
    mut conn: ConnectionManager,
    sha: &str,
    inv: &Invocation,
    expected: &str,
) -> redis::RedisResult<(u64, u64)> {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha).arg(inv.keys.len()).arg(&inv.keys);
    for (i, a) in inv.args.iter().enumerate() {
        if i == EXPECTED_ARG {
            cmd.arg(expected);
        } else {
            cmd.arg(a);
        }
    }
    match cmd.query_async::<(u64, u64)>(&mut conn).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            info!("commit script not cached on the server; loading it");
            let _: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(COMMIT_SCRIPT)
                .query_async(&mut conn)
                .await?;
            cmd.query_async(&mut conn).await
        }
        other => other,
    }
}

impl Actor for RedisWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        failpoint::watch_drain();
        let client = self.client.clone();
        let config = Self::manager_config(&self.cfg);
        let mut backoff = Backoff::new(self.cfg.retry_min, self.cfg.retry_max);
        let url = redact(&self.cfg.url);
        let connect = async move {
            loop {
                match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
                    Ok(c) => return c,
                    Err(e) => {
                        let delay = backoff.next_delay();
                        metrics::counter!("jetstream_ingestor_redis_connect_failures_total")
                            .increment(1);
                        warn!(error = %e, url = %url, delay_ms = delay.as_millis() as u64, "cannot connect to redis; retrying");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        };
        ctx.spawn(connect.into_actor(self).map(|conn, act, ctx| {
            info!(url = %redact(&act.cfg.url), "connected to redis");
            act.conn = Some(conn);
            act.kick(ctx);
        }));
    }
}

impl Handler<PushBatch> for RedisWriter {
    type Result = ();

    fn handle(&mut self, PushBatch(batch): PushBatch, ctx: &mut Self::Context) {
        let entries = entries_of(&batch);
        let count = entries.len();
        let token: Rc<str> = Rc::from(format!("{:x}:{}", self.epoch, batch.seq));
        let inv = invocation(
            &self.keys,
            entries,
            &state_ops_of(&batch),
            batch.cursor,
            &token,
            self.limits,
        );
        self.queue.push_back(Prepared {
            seq: batch.seq,
            session: batch.session,
            cursor: batch.cursor,
            received_at: batch.received_at,
            entries: count,
            credit: batch.credit,
            token,
            invocation: Rc::new(inv),
            done: None,
        });
        metrics::gauge!("jetstream_ingestor_writer_queue_batches").set(self.queue.len() as f64);
        self.kick(ctx);
    }
}

impl Handler<GetWriterStatus> for RedisWriter {
    type Result = MessageResult<GetWriterStatus>;

    fn handle(&mut self, _: GetWriterStatus, _ctx: &mut Self::Context) -> Self::Result {
        let mut s = self.status.clone();
        s.queued_batches = self.queue.len();
        MessageResult(s)
    }
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Reads the stored cursor, waiting (with backoff) until Redis answers. `Err` only when the
/// stored value is not a cursor: that needs an operator, guessing would lose or repeat data.
pub async fn load_cursor(cfg: &WriterConfig) -> Result<Option<u64>, String> {
    let client = redis::Client::open(cfg.url.as_str()).map_err(|e| format!("redis.url: {e}"))?;
    let key = Keys::new(&cfg.key_prefix).cursor;
    let mut backoff = Backoff::new(cfg.retry_min, cfg.retry_max);
    let url = redact(&cfg.url);
    loop {
        let attempt = async {
            let mut c = client.get_multiplexed_async_connection().await?;
            redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<String>>(&mut c)
                .await
        };
        match tokio::time::timeout(cfg.connect_timeout, attempt).await {
            Ok(Ok(None)) => return Ok(None),
            Ok(Ok(Some(v))) => {
                return v
                    .trim()
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| format!("{key} holds {v:?}, which is not a cursor (unix microseconds); fix or delete it"));
            }
            Ok(Err(e)) => warn!(error = %e, url = %url, "cannot read the stored cursor; retrying"),
            Err(_) => warn!(url = %url, "reading the stored cursor timed out; retrying"),
        }
        metrics::counter!("jetstream_ingestor_redis_connect_failures_total").increment(1);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Test-only crash points, compiled in with the cargo feature `failpoints` (the binary that
/// `cargo test` builds; never a release build) and empty functions without it.
///
/// `JETSTREAM_INGESTOR_FAILPOINT` arms one point; the process then calls
/// `std::process::abort()` (no unwinding, no flushing: as abrupt as kill -9) when it reaches
/// that point for the N-th time (N from 1):
/// - `before_commit:N`: the N-th commit attempt is about to be sent (earlier ones may still
///   be in flight, so Redis may or may not have applied them);
/// - `after_commit_before_ack:N`: Redis acknowledged the N-th commit, the reader has not
///   heard of it (its cursor and credit are not updated);
/// - `during_drain[:N]`: the N-th commit acknowledged after SIGTERM, while the shutdown
///   drain commits what is in flight.
///
/// Read from the environment here rather than in settings: it is not a setting, and builds
/// without the feature do not know it. An unknown value aborts at start, loudly.
#[cfg(feature = "failpoints")]
mod failpoint {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Point {
        BeforeCommit,
        AfterCommitBeforeAck,
        DuringDrain,
    }

    static ARMED: OnceLock<Option<(Point, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    /// SIGTERM seen: the drain has begun.
    static DRAINING: AtomicBool = AtomicBool::new(false);

    fn armed() -> Option<(Point, u64)> {
        *ARMED.get_or_init(|| {
            let value = std::env::var("JETSTREAM_INGESTOR_FAILPOINT").ok()?;
            let (name, n) = value.split_once(':').unwrap_or((value.as_str(), "1"));
            let point = match name {
                "before_commit" => Some(Point::BeforeCommit),
                "after_commit_before_ack" => Some(Point::AfterCommitBeforeAck),
                "during_drain" => Some(Point::DuringDrain),
                _ => None,
            };
            match (point, n.parse::<u64>()) {
                (Some(p), Ok(n)) if n > 0 => Some((p, n)),
                _ => {
                    eprintln!("invalid JETSTREAM_INGESTOR_FAILPOINT {value:?}; aborting");
                    std::process::abort();
                }
            }
        })
    }

    /// Reached `point`: aborts if it is the armed one, for the N-th time.
    pub fn hit(point: Point) {
        let Some((armed, n)) = armed() else {
            return;
        };
        if armed != point || (point == Point::DuringDrain && !DRAINING.load(Ordering::SeqCst)) {
            return;
        }
        if HITS.fetch_add(1, Ordering::SeqCst) + 1 == n {
            eprintln!("failpoint {point:?}:{n} reached; aborting");
            std::process::abort();
        }
    }

    /// With `during_drain` armed: notes the SIGTERM that starts the drain.
    pub fn watch_drain() {
        #[cfg(unix)]
        if matches!(armed(), Some((Point::DuringDrain, _))) {
            actix::spawn(async {
                use tokio::signal::unix::{SignalKind, signal};
                if let Ok(mut term) = signal(SignalKind::terminate()) {
                    term.recv().await;
                    DRAINING.store(true, Ordering::SeqCst);
                }
            });
        }
    }
}

#[cfg(not(feature = "failpoints"))]
mod failpoint {
    pub enum Point {
        BeforeCommit,
        AfterCommitBeforeAck,
        DuringDrain,
    }

    #[inline(always)]
    pub fn hit(_: Point) {}

    #[inline(always)]
    pub fn watch_drain() {}
}

#[cfg(test)]
mod tests {
    use super::landed_prefix;

    #[test]
    fn the_chain_tells_how_many_queued_batches_landed() {
        let q = ["e:1", "e:2", "e:3"];
        assert_eq!(landed_prefix(Some("e:2"), &q), 2);
        assert_eq!(landed_prefix(Some("e:3"), &q), 3);
        assert_eq!(
            landed_prefix(Some("e:0"), &q),
            0,
            "the chain still holds the last known commit"
        );
        assert_eq!(landed_prefix(None, &q), 0);
    }
}
