//! `RedisWriter`: commits batches strictly in arrival order, one atomic transaction per batch
//! (`commit.rs`), then tells the reader (`BatchCommitted`, carrying the batch's credit back).
//!
//! Per batch: a read-only probe (which entries are already committed), then the
//! `MULTI … EXEC` commit. Up to `redis.pipeline_depth` batches are in flight on the one
//! connection, so Redis always has the next commit queued while we encode and read replies;
//! Redis executes a connection's commands in order, so commits land in order. Each commit
//! checks, inside its own transaction, that the chain key holds its predecessor's token, and
//! undoes itself otherwise: a failed commit is never overtaken (which would store a cursor past
//! events that are not in Redis). A probe that ran before an in-flight predecessor committed
//! misses that predecessor's identities; they are added from memory before committing.
//!
//! Failure: when a probe or commit fails (Redis down, OOM, paused, timeout, chain broken),
//! nothing new is sent; once every in-flight reply is in, the writer reads the chain key to
//! learn which queued batches did land (an unknown outcome after a dropped connection), pops
//! those, and retries the rest from the first unlanded one (fresh probes), with capped
//! full-jitter backoff, forever; nothing is skipped. Meanwhile credits stay held, the reader's
//! window fills and reading stops: nothing is dropped and nothing queues without bound.
//!
//! Tests only (cargo feature `failpoints`, see `failpoint.rs`): the process can be made to
//! abort at a named commit boundary, to prove the rules above against real crashes.

use std::collections::{HashSet, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use actix::prelude::*;
use rand::RngExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Pipeline, Value};
use tracing::{error, info, warn};

use super::commit::{CommitLimits, Encoded, Keys, encode};
use super::config::WriterConfig;
use super::cursors::Stored;
use super::failpoint;
use super::overlap::OverlapNotice;
use crate::backoff::Backoff;
use crate::messages::{
    Batch, BatchCommitted, Credit, Fenced, GetWriterStatus, PushBatch, ResumeWriting, RolledBack,
    StandBy, WriterStatus,
};

/// Identities of commits a probe could not see. foldhash, not SipHash: this set is built for
/// every commit and hashing was ~2% of the writer's samples; it is seeded per process, and a
/// batch holds at most `batch_max_events` identities, so flooding it gains nothing.
type IdentitySet<'a> = HashSet<&'a str, foldhash::fast::RandomState>;

/// Where a queued batch is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    /// Nothing sent (or reset by a failure).
    Queued,
    /// The probe is in flight; it was sent after `commits_before` commits.
    Probing { commits_before: u64 },
    /// The probe answered: which identities were committed.
    Probed {
        commits_before: u64,
        present: Vec<bool>,
    },
    /// The commit is in flight (the `commit_no`-th commit sent), writing the identities not
    /// marked in `skipped`.
    Committing { commit_no: u64, skipped: Vec<bool> },
}

/// One batch ready to commit.
struct Prepared {
    seq: u64,
    session: u64,
    cursor: Option<u64>,
    received_at: Instant,
    credit: Credit,
    /// This batch's chain token (`<writer epoch>:<seq>`).
    token: Rc<str>,
    encoded: Rc<Encoded>,
    stage: Stage,
    /// The reply, once in: `(written, skipped)`.
    done: Option<(u64, u64)>,
}

/// A committed batch whose identities later probes may not have seen yet.
struct Recent {
    commit_no: u64,
    encoded: Rc<Encoded>,
    skipped: Vec<bool>,
}

pub struct RedisWriter {
    cfg: WriterConfig,
    keys: Rc<Keys>,
    limits: CommitLimits,
    /// Where Redis is: with Sentinel, asked again after every failure (a failover).
    target: crate::redis_target::RedisTarget,
    /// The address the connection goes to (the master's, with Sentinel).
    master: Option<redis::ConnectionAddr>,
    conn: Option<ConnectionManager>,
    committed_to: Recipient<BatchCommitted>,
    /// Told when Redis lost acknowledged commits (the supervisor resets the pipeline).
    rollback_to: Option<Recipient<RolledBack>>,
    /// Redis rolled back, or this instance is a standby (`[ha]`): every batch is dropped
    /// (its credit freed, nothing written) until `ResumeWriting`.
    halted: bool,
    /// `[ha]`: the fencing token of the lease this instance holds; every commit checks it.
    fence: Option<u64>,
    /// A commit was refused for a newer fencing token (the error): step down once every
    /// reply is in.
    fenced: Option<String>,
    /// Told when this writer was fenced off (`[ha]`).
    fenced_to: Option<Recipient<Fenced>>,
    /// Uncommitted batches in order.
    queue: VecDeque<Prepared>,
    /// Recently committed batches (as many as can be in flight).
    recent: VecDeque<Recent>,
    /// Commits sent so far (numbers them).
    commits_sent: u64,
    /// Probes and commits whose replies are outstanding.
    in_flight: usize,
    /// A probe or commit failed: send nothing until recovery has run.
    failed: bool,
    /// Waiting out the backoff before resending.
    waiting: bool,
    /// Token of the newest batch known to be committed (`None` = unchecked).
    last_token: Option<Rc<str>>,
    /// Token of the newest batch pushed (the predecessor of the next one).
    last_pushed: Option<Rc<str>>,
    /// Random per writer incarnation, so tokens of two runs never collide.
    epoch: u64,
    retry: Backoff,
    status: WriterStatus,
    /// Logs the replay overlap once per reader session (the rest is only counted).
    overlap: OverlapNotice,
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

/// The commit transaction to send: as encoded (the usual case, sent without copying) or
/// rebuilt without committed entries or for another predecessor.
enum ToSend {
    AsEncoded(Rc<Encoded>),
    Rebuilt(Pipeline),
}

impl ToSend {
    fn get(&self) -> &Pipeline {
        match self {
            ToSend::AsEncoded(e) => &e.commit,
            ToSend::Rebuilt(p) => p,
        }
    }
}

/// Why a probe or commit did not go through.
#[derive(Debug)]
enum CommitError {
    Redis(redis::RedisError),
    Reply(String),
}

impl std::fmt::Display for CommitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommitError::Redis(e) => write!(f, "{e}"),
            CommitError::Reply(m) => write!(f, "unexpected reply: {m}"),
        }
    }
}

/// A short, stable label for a commit failure (metric `redis_errors_total{kind}`).
fn error_kind(e: &CommitError) -> &'static str {
    let CommitError::Redis(e) = e else {
        return "reply";
    };
    if e.is_timeout() {
        return "timeout";
    }
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        return "connection";
    }
    // Redis's own codes too: redis-rs shows known ones by their Rust names (`NoPerm`).
    let mut text = e.to_string();
    for (code, _) in crate::redis_target::server_errors(e) {
        text.push(' ');
        text.push_str(&code);
    }
    for (needle, kind) in [
        ("FENCED", "fenced"),
        ("CHAIN", "chain"),
        ("WRONGTYPE", "wrongtype"),
        ("OOM", "oom"),
        ("EXECABORT", "execabort"),
        ("LOADING", "loading"),
        ("MASTERDOWN", "masterdown"),
        ("READONLY", "readonly"),
        ("NOPERM", "noperm"),
        ("NOAUTH", "noauth"),
    ] {
        if text.contains(needle) {
            return kind;
        }
    }
    "other"
}

impl RedisWriter {
    /// Fails only if the URL or a TLS file is unusable (validated earlier by settings).
    pub fn new(
        cfg: WriterConfig,
        committed_to: Recipient<BatchCommitted>,
    ) -> Result<Self, crate::redis_target::TargetError> {
        let target = cfg.target();
        target.client()?;
        let limits = CommitLimits {
            dedupe_window_us: u64::try_from(cfg.dedupe_window.as_micros()).unwrap_or(u64::MAX),
        };
        Ok(RedisWriter {
            keys: Rc::new(Keys::new(&cfg.key_prefix)),
            limits,
            target,
            master: None,
            conn: None,
            committed_to,
            rollback_to: None,
            halted: false,
            fence: None,
            fenced: None,
            fenced_to: None,
            queue: VecDeque::new(),
            recent: VecDeque::new(),
            commits_sent: 0,
            in_flight: 0,
            failed: false,
            waiting: false,
            last_token: None,
            last_pushed: None,
            epoch: rand::rng().random::<u64>(),
            retry: Backoff::new(cfg.retry_min, cfg.retry_max),
            overlap: OverlapNotice::default(),
            status: WriterStatus {
                queued_batches: 0,
                commits: 0,
                entries_written: 0,
                entries_skipped: 0,
                rollbacks: 0,
                consecutive_commit_failures: 0,
                last_error: None,
                stored_cursor: None,
                wait_replicas: cfg.wait_replicas,
            },
            cfg,
        })
    }

    /// What Redis held when the pipeline started: the first commit checks for that chain
    /// token, and a stored cursor below that one later is a rollback.
    pub fn expecting(mut self, stored: &Stored) -> Self {
        self.last_token = stored.chain.as_deref().map(Rc::from);
        self.status.stored_cursor = stored.cursor;
        self
    }

    /// Where to report a rollback of Redis (without it, a rollback is only logged).
    pub fn on_rollback(mut self, to: Recipient<RolledBack>) -> Self {
        self.rollback_to = Some(to);
        self
    }

    /// `[ha]`: start as a standby (nothing is written before `ResumeWriting` with the
    /// lease's fencing token), and report being fenced off to `to`.
    pub fn standby(mut self, to: Recipient<Fenced>) -> Self {
        self.halted = true;
        self.fenced_to = Some(to);
        self
    }

    fn manager_config(cfg: &WriterConfig) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(cfg.retry_max)
    }

    fn position(&self, seq: u64) -> Option<usize> {
        self.queue.iter().position(|p| p.seq == seq)
    }

    /// The token the chain must hold before batch `i` of the queue commits.
    fn expected(&self, i: usize) -> Option<Rc<str>> {
        if i == 0 {
            self.last_token.clone()
        } else {
            Some(self.queue[i - 1].token.clone())
        }
    }

    /// Sends what can go: probes for up to `pipeline_depth` batches, then commits in order
    /// for every probed batch whose predecessors' commits are out.
    fn kick(&mut self, ctx: &mut Context<Self>) {
        let Some(conn) = self.conn.clone() else {
            return;
        };
        if self.failed || self.waiting {
            return;
        }
        let mut active = self
            .queue
            .iter()
            .filter(|p| p.stage != Stage::Queued)
            .count();
        for i in 0..self.queue.len() {
            if active >= self.cfg.pipeline_depth {
                break;
            }
            if self.queue[i].stage != Stage::Queued {
                continue;
            }
            active += 1;
            self.send_probe(i, conn.clone(), ctx);
        }
        for i in 0..self.queue.len() {
            match &self.queue[i].stage {
                Stage::Committing { .. } => continue,
                Stage::Probed { .. } => self.send_commit(i, conn.clone(), ctx),
                _ => break,
            }
        }
    }

    fn send_probe(&mut self, i: usize, mut conn: ConnectionManager, ctx: &mut Context<Self>) {
        let commits_before = self.commits_sent;
        let item = &mut self.queue[i];
        let enc = item.encoded.clone();
        let seq = item.seq;
        if enc.probe.is_none() {
            item.stage = Stage::Probed {
                commits_before,
                present: Vec::new(),
            };
            return;
        }
        item.stage = Stage::Probing { commits_before };
        self.in_flight += 1;
        let fut = async move {
            match &enc.probe {
                Some(p) => p.query_async::<Vec<Value>>(&mut conn).await,
                None => Ok(Vec::new()),
            }
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.in_flight -= 1;
            if let Err(e) = act.on_probe(seq, res) {
                act.on_failure(seq, &e);
            }
            act.after_reply(ctx);
        }));
    }

    fn on_probe(
        &mut self,
        seq: u64,
        res: redis::RedisResult<Vec<Value>>,
    ) -> Result<(), CommitError> {
        let reply = res.map_err(CommitError::Redis)?;
        let Some(i) = self.position(seq) else {
            return Ok(());
        };
        let Stage::Probing { commits_before } = self.queue[i].stage else {
            return Ok(());
        };
        let present = self.queue[i]
            .encoded
            .parse_probe(&reply)
            .map_err(CommitError::Reply)?;
        self.queue[i].stage = Stage::Probed {
            commits_before,
            present,
        };
        Ok(())
    }

    /// Identities written by commits the probe of a batch could not see (sent after it).
    fn unseen_identities(&self, commits_before: u64) -> IdentitySet<'_> {
        fn add<'a>(ids: &mut IdentitySet<'a>, enc: &'a Encoded, skipped: &[bool]) {
            for i in 0..enc.identities() {
                if !skipped.get(i).copied().unwrap_or(false) {
                    ids.insert(enc.identity(i));
                }
            }
        }
        let mut ids = IdentitySet::default();
        for r in &self.recent {
            if r.commit_no >= commits_before {
                add(&mut ids, &r.encoded, &r.skipped);
            }
        }
        for p in &self.queue {
            if let Stage::Committing { commit_no, skipped } = &p.stage
                && *commit_no >= commits_before
            {
                add(&mut ids, &p.encoded, skipped);
            }
        }
        ids
    }

    fn send_commit(&mut self, i: usize, mut conn: ConnectionManager, ctx: &mut Context<Self>) {
        let Stage::Probed {
            commits_before,
            present,
        } = &self.queue[i].stage
        else {
            return;
        };
        let enc = self.queue[i].encoded.clone();
        let mut skipped = present.clone();
        skipped.resize(enc.identities(), false);
        let unseen = self.unseen_identities(*commits_before);
        if !unseen.is_empty() {
            for (k, s) in skipped.iter_mut().enumerate() {
                *s = *s || unseen.contains(enc.identity(k));
            }
        }
        let expects = self.expected(i);
        let expects = expects.as_deref().unwrap_or("");
        let duplicates = skipped.iter().filter(|s| **s).count();
        let pipe = if duplicates == 0 && expects == enc.expects {
            ToSend::AsEncoded(enc.clone())
        } else {
            ToSend::Rebuilt(enc.rebuilt(&skipped, expects))
        };
        let counts = (
            (enc.identities() - duplicates) as u64,
            (enc.repeats + duplicates) as u64,
        );
        let commit_no = self.commits_sent;
        self.commits_sent += 1;
        let seq = self.queue[i].seq;
        self.queue[i].stage = Stage::Committing { commit_no, skipped };
        failpoint::hit(failpoint::Point::BeforeCommit);
        self.in_flight += 1;
        let started = Instant::now();
        let replicas = self.replicas();
        let fut = async move {
            let reply = pipe.get().query_async::<Value>(&mut conn).await?;
            if let (Some(wanted), false) = (replicas, matches!(reply, Value::Nil)) {
                confirm_replicas(&mut conn, wanted, None).await?;
            }
            Ok::<_, redis::RedisError>(reply)
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.in_flight -= 1;
            metrics::histogram!("jetstream_ingestor_commit_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            match res {
                Ok(Value::Nil) => act.on_failure(
                    seq,
                    &CommitError::Reply("EXEC answered nil (transaction not run)".into()),
                ),
                Ok(_) => {
                    failpoint::hit(failpoint::Point::AfterCommitBeforeAck);
                    failpoint::hit(failpoint::Point::DuringDrain);
                    if let Some(i) = act.position(seq) {
                        act.queue[i].done = Some(counts);
                    }
                    act.pop_done();
                }
                Err(e) => act.on_failure(seq, &CommitError::Redis(e)),
            }
            act.after_reply(ctx);
        }));
    }

    /// After any reply: recover once a failure's replies are all in (step down if it was a
    /// fencing refusal), else send what can go. A standby only lets the replies drain.
    fn after_reply(&mut self, ctx: &mut Context<Self>) {
        if self.halted {
            if self.in_flight == 0 {
                self.failed = false;
                self.fenced = None;
            }
            return;
        }
        if self.failed && self.in_flight == 0 {
            match self.fenced.take() {
                Some(error) => self.step_down(error),
                None => self.recover(ctx),
            }
        } else {
            self.kick(ctx);
        }
    }

    /// Pops every committed batch at the front and notifies the reader.
    fn pop_done(&mut self) {
        while let Some((written, skipped)) = self.queue.front().and_then(|p| p.done) {
            let Some(done) = self.queue.pop_front() else {
                break;
            };
            self.retry.reset();
            self.status.consecutive_commit_failures = 0;
            self.last_token = Some(done.token.clone());
            if let Stage::Committing { commit_no, skipped } = &done.stage {
                for (stream, n) in done.encoded.added_per_stream(skipped) {
                    metrics::counter!("jetstream_ingestor_jobs_total", "stream" => stream.to_owned())
                        .increment(n);
                }
                self.recent.push_back(Recent {
                    commit_no: *commit_no,
                    encoded: done.encoded.clone(),
                    skipped: skipped.clone(),
                });
                while self.recent.len() > self.cfg.pipeline_depth {
                    self.recent.pop_front();
                }
            }
            self.notify(done, written, skipped);
        }
    }

    fn on_failure(&mut self, seq: u64, e: &CommitError) {
        if self.halted {
            return;
        }
        if let CommitError::Redis(re) = e
            && re.to_string().contains("FENCED")
        {
            self.fenced.get_or_insert_with(|| re.to_string());
        }
        // One failure is counted per incident: the commits behind a failed one undo
        // themselves (chain check), which is the same incident.
        if !self.failed {
            self.status.consecutive_commit_failures =
                self.status.consecutive_commit_failures.saturating_add(1);
            self.status.last_error = Some(e.to_string());
            metrics::counter!("jetstream_ingestor_commit_failures_total").increment(1);
            metrics::counter!("jetstream_ingestor_redis_errors_total", "kind" => error_kind(e))
                .increment(1);
            warn!(error = %e, seq, attempt = self.status.consecutive_commit_failures, queued = self.queue.len(), "batch commit failed; recovering (nothing is skipped)");
            // A missing ACL right (NOPERM, naming the command) or credential is not mended by
            // waiting: said plainly, in the log and in status; retried until it is granted.
            if let CommitError::Redis(r) = e
                && let Some(why) = crate::redis_target::refusal(r)
            {
                error!(%why, seq, "Redis refuses the commit; retrying until the right is granted (nothing is skipped, nothing is written)");
                self.status.last_error = Some(why);
            }
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
        let cursor_key = self.keys.cursor.clone();
        let replay_key = self.keys.replay.clone();
        let wait_key = self.keys.wait.clone();
        let replicas = self.replicas();
        let sentinel = self.target.discovers().then(|| self.target.clone());
        let current = self.master.clone();
        let config = Self::manager_config(&self.cfg);
        let timeout = self.cfg.connect_timeout;
        let fut = async move {
            // With Sentinel or Cluster the failure may be a failover or a slot that moved:
            // ask where to write now.
            let mut moved = None;
            if let Some(target) = sentinel {
                let client = target.resolve(timeout).await?;
                let addr = client.get_connection_info().addr().clone();
                if current.as_ref() != Some(&addr) {
                    conn = ConnectionManager::new_with_config(client, config).await?;
                    moved = Some((conn.clone(), addr));
                }
            }
            let held = redis::cmd("MGET")
                .arg(&chain_key)
                .arg(&cursor_key)
                .arg(&replay_key)
                .query_async::<(Option<String>, Option<String>, Option<String>)>(&mut conn)
                .await?;
            // What landed counts only once replicated (`redis.wait_replicas`): a write of our
            // own on this connection after it, then WAIT for that write.
            if let Some(wanted) = replicas {
                confirm_replicas(&mut conn, wanted, Some(&wait_key)).await?;
            }
            Ok::<_, redis::RedisError>((held, moved))
        };
        self.waiting = true;
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            if act.halted {
                // Stood by (or reset) while this ran: nothing of it applies any more.
                act.waiting = false;
                act.failed = false;
                return;
            }
            match res {
                Ok(((chain, stored, replay), moved)) => {
                    if let Some((conn, addr)) = moved {
                        warn!(from = ?act.master, to = ?addr, "the Redis master moved (Sentinel failover, or Cluster slot moved): writing to the new one");
                        metrics::counter!("jetstream_ingestor_redis_master_changes_total").increment(1);
                        act.conn = Some(conn);
                        act.master = Some(addr);
                    }
                    let tokens: Vec<&str> = act.queue.iter().map(|p| &*p.token).collect();
                    let landed = landed_prefix(chain.as_deref(), &tokens);
                    let known = chain.as_deref() == act.last_token.as_deref();
                    let stored = stored.and_then(|c| c.trim().parse::<u64>().ok());
                    let behind = matches!((stored, act.status.stored_cursor), (s, Some(ours)) if s.is_none_or(|s| s < ours));
                    let lost = landed == 0 && (!known || behind);
                    if act.last_token.is_some() && lost {
                        let replay = replay.and_then(|c| c.trim().parse::<u64>().ok());
                        act.rolled_back(chain, stored, replay);
                        act.waiting = false;
                        return;
                    }
                    for p in act.queue.iter_mut().take(landed) {
                        // Landed before the connection broke; counts unknown: all written.
                        let entries = p.encoded.identities() as u64;
                        p.done = p.done.or(Some((entries, p.encoded.repeats as u64)));
                    }
                    act.pop_done();
                    act.last_token = chain.map(Rc::from);
                    for p in &mut act.queue {
                        p.done = None;
                        p.stage = Stage::Queued;
                    }
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

    /// `redis.wait_replicas` and its timeout, when set.
    fn replicas(&self) -> Option<Replicas> {
        (self.cfg.wait_replicas > 0).then(|| Replicas {
            count: self.cfg.wait_replicas,
            timeout_ms: u64::try_from(self.cfg.wait_timeout.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Redis holds less than it acknowledged: the chain holds neither our last token nor a
    /// queued one (a restart from an older snapshot, AOF `everysec` after a host crash, an
    /// asynchronous replica promoted), or the stored cursor is behind what we committed.
    /// Everything queued is dropped (its events will be read again), and the supervisor is
    /// told so it restarts the reader from what Redis holds, with the bucket state reloaded.
    /// Until then (`ResumeWriting`) every batch is dropped.
    fn rolled_back(&mut self, chain: Option<String>, stored: Option<u64>, replay: Option<u64>) {
        metrics::counter!("jetstream_ingestor_redis_rollbacks_total").increment(1);
        warn!(
            chain = ?chain,
            our_last_commit = ?self.last_token,
            stored_cursor = ?stored,
            our_newest_cursor = ?self.status.stored_cursor,
            dropped_batches = self.queue.len(),
            "Redis lost acknowledged commits (restarted from an older snapshot or AOF, or a replica without them was promoted; or another writer uses this key prefix): resuming from the cursor Redis holds, bucket state reloaded; the events after it are read again"
        );
        self.status.rollbacks += 1;
        self.status.last_error = Some(format!(
            "redis rolled back: chain {chain:?}, stored cursor {stored:?}, this process had committed up to {:?}",
            self.status.stored_cursor
        ));
        self.halted = true;
        self.queue.clear();
        self.recent.clear();
        self.last_token = chain.map(Rc::from);
        self.last_pushed = None;
        self.status.stored_cursor = stored;
        self.failed = false;
        metrics::gauge!("jetstream_ingestor_writer_queue_batches").set(0.0);
        match &self.rollback_to {
            Some(to) => to.do_send(RolledBack {
                stored_cursor: stored,
                replay_cursor: replay,
            }),
            None => error!("no supervisor to reset the pipeline after a Redis rollback"),
        }
    }

    /// `[ha]`: another instance took the lease (a commit found a newer fencing token): drop
    /// everything queued (nothing of it landed: each refused commit undid itself), write
    /// nothing more, and tell the supervisor, which stops the reader. The batches will be
    /// written by the new leader, from what Redis holds.
    fn step_down(&mut self, error: String) {
        let token = self.fence.unwrap_or(0);
        metrics::counter!("jetstream_ingestor_ha_fenced_total").increment(1);
        warn!(
            fencing_token = token,
            dropped_batches = self.queue.len(),
            error = %error,
            "another instance took the writer lease: this one stops writing and becomes a standby"
        );
        self.status.last_error = Some(error.clone());
        self.stand_by();
        match &self.fenced_to {
            Some(to) => to.do_send(Fenced { token, error }),
            None => error!("no supervisor to stop the reader after the writer was fenced off"),
        }
    }

    /// Writes nothing until `ResumeWriting`: queue dropped (credits freed), fence forgotten.
    fn stand_by(&mut self) {
        self.halted = true;
        self.fence = None;
        self.failed = false;
        self.queue.clear();
        self.recent.clear();
        self.last_pushed = None;
        metrics::gauge!("jetstream_ingestor_writer_queue_batches").set(0.0);
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
        metrics::histogram!("jetstream_ingestor_batch_entries").record(written as f64);
        metrics::gauge!("jetstream_ingestor_writer_queue_batches").set(self.queue.len() as f64);
        if self.overlap.first_in_session(done.session, skipped) {
            info!(
                session = done.session,
                seq = done.seq,
                skipped,
                "entries already committed were skipped (replay overlap); further skips in this session are only counted in jetstream_ingestor_entries_skipped_total"
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

impl Actor for RedisWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        failpoint::watch_drain();
        let target = self.target.clone();
        let timeout = self.cfg.connect_timeout;
        let config = Self::manager_config(&self.cfg);
        let mut backoff = Backoff::new(self.cfg.retry_min, self.cfg.retry_max);
        let url = redact(&self.cfg.url);
        let connect = async move {
            loop {
                let client = target.resolve(timeout).await;
                let addr = client
                    .as_ref()
                    .ok()
                    .map(|c| c.get_connection_info().addr().clone());
                let made = match client {
                    Ok(c) => ConnectionManager::new_with_config(c, config.clone()).await,
                    Err(e) => Err(e.into()),
                };
                match made {
                    Ok(c) => return (c, addr),
                    Err(e) => {
                        let delay = backoff.next_delay();
                        metrics::counter!("jetstream_ingestor_redis_connect_failures_total")
                            .increment(1);
                        let error = crate::redis_target::describe(&e);
                        warn!(%error, url = %url, delay_ms = delay.as_millis() as u64, "cannot connect to redis; retrying");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        };
        ctx.spawn(connect.into_actor(self).map(|(conn, addr), act, ctx| {
            info!(url = %redact(&act.cfg.url), address = ?addr, "connected to redis");
            act.conn = Some(conn);
            act.master = addr;
            act.kick(ctx);
        }));
    }
}

impl Handler<PushBatch> for RedisWriter {
    type Result = ();

    fn handle(&mut self, PushBatch(batch): PushBatch, ctx: &mut Self::Context) {
        if self.halted {
            // Read before the rollback (or as a standby): dropped (credit freed), read again
            // after the reset or by the leader.
            let reason = if self.fenced_to.is_some() && self.fence.is_none() {
                "standby"
            } else {
                "redis_rollback"
            };
            metrics::counter!("jetstream_ingestor_batches_dropped_total", "reason" => reason)
                .increment(1);
            return;
        }
        let token: Rc<str> = Rc::from(format!("{:x}:{}", self.epoch, batch.seq));
        // Encoded for the usual case: its predecessor is the batch pushed before it.
        let expects = self
            .last_pushed
            .as_deref()
            .or(self.last_token.as_deref())
            .unwrap_or("");
        let encoded = encode(&self.keys, &batch, &token, expects, self.fence, self.limits);
        self.last_pushed = Some(token.clone());
        // The events themselves are no longer needed: the encoded commands hold them.
        let Batch {
            seq,
            session,
            cursor,
            received_at,
            credit,
            ..
        } = batch;
        self.queue.push_back(Prepared {
            seq,
            session,
            cursor,
            received_at,
            credit,
            token,
            encoded: Rc::new(encoded),
            stage: Stage::Queued,
            done: None,
        });
        metrics::gauge!("jetstream_ingestor_writer_queue_batches").set(self.queue.len() as f64);
        self.kick(ctx);
    }
}

impl Handler<ResumeWriting> for RedisWriter {
    type Result = ResponseActFuture<Self, ()>;

    /// After a rollback or a lease acquisition, once the reader is stopped and every batch
    /// read before is dropped: learn the chain afresh (checked by the next commit) and
    /// accept batches again.
    fn handle(&mut self, msg: ResumeWriting, _ctx: &mut Self::Context) -> Self::Result {
        let conn = self.conn.clone();
        let key = self.keys.chain.clone();
        let known = msg.chain.clone();
        let fut = async move {
            if let Some(chain) = known {
                return Some(chain);
            }
            let mut conn = conn?;
            redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<String>>(&mut conn)
                .await
                .ok()
        };
        Box::pin(fut.into_actor(self).map(move |chain, act, ctx| {
            // Unreadable now: the token read during recovery stays (the next commit checks it).
            if let Some(chain) = chain {
                act.last_token = chain.map(Rc::from);
            }
            act.queue.clear();
            act.recent.clear();
            act.last_pushed = None;
            act.halted = false;
            act.failed = false;
            act.fenced = None;
            act.fence = msg.fence;
            act.status.stored_cursor = msg.stored_cursor;
            match msg.fence {
                Some(token) => info!(fencing_token = token, "writer resumed as the leader"),
                None => info!("writer resumed after the Redis rollback"),
            }
            act.kick(ctx);
        }))
    }
}

impl Handler<StandBy> for RedisWriter {
    type Result = ();

    fn handle(&mut self, _: StandBy, _ctx: &mut Self::Context) {
        if !self.halted {
            info!("writer stands by: this instance does not hold the writer lease");
        }
        self.stand_by();
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

/// `redis.wait_replicas`: how many replicas must have a commit before it counts.
#[derive(Debug, Clone, Copy)]
struct Replicas {
    count: u32,
    timeout_ms: u64,
}

/// Waits until `wanted.count` replicas acknowledged every write this connection made (after
/// `mark`, a write of its own, when the connection may be new: WAIT only counts a
/// connection's own writes). Each `WAIT` blocks up to the timeout; while fewer replicas
/// answer, the batch does not count as committed (its credit stays held: reading slows down
/// rather than acknowledging what a failover could lose), with a warning and
/// `jetstream_ingestor_replica_waits_total{outcome="short"}` per timeout.
async fn confirm_replicas(
    conn: &mut ConnectionManager,
    wanted: Replicas,
    mark: Option<&str>,
) -> redis::RedisResult<()> {
    if let Some(key) = mark {
        redis::cmd("INCR").arg(key).query_async::<i64>(conn).await?;
    }
    loop {
        let got: i64 = redis::cmd("WAIT")
            .arg(wanted.count)
            .arg(wanted.timeout_ms)
            .query_async(conn)
            .await?;
        if got >= i64::from(wanted.count) {
            metrics::counter!("jetstream_ingestor_replica_waits_total", "outcome" => "ok")
                .increment(1);
            return Ok(());
        }
        metrics::counter!("jetstream_ingestor_replica_waits_total", "outcome" => "short")
            .increment(1);
        warn!(
            replicas = got,
            wanted = wanted.count,
            timeout_ms = wanted.timeout_ms,
            "a commit is not on enough replicas yet (redis.wait_replicas): it does not count as committed until it is"
        );
    }
}

pub use crate::redis_target::redact;

#[cfg(test)]
mod tests {
    use super::{CommitError, error_kind, landed_prefix};

    #[test]
    fn commit_failures_get_a_stable_kind() {
        let server = |code: &str, detail: &str| {
            CommitError::Redis(redis::RedisError::from((
                redis::ErrorKind::Extension,
                "server",
                format!("{code} {detail}"),
            )))
        };
        assert_eq!(error_kind(&server("CHAIN", "predecessor x")), "chain");
        assert_eq!(error_kind(&server("OOM", "command not allowed")), "oom");
        assert_eq!(error_kind(&server("WRONGTYPE", "jsi:dead")), "wrongtype");
        assert_eq!(error_kind(&server("ERR", "something")), "other");
        assert_eq!(error_kind(&CommitError::Reply("x".into())), "reply");
        let io = CommitError::Redis(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        )));
        assert_eq!(error_kind(&io), "connection");
    }

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
