//! The heartbeat: every `heartbeat.interval` the hash `<prefix>heartbeat` is rewritten (HSET +
//! PEXPIRE in one MULTI) with the [`StatusView`] fields: instance, version, state, committed
//! cursor, lag, last event time, consecutive failures, totals. It expires after
//! `heartbeat.ttl`, so a hash that is gone means no live process; consumers and operators see
//! staleness without the HTTP port. On a clean stop a last write says `state = stopped`.
//!
//! Talks to: Redis on a connection of its own (never the writer's), and the `watch` channel of
//! observations that `app.rs` feeds.
//!
//! With `[ha]` only the leader writes it (a standby skips its ticks).
//!
//! Failure: never fatal. A failed write is logged and counted
//! (`jetstream_ingestor_heartbeat_writes_total{outcome="failed"}`), the connection is dropped
//! and built again at the next tick.

use std::time::{Duration, SystemTime};

use actors::redis_target::RedisTarget;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::admin::view::{Observed, StatusView, unix_ms};

/// `[heartbeat]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    pub enabled: bool,
    /// How often the hash is rewritten.
    #[serde(with = "actors::model::duration")]
    pub interval: Duration,
    /// Expiry of the hash; longer than `interval`, so only a dead process lets it lapse.
    #[serde(with = "actors::model::duration")]
    pub ttl: Duration,
    /// Names this process in the hash; empty = `<hostname>-<pid>`.
    pub instance_id: String,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            enabled: true,
            interval: Duration::from_secs(5),
            ttl: Duration::from_secs(30),
            instance_id: String::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HeartbeatConfigError {
    #[error("heartbeat.interval must be at least 100ms, got {0:?}")]
    Interval(Duration),
    #[error("heartbeat.ttl ({ttl:?}) must be longer than heartbeat.interval ({interval:?})")]
    Ttl { ttl: Duration, interval: Duration },
}

impl HeartbeatConfig {
    pub fn validate(&self) -> Result<(), HeartbeatConfigError> {
        if self.interval < Duration::from_millis(100) {
            return Err(HeartbeatConfigError::Interval(self.interval));
        }
        if self.ttl <= self.interval {
            return Err(HeartbeatConfigError::Ttl {
                ttl: self.ttl,
                interval: self.interval,
            });
        }
        Ok(())
    }
}

/// Where and how to write.
#[derive(Debug, Clone)]
pub struct HeartbeatTarget {
    /// Where Redis is and how to reach it (`Debug` hides the password).
    pub redis: RedisTarget,
    /// `<prefix>heartbeat`
    pub key: String,
    pub instance: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

/// The running heartbeat task.
pub struct Heartbeat {
    task: actix_rt::task::JoinHandle<()>,
    target: HeartbeatTarget,
    ttl: Duration,
    observed: watch::Receiver<Observed>,
}

impl Heartbeat {
    /// Starts writing every `cfg.interval`. Must run inside an actix System.
    pub fn start(
        cfg: &HeartbeatConfig,
        target: HeartbeatTarget,
        observed: watch::Receiver<Observed>,
    ) -> Heartbeat {
        let task = actix_rt::spawn(beat(
            target.clone(),
            cfg.interval,
            cfg.ttl,
            observed.clone(),
        ));
        Heartbeat {
            task,
            target,
            ttl: cfg.ttl,
            observed,
        }
    }

    /// Stops the loop and writes a last hash with `state = stopped` (best effort, 2 s).
    pub async fn stop(self) {
        self.task.abort();
        if standby(&self.observed) {
            return;
        }
        let mut view = view_now(&self.observed, &self.target.instance);
        view.state = "stopped".to_owned();
        view.ready = false;
        let last = async {
            let mut con = connect(&self.target).await?;
            write(&mut con, &self.target.key, &view, self.ttl).await
        };
        match tokio::time::timeout(Duration::from_secs(2), last).await {
            Ok(Ok(())) => debug!("final heartbeat written"),
            Ok(Err(e)) => warn!(error = %e, "final heartbeat not written"),
            Err(_) => warn!("final heartbeat timed out"),
        }
    }
}

/// `[ha]`: a standby does not write the hash: it speaks for the writer of the key prefix
/// (a `replay` checks it), and the leader writes it.
fn standby(observed: &watch::Receiver<Observed>) -> bool {
    observed
        .borrow()
        .status
        .as_ref()
        .and_then(|s| s.ha.as_ref())
        .is_some_and(|ha| ha.role == actors::messages::HaRole::Standby)
}

fn view_now(observed: &watch::Receiver<Observed>, instance: &str) -> StatusView {
    let o = observed.borrow().clone();
    StatusView::new(&o, None, instance, SystemTime::now())
}

async fn connect(target: &HeartbeatTarget) -> redis::RedisResult<MultiplexedConnection> {
    let client = target.redis.resolve(target.connect_timeout).await?;
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(target.connect_timeout))
        .set_response_timeout(Some(target.response_timeout));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
}

async fn write(
    con: &mut MultiplexedConnection,
    key: &str,
    view: &StatusView,
    ttl: Duration,
) -> redis::RedisResult<()> {
    let fields = view.heartbeat_fields(unix_ms(SystemTime::now()));
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    redis::pipe()
        .atomic()
        .hset_multiple(key, &fields)
        .ignore()
        .pexpire(key, i64::try_from(ttl_ms).unwrap_or(i64::MAX))
        .ignore()
        .query_async(con)
        .await
}

async fn beat(
    target: HeartbeatTarget,
    interval: Duration,
    ttl: Duration,
    observed: watch::Receiver<Observed>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut con: Option<MultiplexedConnection> = None;
    let mut failures: u64 = 0;
    loop {
        tick.tick().await;
        if standby(&observed) {
            continue;
        }
        let view = view_now(&observed, &target.instance);
        let result = async {
            let c = match &mut con {
                Some(c) => c,
                None => con.insert(connect(&target).await?),
            };
            write(c, &target.key, &view, ttl).await
        }
        .await;
        match result {
            Ok(()) => {
                if failures > 0 {
                    warn!(after_failures = failures, "heartbeat written again");
                }
                failures = 0;
                metrics::counter!("jetstream_ingestor_heartbeat_writes_total", "outcome" => "ok")
                    .increment(1);
            }
            Err(e) => {
                failures += 1;
                con = None;
                metrics::counter!("jetstream_ingestor_heartbeat_writes_total", "outcome" => "failed")
                    .increment(1);
                let error = actors::redis_target::describe(&e);
                warn!(%error, consecutive = failures, key = %target.key, "heartbeat write failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_must_outlast_the_interval() {
        HeartbeatConfig::default()
            .validate()
            .expect("default valid");
        let c = HeartbeatConfig {
            ttl: Duration::from_secs(5),
            ..HeartbeatConfig::default()
        };
        let e = c.validate().expect_err("refused").to_string();
        assert!(e.contains("heartbeat.ttl"), "{e}");
        let c = HeartbeatConfig {
            interval: Duration::from_millis(10),
            ..HeartbeatConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
