//! App wiring and shutdown: starts the admin API and heartbeat (`admin::Surfaces`), then the
//! supervisor, watches it (replay progress, metrics upkeep, status samples for the surfaces),
//! and on shutdown stops reading and waits, up to `shutdown.timeout`, for every batch read so
//! far to be committed, then stops the surfaces (last heartbeat says `stopped`). `shutdown`
//! is a value (STYLE rule 10) so tests drive it.

use std::future::Future;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use actix::Addr;
use actors::messages::{Drain, GetStatus, ReaderState, ReleaseLease, Status};
use actors::supervisor::{StartChoice, Supervisor};
use anyhow::Context as _;
use tracing::{info, warn};

use crate::admin::Surfaces;
use crate::settings::Settings;
use crate::telemetry;

/// What the process was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Long-running: resume from the stored cursor (else `cursor`, else `initial_cursor`,
    /// else live).
    Run { cursor: Option<u64> },
    /// Read `[from, until]` through the same pipeline, then exit.
    Replay { from: u64, until: u64 },
}

/// How the run ended.
#[derive(Debug)]
pub struct Outcome {
    /// Every batch read was committed before exit.
    pub drained: bool,
    /// Last status seen (if the supervisor answered).
    pub status: Option<Status>,
}

/// Runs the pipeline until `shutdown` resolves (or, in replay mode, until `until` is
/// committed). Must be called inside an actix `System`.
pub async fn run(
    mut settings: Settings,
    mode: Mode,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Outcome> {
    telemetry::install_crypto_provider();
    let metrics = telemetry::metrics_handle();
    let start = match mode {
        Mode::Run { cursor } => StartChoice::Resume {
            fallback: cursor.or(settings.jetstream.initial_cursor),
        },
        Mode::Replay { from, until } => {
            settings.jetstream.until = Some(until);
            StartChoice::From(from)
        }
    };
    let drain_timeout = settings.shutdown.timeout;
    tokio::pin!(shutdown);
    if let Mode::Replay { .. } = mode {
        refuse_beside_a_live_writer(&settings).await?;
    }

    // Admin API and heartbeat first: /healthz answers while the pipeline waits for Redis.
    let mut surfaces = Surfaces::start(&settings, metrics.clone())?;
    let launch = Supervisor::launch(settings.pipeline(), start);
    let supervisor = tokio::select! {
        s = launch => match s {
            Ok(s) => s,
            Err(e) => {
                surfaces.stop().await;
                return Err(e).context("cannot start the pipeline");
            }
        },
        _ = &mut shutdown => {
            info!("shutdown requested before the pipeline started");
            surfaces.stop().await;
            return Ok(Outcome { drained: true, status: None });
        }
    };
    surfaces.attach(supervisor.clone());
    info!(endpoints = ?settings.jetstream.endpoints, prefix = %settings.redis.key_prefix, "pipeline running");

    let mut progress = Progress::new(mode);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_upkeep = Instant::now();
    let mut last_status = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                info!("shutdown requested: stop reading, commit what is in flight");
                break;
            }
            _ = tick.tick() => {
                if let Some(h) = &metrics
                    && last_upkeep.elapsed() > Duration::from_secs(5)
                {
                    h.run_upkeep();
                    last_upkeep = Instant::now();
                }
                if let Ok(Ok(status)) = supervisor.send(GetStatus).await {
                    let until_reached = !status.resetting
                        && matches!(mode, Mode::Replay { until, .. }
                            if status.reader.line_cursor.is_some_and(|c| c >= until));
                    let finished = until_reached
                        || (status.reader.state == ReaderState::Finished
                            && status.writer.queued_batches == 0
                            && !status.resetting);
                    progress.update(&status);
                    surfaces.observe(&status);
                    last_status = Some(status);
                    if finished {
                        info!("replay reached its end");
                        break;
                    }
                }
            }
        }
    }
    let drained = drain(&supervisor, drain_timeout).await;
    // `[ha]`: what was read is committed; a standby takes over at once.
    if let Ok(true) = supervisor.send(ReleaseLease).await {
        info!("writer lease released");
    }
    if let (Mode::Replay { until, .. }, true) = (mode, drained) {
        forget_finished_replay(&settings, until, last_status.as_ref()).await;
    }
    progress.finish();
    let status = match supervisor.send(GetStatus).await {
        Ok(Ok(s)) => Some(s),
        _ => last_status,
    };
    if let Some(s) = &status {
        surfaces.observe(s);
    }
    surfaces.stop().await;
    if let Some(s) = &status {
        info!(committed_cursor = ?s.reader.committed_cursor, commits = s.writer.commits, written = s.writer.entries_written, drained, "stopped");
    }
    Ok(Outcome { drained, status })
}

/// A `replay` on a key prefix another process is writing to would share its commit chain
/// (each would take the other's commits for a Redis rollback) and its dedupe index (the live
/// commits prune what the replay needs): refused, with what to do instead. A live process is
/// one whose heartbeat hash exists (it expires after `heartbeat.ttl`) and does not say
/// `stopped`. Redis unreachable: not refused here (the pipeline waits for it as usual).
async fn refuse_beside_a_live_writer(settings: &Settings) -> anyhow::Result<()> {
    let key = format!("{}heartbeat", settings.redis.key_prefix);
    let probe = async {
        let client = settings
            .redis
            .target()
            .resolve(settings.redis.connect_timeout)
            .await?;
        let mut con = client.get_multiplexed_async_connection().await?;
        redis::cmd("HMGET")
            .arg(&key)
            .arg("state")
            .arg("instance")
            .query_async::<(Option<String>, Option<String>)>(&mut con)
            .await
    };
    let Ok(Ok((Some(state), instance))) =
        tokio::time::timeout(settings.redis.connect_timeout, probe).await
    else {
        return Ok(());
    };
    if state == "stopped" {
        return Ok(());
    }
    anyhow::bail!(
        "another jetstream-ingestor ({}) is writing to key prefix {:?} (its heartbeat {key} says {state:?}); a replay beside it would interfere with its commits. Replay through it instead (`jetstream-ingestor admin restart --cursor FROM`: the replay goes on to the end and writes only what is missing), stop it first, or replay into another redis.key_prefix",
        instance.unwrap_or_else(|| "unknown instance".to_owned()),
        settings.redis.key_prefix
    )
}

/// A `replay --until` that reached its end leaves no replay progress behind: the next `run`
/// would otherwise take `<prefix>cursor:replay` for an unfinished replay and go on from
/// there. Best effort (a leftover only makes that `run` replay a range again, writing what is
/// missing).
async fn forget_finished_replay(settings: &Settings, until: u64, last: Option<&Status>) {
    let finished = last.is_some_and(|s| s.reader.line_cursor.is_some_and(|c| c >= until));
    if !finished {
        return;
    }
    let key = format!("{}cursor:replay", settings.redis.key_prefix);
    let clear = async {
        let client = settings
            .redis
            .target()
            .resolve(settings.redis.connect_timeout)
            .await?;
        let mut con = client.get_multiplexed_async_connection().await?;
        let at: Option<u64> = redis::cmd("GET").arg(&key).query_async(&mut con).await?;
        if at.is_some_and(|at| at <= until) {
            redis::cmd("DEL")
                .arg(&key)
                .query_async::<()>(&mut con)
                .await?;
        }
        Ok::<(), redis::RedisError>(())
    };
    match tokio::time::timeout(settings.redis.connect_timeout, clear).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, key, "cannot clear the finished replay's progress"),
        Err(_) => warn!(key, "clearing the finished replay's progress timed out"),
    }
}

async fn drain(supervisor: &Addr<Supervisor>, timeout: Duration) -> bool {
    match tokio::time::timeout(timeout, supervisor.send(Drain)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            warn!(error = %e, "supervisor gone during drain");
            false
        }
        Err(_) => {
            metrics::counter!("jetstream_ingestor_shutdown_timeouts_total").increment(1);
            warn!(
                ?timeout,
                "in-flight batches not committed before the shutdown deadline; they will be re-read on restart"
            );
            false
        }
    }
}

/// Replay progress: a bar on a terminal, a log line every 5 s otherwise.
struct Progress {
    range: Option<(u64, u64)>,
    bar: Option<indicatif::ProgressBar>,
    last_log: Instant,
}

impl Progress {
    fn new(mode: Mode) -> Progress {
        let Mode::Replay { from, until } = mode else {
            return Progress {
                range: None,
                bar: None,
                last_log: Instant::now(),
            };
        };
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(until.saturating_sub(from));
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} replay [{bar:40}] {percent}% {msg}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        Progress {
            range: Some((from, until)),
            bar,
            last_log: Instant::now(),
        }
    }

    fn update(&mut self, s: &Status) {
        let Some((from, until)) = self.range else {
            return;
        };
        let done = s
            .reader
            .committed_cursor
            .unwrap_or(from)
            .saturating_sub(from)
            .min(until.saturating_sub(from));
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            bar.set_message(format!("{} jobs written", s.writer.entries_written));
        } else if self.last_log.elapsed() > Duration::from_secs(5) {
            self.last_log = Instant::now();
            let pct = if until > from {
                done as f64 * 100.0 / (until - from) as f64
            } else {
                100.0
            };
            info!(committed_cursor = ?s.reader.committed_cursor, until, percent = format!("{pct:.1}"), written = s.writer.entries_written, "replay progress");
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
