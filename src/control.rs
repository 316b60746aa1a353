//! The Redis control stream (`admin.control_stream = true`), for fleets that share Redis but
//! not an HTTP network: `XADD <prefix>control * cmd restart [cursor N]`, `cmd pause`,
//! `cmd resume`. Each command is executed through the supervisor (the same messages as the
//! admin API) and answered in `<prefix>control:acks` (`id`, `cmd`, `result` = `ok` | `error`,
//! `session_id` for restarts, `message`, `instance`). The id of the last command handled is
//! stored in `<prefix>control:last` in the same MULTI as its ack, so a restarted process
//! neither re-runs old commands nor skips new ones; on the very first start (nothing stored)
//! it starts at Redis's current time, so commands older than that are not run.
//!
//! Talks to: Redis on a connection of its own (its XREAD blocks), and the supervisor.
//!
//! Failure: never fatal. Redis errors are logged and counted
//! (`jetstream_ingestor_control_errors_total`) and retried with capped full-jitter backoff;
//! an entry that is not a command (bytes that are not UTF-8, a missing, unknown or repeated
//! field, an unknown `cmd`, a bad cursor) gets an `error` ack naming the entry id and the
//! problem, is counted in `jetstream_ingestor_control_rejected_total{reason}` and skipped:
//! later commands run. A command the supervisor cannot execute gets an `error` ack too; none
//! is retried.
//!
//! With `[ha]` only the leader reads the stream: a standby neither runs, acks nor moves
//! `control:last` past a command (it would be lost for the leader to come), and on taking
//! the lease it continues from the `control:last` the previous leader left.

use std::time::Duration;

use actix::Addr;
use actors::backoff::Backoff;
use actors::messages::{GetStatus, Pause, Restart, Resume};
use actors::redis_target::RedisTarget;
use actors::supervisor::Supervisor;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tracing::{info, warn};

mod command;

pub use command::{Command, Rejected};

/// How often a standby checks whether it leads now.
const STANDBY_POLL: Duration = Duration::from_millis(500);
/// How long one XREAD blocks waiting for commands.
const BLOCK: Duration = Duration::from_secs(5);
/// Acks kept (approximately) in `<prefix>control:acks`.
const ACKS_MAX_LEN: usize = 10_000;
/// The counter of entries refused as commands, by reason.
pub const REJECTED_METRIC: &str = "jetstream_ingestor_control_rejected_total";

/// The keys, all under the ingestor's prefix.
#[derive(Debug, Clone)]
pub struct ControlKeys {
    pub stream: String,
    pub acks: String,
    pub last: String,
}

impl ControlKeys {
    pub fn new(prefix: &str) -> ControlKeys {
        ControlKeys {
            stream: format!("{prefix}control"),
            acks: format!("{prefix}control:acks"),
            last: format!("{prefix}control:last"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ControlTarget {
    /// Where Redis is and how to reach it (`Debug` hides the password).
    pub redis: RedisTarget,
    pub keys: ControlKeys,
    pub instance: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

/// The running control-stream reader.
pub struct ControlStream {
    task: actix_rt::task::JoinHandle<()>,
}

impl ControlStream {
    /// Starts reading. Must run inside an actix System.
    pub fn start(target: ControlTarget, supervisor: Addr<Supervisor>) -> ControlStream {
        metrics::describe_counter!(
            REJECTED_METRIC,
            "Entries of the Redis control stream that are not a command (answered with an error ack and skipped), by reason: not_utf8, missing_cmd, unknown_cmd, unknown_field, duplicate_field, bad_cursor"
        );
        info!(stream = %target.keys.stream, "control stream enabled");
        ControlStream {
            task: actix_rt::spawn(run(target, supervisor)),
        }
    }

    /// Stops reading (a command being executed is abandoned before its ack; it runs again
    /// after a restart, which every command tolerates).
    pub fn stop(self) {
        self.task.abort();
    }
}

/// XREAD's reply. Field names and values stay bytes: one entry that is not UTF-8 must be
/// answered and skipped, not fail the whole reply (and so every later command) forever.
type Entries = Vec<(String, Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>)>;

async fn connect(target: &ControlTarget) -> redis::RedisResult<MultiplexedConnection> {
    let client = target.redis.resolve(target.connect_timeout).await?;
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(target.connect_timeout))
        .set_response_timeout(Some(BLOCK + target.response_timeout));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
}

/// Where to continue: the stored last id; with none stored (first start), Redis's clock now
/// (`<ms>-0`, stored at once with SET NX), so commands added from then on run and older ones
/// do not. Once `<prefix>control:last` exists, no command added later is missed.
async fn start_position(
    con: &mut MultiplexedConnection,
    keys: &ControlKeys,
) -> redis::RedisResult<String> {
    let stored: Option<String> = redis::cmd("GET").arg(&keys.last).query_async(con).await?;
    if let Some(id) = stored {
        return Ok(id);
    }
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(con).await?;
    let now = format!("{}-0", secs * 1_000 + micros / 1_000);
    let _: Option<String> = redis::cmd("SET")
        .arg(&keys.last)
        .arg(&now)
        .arg("NX")
        .query_async(con)
        .await?;
    let stored: Option<String> = redis::cmd("GET").arg(&keys.last).query_async(con).await?;
    Ok(stored.unwrap_or(now))
}

async fn run(target: ControlTarget, supervisor: Addr<Supervisor>) {
    let mut backoff = Backoff::new(target.retry_min, target.retry_max);
    let mut con: Option<MultiplexedConnection> = None;
    let mut position: Option<String> = None;
    loop {
        if standby(&supervisor).await {
            // Not the leader: read nothing; start again from `control:last` once leader.
            position = None;
            tokio::time::sleep(STANDBY_POLL).await;
            continue;
        }
        let step = async {
            let mut refused = false;
            let c = match &mut con {
                Some(c) => c,
                None => con.insert(connect(&target).await?),
            };
            let from = match &position {
                Some(p) => p.clone(),
                None => {
                    let p = start_position(c, &target.keys).await?;
                    position = Some(p.clone());
                    p
                }
            };
            let reply: Option<Entries> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(16)
                .arg("BLOCK")
                .arg(u64::try_from(BLOCK.as_millis()).unwrap_or(5_000))
                .arg("STREAMS")
                .arg(&target.keys.stream)
                .arg(&from)
                .query_async(c)
                .await?;
            'entries: for (_stream, entries) in reply.unwrap_or_default() {
                for (id, fields) in entries {
                    let Some(ack) = execute(&supervisor, &id, &fields).await else {
                        // Refused (a standby, or a reset under way): run it later, or the
                        // leader does; read from `control:last` again after a pause.
                        position = None;
                        refused = true;
                        break 'entries;
                    };
                    acknowledge(c, &target, &id, &ack).await?;
                    position = Some(id);
                }
            }
            redis::RedisResult::Ok(refused)
        }
        .await;
        match step {
            Ok(refused) => {
                backoff.reset();
                if refused {
                    tokio::time::sleep(STANDBY_POLL).await;
                }
            }
            Err(e) => {
                con = None;
                metrics::counter!("jetstream_ingestor_control_errors_total").increment(1);
                let delay = backoff.next_delay();
                let error = actors::redis_target::describe(&e);
                warn!(%error, retry_in = ?delay, stream = %target.keys.stream, "control stream read failed");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The answer written for one command.
#[derive(Debug)]
struct Ack {
    cmd: String,
    result: Result<Option<u64>, String>,
}

/// `[ha]`: this instance is a standby (without `[ha]`, never).
async fn standby(supervisor: &Addr<Supervisor>) -> bool {
    matches!(
        supervisor.send(GetStatus).await,
        Ok(Ok(status)) if status.ha.as_ref().is_some_and(|h| h.role == actors::messages::HaRole::Standby)
    )
}

/// Runs one entry and says what to answer; `None` when the supervisor refused it as a
/// standby (`[ha]`: it is the leader's to run, and to ack).
async fn execute(
    supervisor: &Addr<Supervisor>,
    id: &str,
    fields: &[(Vec<u8>, Vec<u8>)],
) -> Option<Ack> {
    let command = match Command::parse(fields) {
        Ok(c) => c,
        Err(r) => {
            metrics::counter!("jetstream_ingestor_control_commands_total", "cmd" => "invalid", "outcome" => "error")
                .increment(1);
            metrics::counter!(REJECTED_METRIC, "reason" => r.reason).increment(1);
            warn!(%id, reason = r.reason, message = %r.message, "control entry refused and skipped");
            let raw_cmd = fields
                .iter()
                .find(|(k, _)| k == b"cmd")
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            return Some(Ack {
                cmd: raw_cmd,
                result: Err(format!("entry {id}: {}", r.message)),
            });
        }
    };
    let answered = match command {
        Command::Restart { cursor } => supervisor
            .send(Restart {
                from_cursor: cursor,
            })
            .await
            .map(|r| r.map(Some)),
        Command::Pause => supervisor.send(Pause).await.map(|r| r.map(|()| None)),
        Command::Resume => supervisor.send(Resume).await.map(|r| r.map(|()| None)),
    };
    let result = match answered {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(refused)) => {
            info!(%id, cmd = command.name(), %refused, "control command left to the leader");
            return None;
        }
        Err(e) => Err(format!("supervisor unavailable: {e}")),
    };
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!("jetstream_ingestor_control_commands_total", "cmd" => command.name(), "outcome" => outcome)
        .increment(1);
    info!(%id, cmd = command.name(), ?command, outcome, "control command");
    Some(Ack {
        cmd: command.name().to_owned(),
        result,
    })
}

async fn acknowledge(
    con: &mut MultiplexedConnection,
    target: &ControlTarget,
    id: &str,
    ack: &Ack,
) -> redis::RedisResult<()> {
    let (result, session, message) = match &ack.result {
        Ok(session) => (
            "ok",
            session.map(|s| s.to_string()).unwrap_or_default(),
            String::new(),
        ),
        Err(m) => ("error", String::new(), m.clone()),
    };
    redis::pipe()
        .atomic()
        .cmd("XADD")
        .arg(&target.keys.acks)
        .arg("MAXLEN")
        .arg("~")
        .arg(ACKS_MAX_LEN)
        .arg("*")
        .arg("id")
        .arg(id)
        .arg("cmd")
        .arg(&ack.cmd)
        .arg("result")
        .arg(result)
        .arg("session_id")
        .arg(session)
        .arg("message")
        .arg(message)
        .arg("instance")
        .arg(&target.instance)
        .ignore()
        .cmd("SET")
        .arg(&target.keys.last)
        .arg(id)
        .ignore()
        .query_async(con)
        .await
}
