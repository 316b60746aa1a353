//! `RedisWriter`: commits batches strictly in arrival order, one atomic transaction per batch
//! (`commit.rs`), then tells the reader (`BatchCommitted`, carrying the batch's credit back).
//!
//! The actor shell around the pure core [`Pipeline`] (`pipeline.rs`: queue, probes and
//! commits pipelined up to `redis.pipeline_depth`, recovery from the chain key). It carries
//! out the core's actions: sends probes, commits and recovery's read on the one connection
//! (`link.rs`), feeds the replies back, tells the reader, the supervisor, and reports
//! (`report.rs`: status, logs, metrics).
//!
//! Failure: the core recovers with capped full-jitter backoff (the delay is taken here),
//! forever; nothing is skipped. Meanwhile credits stay held, the reader's window fills and
//! reading stops: nothing is dropped and nothing queues without bound.
//!
//! Tests only (cargo feature `failpoints`, see `failpoint.rs`): the process can be made to
//! abort at a named commit boundary, to prove the rules above against real crashes.

use std::rc::Rc;
use std::time::Instant;

use actix::prelude::*;
use rand::RngExt as _;
use redis::aio::ConnectionManager;
use tracing::info;

use super::action::Action;
use super::commit::{CommitLimits, Keys, encode};
use super::config::WriterConfig;
use super::failpoint;
use super::link::{self, Recovery, Replicas};
use super::pipeline::Pipeline;
use super::report::{Report, Ticket, queue_gauge};
use crate::backoff::Backoff;
use crate::messages::{
    BatchCommitted, Fenced, GetWriterStatus, PushBatch, ResumeWriting, RolledBack, StandBy,
};
use crate::redis_target::redact;

pub struct RedisWriter {
    cfg: WriterConfig,
    keys: Rc<Keys>,
    limits: CommitLimits,
    /// Where Redis is: with Sentinel, asked again after every failure (a failover).
    target: crate::redis_target::RedisTarget,
    /// The address the connection goes to (the master's, with Sentinel).
    master: Option<redis::ConnectionAddr>,
    conn: Option<ConnectionManager>,
    core: Pipeline<Ticket>,
    retry: Backoff,
    report: Report,
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
            core: Pipeline::new(cfg.pipeline_depth, rand::rng().random::<u64>()),
            retry: Backoff::new(cfg.retry_min, cfg.retry_max),
            report: Report::new(cfg.wait_replicas, committed_to),
            cfg,
        })
    }

    /// What Redis held when the pipeline started: the first commit checks for that chain
    /// token, and a stored cursor below that one later is a rollback.
    pub fn expecting(mut self, stored: &super::cursors::Stored) -> Self {
        self.core.expect(stored.chain.as_deref(), stored.cursor);
        self
    }

    /// Where to report a rollback of Redis (without it, a rollback is only logged).
    pub fn on_rollback(mut self, to: Recipient<RolledBack>) -> Self {
        self.report.rollback_to = Some(to);
        self
    }

    /// `[ha]`: start as a standby (nothing is written before `ResumeWriting` with the
    /// lease's fencing token), and report being fenced off to `to`.
    pub fn standby(mut self, to: Recipient<Fenced>) -> Self {
        self.core.halt();
        self.report.fenced_to = Some(to);
        self
    }

    /// Carries out the core's actions, in order.
    fn run(&mut self, actions: Vec<Action<Ticket>>, ctx: &mut Context<Self>) {
        for action in actions {
            match action {
                Action::Probe { seq, encoded } => {
                    let Some(conn) = self.conn.clone() else {
                        continue; // the core sends nothing before the connection is up
                    };
                    let fut = link::probe(conn, encoded).into_actor(self);
                    ctx.spawn(fut.map(move |res, act, ctx| {
                        let actions = act.core.on_probe(seq, res);
                        act.run(actions, ctx);
                    }));
                }
                Action::Commit { seq, pipe } => {
                    let Some(conn) = self.conn.clone() else {
                        continue;
                    };
                    failpoint::hit(failpoint::Point::BeforeCommit);
                    let started = Instant::now();
                    let fut = link::commit(conn, pipe, Replicas::of(&self.cfg)).into_actor(self);
                    ctx.spawn(fut.map(move |reply, act, ctx| {
                        metrics::histogram!("jetstream_ingestor_commit_duration_seconds")
                            .record(started.elapsed().as_secs_f64());
                        let actions = act.core.on_commit(seq, reply);
                        act.run(actions, ctx);
                    }));
                }
                Action::Committed(done) => {
                    self.retry.reset();
                    self.report.committed(done);
                }
                Action::Failed { seq, error, queued } => self.report.failed(seq, &error, queued),
                Action::Recover => self.recover(ctx),
                Action::RetryLater => {
                    ctx.run_later(self.retry.next_delay(), |act, ctx| {
                        let actions = act.core.retry_due();
                        act.run(actions, ctx);
                    });
                }
                Action::RolledBack(rollback) => self.report.rolled_back(rollback),
                Action::StepDown {
                    token,
                    error,
                    dropped,
                } => self.report.stepped_down(token, error, dropped),
            }
        }
    }

    /// Reads the chain (following a moved master first) and hands it to the core.
    fn recover(&mut self, ctx: &mut Context<Self>) {
        let Some(conn) = self.conn.clone() else {
            return;
        };
        let recovery = Recovery::new(
            &self.cfg,
            self.keys.clone(),
            &self.target,
            self.master.clone(),
        );
        let fut = link::read_held(conn, recovery).into_actor(self);
        ctx.spawn(fut.map(|res, act, ctx| {
            // A standby (or a reset) while this ran: nothing of it applies (the core says so).
            let held = match res {
                _ if act.core.halted() => None,
                Ok((held, moved)) => {
                    if let Some((conn, addr)) = moved {
                        Report::master_moved(act.master.as_ref(), &addr);
                        act.conn = Some(conn);
                        act.master = Some(addr);
                    }
                    Some(held)
                }
                Err(e) => {
                    act.report.recovery_failed(&e);
                    None
                }
            };
            let actions = act.core.recovered(held);
            act.run(actions, ctx);
        }));
    }
}

impl Actor for RedisWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        failpoint::watch_drain();
        let connect = link::connect(&self.cfg, self.target.clone());
        ctx.spawn(connect.into_actor(self).map(|(conn, addr), act, ctx| {
            info!(url = %redact(&act.cfg.url), address = ?addr, "connected to redis");
            act.conn = Some(conn);
            act.master = addr;
            let actions = act.core.connected();
            act.run(actions, ctx);
        }));
    }
}

impl Handler<PushBatch> for RedisWriter {
    type Result = ();

    fn handle(&mut self, PushBatch(batch): PushBatch, ctx: &mut Self::Context) {
        if self.core.halted() {
            self.report.dropped(self.core.fence());
            return;
        }
        let token = self.core.token(batch.seq);
        // Encoded for the usual case: its predecessor is the batch pushed before it.
        let (expects, fence) = (self.core.expects(), self.core.fence());
        let encoded = encode(&self.keys, &batch, &token, expects, fence, self.limits);
        // The events themselves are no longer needed: the encoded commands hold them.
        let ticket = Ticket {
            session: batch.session,
            received_at: batch.received_at,
            credit: batch.credit,
        };
        let actions = self
            .core
            .push(batch.seq, batch.cursor, token, encoded, ticket);
        queue_gauge(self.core.queued());
        self.run(actions, ctx);
    }
}

impl Handler<ResumeWriting> for RedisWriter {
    type Result = ResponseActFuture<Self, ()>;

    /// After a rollback or a lease acquisition, once the reader is stopped and every batch
    /// read before is dropped: learn the chain afresh (checked by the next commit) and
    /// accept batches again.
    fn handle(&mut self, msg: ResumeWriting, _ctx: &mut Self::Context) -> Self::Result {
        let fut = link::chain_now(
            self.conn.clone(),
            self.keys.chain.clone(),
            msg.chain.clone(),
        );
        Box::pin(fut.into_actor(self).map(move |chain, act, ctx| {
            // Unreadable now (`None`): the token read during recovery stays.
            let actions = act.core.resume(chain, msg.fence, msg.stored_cursor);
            match msg.fence {
                Some(token) => info!(fencing_token = token, "writer resumed as the leader"),
                None => info!("writer resumed after the Redis rollback"),
            }
            act.run(actions, ctx);
        }))
    }
}

impl Handler<StandBy> for RedisWriter {
    type Result = ();

    fn handle(&mut self, _: StandBy, _ctx: &mut Self::Context) {
        if !self.core.halted() {
            info!("writer stands by: this instance does not hold the writer lease");
        }
        self.core.stand_by();
        queue_gauge(0);
    }
}

impl Handler<GetWriterStatus> for RedisWriter {
    type Result = MessageResult<GetWriterStatus>;

    fn handle(&mut self, _: GetWriterStatus, _ctx: &mut Self::Context) -> Self::Result {
        let mut s = self.report.status.clone();
        s.queued_batches = self.core.queued();
        s.stored_cursor = self.core.stored_cursor();
        MessageResult(s)
    }
}
