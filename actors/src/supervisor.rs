//! The supervisor: the only module that knows the whole topology (docs/design.md §7). It loads the
//! stored cursor, starts the writer and the reader, wires them with `Recipient`s, keeps the
//! reader under `actix::Supervisor` (restarted with its state when it stops) and is the one
//! address the admin surfaces talk to (`Restart`, `Pause`, `Resume`, `Drain`, `GetStatus`).
//! With buckets configured it loads their state (belonging to the stored cursor) and puts the
//! bucket router between the verifier pool and the writer.

use std::time::Instant;

use std::sync::Arc;

use actix::prelude::*;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::buckets::criteria::CompiledBucket;
use crate::buckets::load::{BucketLoadError, load_state};
use crate::buckets::router::ReloadBuckets;
use crate::buckets::{BucketRouter, BucketsConfig};
use crate::ha::keeper::LeaseTarget;
use crate::ha::{HaConfig, LeaseKeeper};
use crate::jetstream::reader::StartCursor;
use crate::jetstream::{JetstreamReader, ReaderConfig};
use crate::messages::{
    Drain, Fatal, Fenced, GetBucketStatus, GetHaStatus, GetReaderStatus, GetRetentionStatus,
    GetStatus, GetWriterStatus, Leadership, Pause, Quiesce, Refused, ReleaseLease, Restart, Resume,
    ResumeWriting, RewindTo, RolledBack, StandBy, Status, StepDown, UpdateFilters,
};
use crate::sink::config::ConsumerGroup;
use crate::sink::cursors::{Stored, load_cursors};
use crate::sink::retention::{RetentionKeeper, ensure_groups};
use crate::sink::{RedisWriter, WriterConfig};
use crate::verifier::VerifierConfig;
use crate::verifier::pool::{Setup, VerifierPool};

/// Where the first dial starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartChoice {
    /// The cursor stored in Redis; if none, `fallback` (config `initial_cursor` or `--cursor`);
    /// if none, live tail.
    Resume { fallback: Option<u64> },
    /// Exactly this cursor, whatever is stored (`replay --from`).
    From(u64),
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("stored cursor: {0}")]
    BadStoredCursor(String),
    // Causes shown in the message are not also `source`s: in a chain (`{:#}`) they would
    // read twice.
    #[error("redis: {0}")]
    Redis(redis::RedisError),
    #[error(transparent)]
    Verifier(#[from] crate::verifier::VerifierConfigError),
    #[error("consumer groups: {0}")]
    Consumers(String),
    #[error("buckets: {0}")]
    Buckets(BucketLoadError),
    #[error(transparent)]
    Target(#[from] crate::redis_target::TargetError),
}

impl From<redis::RedisError> for LaunchError {
    fn from(e: redis::RedisError) -> Self {
        LaunchError::Redis(e)
    }
}

impl From<BucketLoadError> for LaunchError {
    fn from(e: BucketLoadError) -> Self {
        LaunchError::Buckets(e)
    }
}

/// The configuration of every room.
#[derive(Debug, Clone, Default)]
pub struct PipelineConfig {
    pub reader: ReaderConfig,
    pub writer: WriterConfig,
    pub verifier: VerifierConfig,
    /// Consumer groups to create at start and protect from trimming.
    pub consumers: Vec<ConsumerGroup>,
    /// Bucket definitions; `None`: no buckets room (pool → writer directly).
    pub buckets: Option<BucketsConfig>,
    /// The writer lease; `None`: this instance writes without one.
    pub ha: Option<HaConfig>,
}

pub struct Supervisor {
    reader: Addr<JetstreamReader>,
    writer: Addr<RedisWriter>,
    /// The writer's thread (kept for the pipeline's lifetime).
    _writer_arbiter: Arbiter,
    retention: Addr<RetentionKeeper>,
    buckets: Option<Addr<BucketRouter>>,
    /// What a reload of the bucket state needs (after a Redis rollback).
    bucket_setup: Option<(BucketsConfig, Arc<[CompiledBucket]>)>,
    writer_cfg: WriterConfig,
    /// Every stream the pipeline writes (the dedupe index is rebuilt from them).
    streams: Vec<String>,
    reindex_margin_us: u64,
    started_at: Instant,
    restarts: u64,
    /// Rollback resets (and lease takeovers) under way.
    resetting: u32,
    /// `[ha]`: the lease keeper.
    lease: Option<Addr<LeaseKeeper>>,
    /// `[ha]`: the fencing token of the lease while this instance holds it.
    fence: Option<u64>,
    /// Where the latest `Restart { from_cursor }` asked to replay from (see `reset`).
    replay_from: Option<u64>,
}

impl Supervisor {
    /// Loads the cursor (waiting for Redis), then starts and wires writer, verifier pool and
    /// reader: reader → pool → writer → (BatchCommitted) → reader. Must run inside an actix
    /// `System`.
    pub async fn launch(
        cfg: PipelineConfig,
        start: StartChoice,
    ) -> Result<Addr<Supervisor>, LaunchError> {
        let PipelineConfig {
            reader,
            writer,
            verifier,
            consumers,
            buckets,
            ha,
        } = cfg;
        let setup = Setup::new(verifier.clone())?;
        // The bucket state in Redis belongs to the stored cursor, whatever the start choice;
        // the chain token is what the first commit must find (a rollback before it is one).
        let held: Stored = load_cursors(&writer)
            .await
            .map_err(LaunchError::BadStoredCursor)?;
        let (stored, replay) = (held.cursor, held.replay);
        let start = match start {
            StartChoice::From(c) => StartCursor::Exact(c),
            StartChoice::Resume { fallback } => match (stored, replay) {
                (Some(c), Some(line)) if line < c => {
                    warn!(
                        replay_at = line,
                        stored_cursor = c,
                        "an unfinished replay is resumed where it was"
                    );
                    StartCursor::Replay { line, committed: c }
                }
                (Some(c), _) => StartCursor::Committed(c),
                (None, _) => fallback.map_or(StartCursor::Live, StartCursor::Exact),
            },
        };
        let loaded_buckets = match &buckets {
            Some(b) => {
                let compiled = crate::buckets::compile(b);
                let loaded = load_state(
                    &writer.target(),
                    &writer.key_prefix,
                    &compiled,
                    (writer.retry_min, writer.retry_max),
                )
                .await?;
                Some((b.clone(), compiled, loaded))
            }
            None => None,
        };
        ensure_groups(
            &writer.target(),
            &writer.key_prefix,
            &consumers,
            (writer.retry_min, writer.retry_max),
        )
        .await
        .map_err(LaunchError::Consumers)?;
        let mut streams = vec![
            "records".to_owned(),
            "identity".to_owned(),
            "dead".to_owned(),
        ];
        streams.extend(verifier.routes.iter().map(|r| r.stream.clone()));
        if buckets.is_some() {
            streams.push("buckets".to_owned());
        }
        // Retention keeps its historical list (`dead` has no bound of its own).
        let retained: Vec<String> = streams.iter().filter(|s| *s != "dead").cloned().collect();
        let retention = RetentionKeeper::new(
            &writer.target(),
            &writer.key_prefix,
            writer.retention.clone(),
            retained,
            &consumers,
        )?
        .start();
        let reindex_margin_us = [writer.dedupe_window, reader.future_tolerance]
            .iter()
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .fold(60_000_000u64, u64::saturating_add);
        if let StartCursor::Exact(from) | StartCursor::Replay { line: from, .. } = start {
            // A start from an explicit cursor may lie before what the dedupe index remembers.
            // With `[ha]` a standby prepares nothing: the takeover does, as the leader.
            if ha.is_none() {
                let _ = prepare_replay(&writer, &streams, from, reindex_margin_us, None).await;
            }
        }
        info!(
            ?start,
            workers = verifier.worker_count(),
            verify = verifier.enabled,
            "starting pipeline"
        );
        // The writer gets a thread of its own: it answers each probe reply with the next
        // commit at once (Redis idles otherwise) and encodes batches while the reader
        // decodes. Its mailbox exists now, so the rooms before it can be wired to it.
        writer.target().client()?;
        let (writer_tx, writer_rx) = actix::dev::channel::channel::<RedisWriter>(16);
        let writer_addr = Addr::new(writer_tx);
        let (sup_tx, sup_rx) = actix::dev::channel::channel::<Supervisor>(16);
        let sup_addr = Addr::new(sup_tx);
        // pool → [bucket router →] writer
        let bucket_setup = loaded_buckets
            .as_ref()
            .map(|(cfg, compiled, _)| (cfg.clone(), compiled.clone()));
        let router = loaded_buckets.map(|(cfg, compiled, loaded)| {
            BucketRouter::new(
                &cfg,
                compiled,
                loaded,
                stored,
                writer_addr.clone().recipient(),
            )
            .on_fatal(sup_addr.clone().recipient())
            .start()
        });
        let after_pool = match &router {
            Some(r) => r.clone().recipient(),
            None => writer_addr.clone().recipient(),
        };
        let pool = VerifierPool::new(setup, verifier.worker_count(), after_pool)
            .on_fatal(sup_addr.clone().recipient())
            .start();
        let push = pool.recipient();
        let standby = ha.is_some();
        let reader_addr = actix::Supervisor::start(move |_| {
            let reader = JetstreamReader::new(reader, push, start);
            // A standby reads nothing until it takes the lease (then from what Redis holds).
            if standby { reader.paused() } else { reader }
        });
        let committed = reader_addr.clone().recipient();
        let rollback_to = sup_addr.clone().recipient();
        let fenced_to = sup_addr.clone().recipient();
        let writer_cfg = writer.clone();
        let writer_arbiter = Arbiter::new();
        writer_arbiter.spawn_fn(move || match RedisWriter::new(writer, committed) {
            Ok(actor) => {
                let actor = actor.expecting(&held).on_rollback(rollback_to);
                let actor = if standby {
                    actor.standby(fenced_to)
                } else {
                    actor
                };
                Context::with_receiver(writer_rx).run(actor);
            }
            // Checked above; cannot happen.
            Err(e) => {
                tracing::error!(error = %e, "redis target rejected; the writer did not start")
            }
        });
        let lease = match ha {
            Some(ha) => {
                let target = LeaseTarget {
                    redis: {
                        let target = writer_cfg.target();
                        target.client()?;
                        target
                    },
                    key_prefix: writer_cfg.key_prefix.clone(),
                    connect_timeout: writer_cfg.connect_timeout,
                    response_timeout: writer_cfg.response_timeout,
                };
                Some(LeaseKeeper::new(ha, target, sup_addr.clone().recipient()).start())
            }
            None => None,
        };
        Context::with_receiver(sup_rx).run(Supervisor {
            reader: reader_addr,
            writer: writer_addr,
            _writer_arbiter: writer_arbiter,
            retention,
            buckets: router,
            bucket_setup,
            writer_cfg,
            streams,
            reindex_margin_us,
            started_at: Instant::now(),
            restarts: 0,
            resetting: 0,
            lease,
            fence: None,
            replay_from: None,
        });
        Ok(sup_addr)
    }
}

/// Adds the identities of everything the streams hold from `from_us` on to the dedupe index
/// (`sink/reindex.rs`), waiting for Redis with backoff: a replay from older than the index
/// remembers then writes only what is missing. Then records the replay as begun
/// (`mark_replay`), so a crash before its first commit resumes it at the next start.
///
/// `margin_us`: how far back of `from_us` (in Redis's clock) the streams are read: entries
/// are inserted after their events happened, unless the host's clock is ahead of Redis's, by
/// at most `jetstream.future_tolerance` (more is dead-lettered), so that plus the dedupe
/// window plus a minute.
///
/// With `[ha]`, `fence` is this instance's token: having lost the lease (the mark is
/// refused, `FENCED`), it gives up with `Refused::Fenced` instead of retrying.
async fn prepare_replay(
    cfg: &WriterConfig,
    streams: &[String],
    from_us: u64,
    margin_us: u64,
    fence: Option<u64>,
) -> Result<(), Refused> {
    let keys = crate::sink::commit::Keys::new(&cfg.key_prefix);
    let full: Vec<String> = streams.iter().map(|s| keys.stream(s)).collect();
    let mut backoff = Backoff::new(cfg.retry_min, cfg.retry_max);
    loop {
        let attempt = async {
            let client = cfg.target().resolve(cfg.connect_timeout).await?;
            let mut con = client.get_multiplexed_async_connection().await?;
            // Recorded first: a crash during the rebuild leaves a marker, and the next start
            // rebuilds again.
            let marked = crate::sink::reindex::mark_replay(&mut con, &keys, from_us, fence).await?;
            let done =
                crate::sink::reindex::reindex(&mut con, &keys.dedupe, &full, from_us, margin_us)
                    .await?;
            Ok::<_, redis::RedisError>((done, marked))
        };
        match attempt.await {
            Ok((done, marked)) => {
                info!(
                    from_us,
                    entries_read = done.entries_read,
                    identities_added = done.identities_added,
                    replay_recorded = marked,
                    "dedupe index rebuilt from the streams for the replay"
                );
                return Ok(());
            }
            Err(e) if e.to_string().contains("FENCED") => {
                warn!(error = %e, "the replay is not prepared: this instance lost the writer lease");
                return Err(Refused::Fenced(e.to_string()));
            }
            Err(e) => {
                metrics::counter!("jetstream_ingestor_redis_connect_failures_total").increment(1);
                let error = crate::redis_target::describe(&e);
                warn!(%error, "cannot rebuild the dedupe index from the streams; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

impl Supervisor {
    /// Stops the reader and lets everything read drain (the writer drops it), reloads the
    /// bucket state that belongs to the cursor Redis holds, resumes the writer (with the
    /// lease's fencing token under `[ha]`) and restarts the reader from that cursor. After a
    /// rollback `stored` is what the writer found; after a lease takeover it is read here,
    /// once the reader is stopped (with the chain, which the writer's next commit expects).
    /// An unfinished replay behind the stored cursor gets its dedupe index rebuilt first (as
    /// at start): commits since it began pruned the index, and a replay without it would
    /// write everything again. With `[ha]` an operator's pause (`<prefix>control:paused`)
    /// holds across the takeover, and a reset that outlived the lease stands by again.
    fn reset(&mut self, stored: Option<(Option<u64>, Option<u64>)>, ctx: &mut Context<Self>) {
        self.resetting += 1;
        let reader = self.reader.clone();
        let writer = self.writer.clone();
        let router = self.buckets.clone();
        let setup = self.bucket_setup.clone();
        let cfg = self.writer_cfg.clone();
        let fence = self.fence;
        let ha = self.lease.is_some();
        let streams = self.streams.clone();
        let margin = self.reindex_margin_us;
        let replay_from = self.replay_from;
        let reset = async move {
            let _ = reader.send(Quiesce).await;
            let (stored_cursor, mut replay_cursor, chain) = match stored {
                Some((cursor, replay)) => (cursor, replay, None),
                None => match load_cursors(&cfg).await {
                    Ok(held) => (held.cursor, held.replay, Some(held.chain)),
                    Err(e) => {
                        error!(error = %e, "cannot take over: the stored cursor is unreadable");
                        return;
                    }
                },
            };
            // A replay this process was asked for and has not finished survives a Redis
            // that lost its marker (a snapshot from before it, a replica promoted without
            // it): it starts again from where it was asked to, writing only what is missing.
            if let Some(from) = replay_from
                && reader
                    .send(GetReaderStatus)
                    .await
                    .is_ok_and(|s| s.replaying)
                && replay_cursor.is_none_or(|r| r > from)
            {
                warn!(replay_from = from, replay_cursor_in_redis = ?replay_cursor, "the replay under way is not (or not as far back) in Redis any more: it starts again from where it was asked to");
                replay_cursor = Some(from);
            }
            if let (Some(replay), Some(stored)) = (replay_cursor, stored_cursor)
                && replay < stored
                && prepare_replay(&cfg, &streams, replay, margin, fence)
                    .await
                    .is_err()
            {
                return;
            }
            if let (Some(router), Some((bcfg, compiled))) = (router, setup) {
                match load_state(
                    &cfg.target(),
                    &cfg.key_prefix,
                    &compiled,
                    (cfg.retry_min, cfg.retry_max),
                )
                .await
                {
                    Ok(loaded) => {
                        let _ = router
                            .send(ReloadBuckets {
                                cfg: bcfg,
                                loaded,
                                stored_cursor,
                            })
                            .await;
                    }
                    Err(e) => {
                        error!(error = %e, "cannot reload the bucket state")
                    }
                }
            }
            let _ = writer
                .send(ResumeWriting {
                    stored_cursor,
                    fence,
                    chain,
                })
                .await;
            let paused = ha && paused_in_redis(&cfg).await;
            let _ = reader
                .send(RewindTo {
                    stored_cursor,
                    replay_cursor,
                })
                .await;
            if paused {
                info!("the fleet is paused (<prefix>control:paused): the new leader stays paused");
                let _ = reader.send(Pause).await;
            }
        };
        ctx.spawn(reset.into_actor(self).map(move |(), act, ctx| {
            act.resetting = act.resetting.saturating_sub(1);
            // The lease went while this ran: what it resumed must stand by again.
            if act.lease.is_some() && fence.is_some() && act.fence.is_none() {
                act.stand_by(ctx);
            }
        }));
    }

    /// A standby (`[ha]`: naming who leads, as the keeper last read it) and a pipeline
    /// being reset (a takeover or a rollback, whose rewind would undo the command) refuse
    /// commands.
    fn refusal(&self) -> Option<impl Future<Output = Refused> + 'static> {
        let standby = self.lease.is_some() && self.fence.is_none();
        if !standby && self.resetting == 0 {
            return None;
        }
        let lease = self.lease.clone();
        Some(async move {
            if !standby {
                return Refused::Resetting;
            }
            let holder = match lease {
                Some(l) => l.send(GetHaStatus).await.ok().and_then(|s| s.holder),
                None => None,
            };
            Refused::Standby {
                holder: holder.unwrap_or_else(|| "another instance".to_owned()),
            }
        })
    }

    /// `[ha]`: not the writer (any more): the writer drops everything, the reader stops.
    fn stand_by(&mut self, ctx: &mut Context<Self>) {
        self.fence = None;
        self.writer.do_send(StandBy);
        let reader = self.reader.clone();
        ctx.spawn(
            async move {
                let _ = reader.send(Quiesce).await;
            }
            .into_actor(self),
        );
    }
}

/// `[ha]`: the fleet's pause, kept in Redis by the leader so a takeover honours it.
fn paused_key(cfg: &WriterConfig) -> String {
    format!("{}control:paused", cfg.key_prefix)
}

async fn paused_in_redis(cfg: &WriterConfig) -> bool {
    let read = async {
        let client = cfg.target().resolve(cfg.connect_timeout).await?;
        let mut con = client.get_multiplexed_async_connection().await?;
        redis::cmd("EXISTS")
            .arg(paused_key(cfg))
            .query_async::<i64>(&mut con)
            .await
    };
    match tokio::time::timeout(cfg.connect_timeout.saturating_mul(2), read).await {
        Ok(Ok(n)) => n > 0,
        Ok(Err(e)) => {
            warn!(error = %crate::redis_target::describe(&e), "cannot read whether the fleet is paused; reading");
            false
        }
        Err(_) => {
            warn!("reading whether the fleet is paused timed out; reading");
            false
        }
    }
}

/// Sets (`true`) or clears the fleet's pause, only while `fence` is still the lease's token
/// (an instance that lost the lease changes nothing). `Err` says why it is not stored: the
/// command is then refused, not half done.
async fn store_pause(cfg: &WriterConfig, paused: bool, fence: Option<u64>) -> Result<(), Refused> {
    let keys = crate::sink::commit::Keys::new(&cfg.key_prefix);
    let write = async {
        let client = cfg.target().resolve(cfg.connect_timeout).await?;
        let mut con = client.get_multiplexed_async_connection().await?;
        redis::Script::new(STORE_PAUSE_SCRIPT)
            .key(paused_key(cfg))
            .key(&keys.fence)
            .arg(if paused { "1" } else { "0" })
            .arg(fence.map_or_else(String::new, |f| f.to_string()))
            .invoke_async::<i64>(&mut con)
            .await
    };
    match tokio::time::timeout(cfg.connect_timeout.saturating_mul(2), write).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            let why = crate::redis_target::describe(&e);
            warn!(error = %why, "cannot store the fleet's pause in redis; the command is refused");
            Err(Refused::NotStored(why))
        }
        Err(_) => {
            warn!("storing the fleet's pause in redis timed out; the command is refused");
            Err(Refused::NotStored(
                "redis did not answer in time".to_owned(),
            ))
        }
    }
}

/// KEYS: 1 the pause key, 2 the fencing counter. ARGV: 1 `1` pause / `0` resume, 2 the
/// token ("" = unchecked).
const STORE_PAUSE_SCRIPT: &str = r#"
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return redis.error_reply('FENCED this instance no longer holds the writer lease')
end
if ARGV[1] == '1' then redis.call('SET', KEYS[1], '1') else redis.call('DEL', KEYS[1]) end
return 1
"#;

impl Handler<Fatal> for Supervisor {
    type Result = ();

    /// A room cannot go on: stop the process (exit 70) rather than commit past events it
    /// lost. What was committed stays; a restart resumes from the stored cursor.
    fn handle(&mut self, msg: Fatal, _ctx: &mut Self::Context) {
        metrics::counter!("jetstream_ingestor_fatal_errors_total", "room" => msg.room).increment(1);
        error!(room = msg.room, error = %msg.error, "a room failed and cannot go on; stopping (exit 70)");
        System::current().stop_with_code(70);
    }
}

impl Handler<RolledBack> for Supervisor {
    type Result = ();

    /// Redis lost acknowledged commits: reset the pipeline to what Redis holds.
    fn handle(&mut self, msg: RolledBack, ctx: &mut Self::Context) {
        self.reset(Some((msg.stored_cursor, msg.replay_cursor)), ctx);
    }
}

impl Handler<Leadership> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Leadership, ctx: &mut Self::Context) {
        match msg {
            Leadership::Acquired { token } => {
                self.fence = Some(token);
                self.reset(None, ctx);
            }
            Leadership::Lost { token, .. } => {
                if self.fence == Some(token) {
                    self.stand_by(ctx);
                }
            }
        }
    }
}

impl Handler<Fenced> for Supervisor {
    type Result = ();

    /// A commit found a newer fencing token: another instance took over.
    fn handle(&mut self, msg: Fenced, ctx: &mut Self::Context) {
        if self.fence.is_some_and(|t| t > msg.token) {
            // About a lease this instance held before: it holds a newer one now.
            return;
        }
        if let Some(lease) = &self.lease {
            lease.do_send(StepDown { token: msg.token });
        }
        self.stand_by(ctx);
    }
}

impl Handler<ReleaseLease> for Supervisor {
    type Result = ResponseFuture<bool>;

    /// After the shutdown drain: give the lease up so a standby takes over at once.
    fn handle(&mut self, msg: ReleaseLease, ctx: &mut Self::Context) -> Self::Result {
        let lease = self.lease.clone();
        self.stand_by(ctx);
        Box::pin(async move {
            match lease {
                Some(l) => l.send(msg).await.unwrap_or(false),
                None => false,
            }
        })
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

impl Handler<Restart> for Supervisor {
    type Result = ResponseFuture<Result<u64, Refused>>;

    /// From an explicit cursor: drain what is in flight, rebuild the dedupe index from the
    /// streams back to that cursor (the replayed range is written only where it is missing)
    /// and record the replay, then restart the reader there. A standby refuses (`[ha]`).
    fn handle(&mut self, msg: Restart, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(refused) = self.refusal() {
            warn!(from_cursor = ?msg.from_cursor, "restart refused: this instance is a standby (send it to the leader)");
            return Box::pin(async move { Err(refused.await) });
        }
        self.restarts += 1;
        metrics::counter!("jetstream_ingestor_admin_restarts_total").increment(1);
        let reader = self.reader.clone();
        let Some(from) = msg.from_cursor else {
            return Box::pin(async move { reader.send(msg).await.unwrap_or(Ok(0)) });
        };
        let cfg = self.writer_cfg.clone();
        let streams = self.streams.clone();
        let margin = self.reindex_margin_us;
        let fence = self.fence;
        self.replay_from = Some(from);
        Box::pin(async move {
            let _ = reader.send(Quiesce).await;
            prepare_replay(&cfg, &streams, from, margin, fence).await?;
            reader.send(msg).await.unwrap_or(Ok(0))
        })
    }
}

impl Handler<Pause> for Supervisor {
    type Result = ResponseFuture<Result<(), Refused>>;

    /// With `[ha]` the pause is the fleet's: stored in Redis, so a takeover keeps it.
    fn handle(&mut self, msg: Pause, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(refused) = self.refusal() {
            return Box::pin(async move { Err(refused.await) });
        }
        let reader = self.reader.clone();
        let store = self.lease.is_some().then(|| self.writer_cfg.clone());
        let fence = self.fence;
        Box::pin(async move {
            if let Some(cfg) = store {
                store_pause(&cfg, true, fence).await?;
            }
            reader.send(msg).await.unwrap_or(Ok(()))
        })
    }
}

impl Handler<UpdateFilters> for Supervisor {
    type Result = ResponseFuture<Result<(), String>>;

    /// Validated by the reader, then sent on the live socket as an `options_update`.
    fn handle(&mut self, msg: UpdateFilters, _ctx: &mut Self::Context) -> Self::Result {
        let reader = self.reader.clone();
        Box::pin(async move {
            reader
                .send(msg)
                .await
                .map_err(|e| format!("reader unavailable: {e}"))?
        })
    }
}

impl Handler<Resume> for Supervisor {
    type Result = ResponseFuture<Result<(), Refused>>;
    fn handle(&mut self, msg: Resume, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(refused) = self.refusal() {
            return Box::pin(async move { Err(refused.await) });
        }
        let reader = self.reader.clone();
        let store = self.lease.is_some().then(|| self.writer_cfg.clone());
        let fence = self.fence;
        Box::pin(async move {
            if let Some(cfg) = store {
                store_pause(&cfg, false, fence).await?;
            }
            reader.send(msg).await.unwrap_or(Ok(()))
        })
    }
}

impl Handler<Drain> for Supervisor {
    type Result = ResponseFuture<()>;

    /// Stop reading and answer once every batch read so far is committed.
    fn handle(&mut self, msg: Drain, _ctx: &mut Self::Context) -> Self::Result {
        let reader = self.reader.clone();
        Box::pin(async move {
            let _ = reader.send(msg).await;
        })
    }
}

impl Handler<GetStatus> for Supervisor {
    type Result = ResponseFuture<Result<Status, MailboxError>>;

    fn handle(&mut self, _: GetStatus, _ctx: &mut Self::Context) -> Self::Result {
        let reader = self.reader.clone();
        let writer = self.writer.clone();
        let retention = self.retention.clone();
        let buckets = self.buckets.clone();
        let uptime_secs = self.started_at.elapsed().as_secs();
        let reader_restarts = self.restarts;
        let resetting = self.resetting > 0;
        let lease = self.lease.clone();
        Box::pin(async move {
            Ok(Status {
                reader: reader.send(GetReaderStatus).await?,
                writer: writer.send(GetWriterStatus).await?,
                retention: retention.send(GetRetentionStatus).await?,
                buckets: match buckets {
                    Some(b) => Some(b.send(GetBucketStatus).await?),
                    None => None,
                },
                uptime_secs,
                reader_restarts,
                resetting,
                ha: match lease {
                    Some(l) => Some(l.send(GetHaStatus).await?),
                    None => None,
                },
            })
        })
    }
}
