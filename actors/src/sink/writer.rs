//! `RedisWriter`: applies batches strictly in arrival order, one atomic script per batch
//! (`commit.rs`), then tells the reader (`BatchCommitted`, carrying the batch's credit back).
//!
//! Failure: a commit that fails (Redis down, OOM, paused, timeout) stays at the head of the
//! queue and is retried with capped full-jitter backoff, forever; it is never skipped. A
//! retry of a commit whose first attempt did land is harmless: the dedupe index skips every
//! entry and the cursor does not move back. Meanwhile credits stay held, the reader's window
//! fills and reading stops: nothing is dropped and nothing queues without bound.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use actix::prelude::*;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::{info, warn};

use super::commit::{
    COMMIT_SCRIPT, CommitLimits, Invocation, Keys, entries_of, invocation, state_ops_of,
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
    invocation: Rc<Invocation>,
}

pub struct RedisWriter {
    cfg: WriterConfig,
    keys: Rc<Keys>,
    limits: CommitLimits,
    client: redis::Client,
    conn: Option<ConnectionManager>,
    committed_to: Recipient<BatchCommitted>,
    queue: VecDeque<Prepared>,
    /// A commit (or the wait before its retry) is in progress.
    busy: bool,
    retry: Backoff,
    script_sha: Rc<str>,
    status: WriterStatus,
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
            busy: false,
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

    /// Starts the next commit if none is running.
    fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        let (Some(conn), Some(head)) = (self.conn.clone(), self.queue.front()) else {
            return;
        };
        self.busy = true;
        let inv = head.invocation.clone();
        let sha = self.script_sha.clone();
        let started = Instant::now();
        let fut = async move { run_commit(conn, &sha, &inv).await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            metrics::histogram!("jetstream_ingestor_commit_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            match res {
                Ok((written, skipped)) => {
                    act.busy = false;
                    act.retry.reset();
                    act.status.consecutive_commit_failures = 0;
                    act.on_committed(written, skipped);
                    act.kick(ctx);
                }
                Err(e) => {
                    act.status.consecutive_commit_failures =
                        act.status.consecutive_commit_failures.saturating_add(1);
                    act.status.last_error = Some(e.to_string());
                    let delay = act.retry.next_delay();
                    metrics::counter!("jetstream_ingestor_commit_failures_total").increment(1);
                    warn!(
                        error = %e,
                        attempt = act.status.consecutive_commit_failures,
                        delay_ms = delay.as_millis() as u64,
                        queued = act.queue.len(),
                        "batch commit failed; retrying (nothing is skipped)"
                    );
                    ctx.run_later(delay, |act, ctx| {
                        act.busy = false;
                        act.kick(ctx);
                    });
                }
            }
        }));
    }

    fn on_committed(&mut self, written: u64, skipped: u64) {
        let Some(done) = self.queue.pop_front() else {
            return;
        };
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
        debug_assert!(done.entries as u64 == written + skipped);
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

/// One attempt: EVALSHA, loading the script first if Redis lost it (restart, flush).
async fn run_commit(
    mut conn: ConnectionManager,
    sha: &str,
    inv: &Invocation,
) -> redis::RedisResult<(u64, u64)> {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha)
        .arg(inv.keys.len())
        .arg(&inv.keys)
        .arg(&inv.args);
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
        let inv = invocation(
            &self.keys,
            &entries,
            &state_ops_of(&batch),
            batch.cursor,
            self.limits,
        );
        self.queue.push_back(Prepared {
            seq: batch.seq,
            session: batch.session,
            cursor: batch.cursor,
            received_at: batch.received_at,
            entries: entries.len(),
            credit: batch.credit,
            invocation: Rc::new(inv),
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
