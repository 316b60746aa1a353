//! The writer's round trips to Redis, as plain futures the actor spawns: connecting (with
//! backoff, forever), a probe, a commit (then `redis.wait_replicas`), and recovery's read of
//! the chain (following a Sentinel failover or a moved Cluster slot first).
//!
//! Failure: each future returns Redis's error; the core (`pipeline.rs`) decides its fate.

use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, Value};
use tracing::warn;

use super::action::{CommitError, Held, ToSend};
use super::commit::{Encoded, Keys};
use super::config::WriterConfig;
use super::failpoint;
use crate::backoff::Backoff;
use crate::redis_target::{RedisTarget, redact};

pub fn manager_config(cfg: &WriterConfig) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(cfg.connect_timeout))
        .set_response_timeout(Some(cfg.response_timeout))
        .set_number_of_retries(2)
        .set_max_delay(cfg.retry_max)
}

/// Connects to where `target` says Redis is, retrying with backoff until it works.
pub fn connect(
    cfg: &WriterConfig,
    target: RedisTarget,
) -> impl Future<Output = (ConnectionManager, Option<ConnectionAddr>)> + use<> {
    let timeout = cfg.connect_timeout;
    let config = manager_config(cfg);
    let mut backoff = Backoff::new(cfg.retry_min, cfg.retry_max);
    let url = redact(&cfg.url);
    async move {
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
    }
}

pub async fn probe(
    mut conn: ConnectionManager,
    enc: Rc<Encoded>,
) -> Result<Vec<Value>, CommitError> {
    match &enc.probe {
        Some(p) => p.query_async::<Vec<Value>>(&mut conn).await,
        None => Ok(Vec::new()),
    }
    .map_err(CommitError::Redis)
}

/// Sends a commit; once it ran (a reply other than nil), waits for the replicas. `Ok`: the
/// transaction ran (the failpoints after a commit are reached here).
pub async fn commit(
    mut conn: ConnectionManager,
    pipe: ToSend,
    replicas: Option<Replicas>,
) -> Result<(), CommitError> {
    let sent = async {
        let reply = pipe.get().query_async::<Value>(&mut conn).await?;
        if let (Some(wanted), false) = (replicas, matches!(reply, Value::Nil)) {
            confirm_replicas(&mut conn, wanted, None).await?;
        }
        Ok::<_, redis::RedisError>(reply)
    };
    match sent.await {
        Ok(Value::Nil) => Err(CommitError::Reply(
            "EXEC answered nil (transaction not run)".into(),
        )),
        Ok(_) => {
            failpoint::hit(failpoint::Point::AfterCommitBeforeAck);
            failpoint::hit(failpoint::Point::DuringDrain);
            Ok(())
        }
        Err(e) => Err(CommitError::Redis(e)),
    }
}

/// The chain token as `ResumeWriting` knows it, or as Redis holds it now (`None`:
/// unreadable, or no connection yet).
pub async fn chain_now(
    conn: Option<ConnectionManager>,
    key: String,
    known: Option<Option<String>>,
) -> Option<Option<String>> {
    if let Some(chain) = known {
        return Some(chain);
    }
    let mut conn = conn?;
    redis::cmd("GET")
        .arg(&key)
        .query_async::<Option<String>>(&mut conn)
        .await
        .ok()
}

/// What recovery needs to read the chain.
pub struct Recovery {
    pub keys: Rc<Keys>,
    pub replicas: Option<Replicas>,
    /// With Sentinel or Cluster: where to ask for the master now.
    pub sentinel: Option<RedisTarget>,
    /// The address the connection goes to.
    pub current: Option<ConnectionAddr>,
    pub config: ConnectionManagerConfig,
    pub timeout: Duration,
}

impl Recovery {
    pub fn new(
        cfg: &WriterConfig,
        keys: Rc<Keys>,
        target: &RedisTarget,
        current: Option<ConnectionAddr>,
    ) -> Recovery {
        Recovery {
            keys,
            replicas: Replicas::of(cfg),
            sentinel: target.discovers().then(|| target.clone()),
            current,
            config: manager_config(cfg),
            timeout: cfg.connect_timeout,
        }
    }
}

/// A new connection, when the master moved.
pub type Moved = Option<(ConnectionManager, ConnectionAddr)>;

/// Reads the chain, the stored cursor and the replay's progress (after the master moved, on
/// a new connection, returned too); with `redis.wait_replicas`, what landed counts only
/// once replicated.
pub async fn read_held(
    mut conn: ConnectionManager,
    r: Recovery,
) -> redis::RedisResult<(Held, Moved)> {
    // With Sentinel or Cluster the failure may be a failover or a slot that moved: ask
    // where to write now.
    let mut moved = None;
    if let Some(target) = r.sentinel {
        let client = target.resolve(r.timeout).await?;
        let addr = client.get_connection_info().addr().clone();
        if r.current.as_ref() != Some(&addr) {
            conn = ConnectionManager::new_with_config(client, r.config).await?;
            moved = Some((conn.clone(), addr));
        }
    }
    let (chain, cursor, replay) = redis::cmd("MGET")
        .arg(&r.keys.chain)
        .arg(&r.keys.cursor)
        .arg(&r.keys.replay)
        .query_async::<(Option<String>, Option<String>, Option<String>)>(&mut conn)
        .await?;
    // What landed counts only once replicated (`redis.wait_replicas`): a write of our own on
    // this connection after it, then WAIT for that write.
    if let Some(wanted) = r.replicas {
        confirm_replicas(&mut conn, wanted, Some(&r.keys.wait)).await?;
    }
    let number = |v: Option<String>| v.and_then(|c| c.trim().parse::<u64>().ok());
    let held = Held {
        chain,
        cursor: number(cursor),
        replay: number(replay),
    };
    Ok((held, moved))
}

/// `redis.wait_replicas`: how many replicas must have a commit before it counts.
#[derive(Debug, Clone, Copy)]
pub struct Replicas {
    count: u32,
    timeout_ms: u64,
}

impl Replicas {
    /// `redis.wait_replicas` and its timeout, when set.
    pub fn of(cfg: &WriterConfig) -> Option<Replicas> {
        (cfg.wait_replicas > 0).then(|| Replicas {
            count: cfg.wait_replicas,
            timeout_ms: u64::try_from(cfg.wait_timeout.as_millis()).unwrap_or(u64::MAX),
        })
    }
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
