//! `RetentionKeeper`: creates the declared consumer groups at start and, every
//! `redis.retention.interval`, trims each stream to the operator's bounds without ever
//! deleting an entry a protected group still needs (the rule and the planner are in
//! `trim.rs`). Runs beside the writer, outside the hot path, on its own connection.
//!
//! Races: the writer appends while we plan. An id-based trim (`MINID`) is always safe (what
//! a group needs only moves forward). A length trim (`MAXLEN`) is safe only while every
//! protected group's unread count fits the bound, so it runs as a Lua script that re-checks
//! that condition atomically with the trim. Groups not declared in config are protected
//! too; only `disposable` ones are not.
//!
//! Failure: Redis errors are logged and counted, and the next tick tries again. Nothing
//! here can lose a job: at worst a stream stays longer than its bound.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use redis::Value;
use tracing::{info, warn};

use super::commit::Keys;
use super::config::{ConsumerGroup, RetentionConfig};
use super::trim::{Blocking, Bounds, GroupState, Plan, StreamId, StreamState, Trim, plan};
use crate::backoff::Backoff;
use crate::messages::{GetRetentionStatus, RetentionStatus, StreamRetention};
use crate::redis_target::RedisTarget;

/// `XTRIM MAXLEN = n`, only if no protected group has pending entries or more unread
/// entries than `n`. KEYS[1] stream; ARGV[1] n; ARGV[2..] disposable groups. Returns the
/// number trimmed, or -1 when a group would lose entries (the caller trims by id instead).
const GUARDED_MAXLEN: &str = r#"
local n = tonumber(ARGV[1])
local disposable = {}
for i = 2, #ARGV do disposable[ARGV[i]] = true end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  if not disposable[f['name']] then
    local lag = f['lag']
    if tonumber(f['pending']) > 0 or not lag or tonumber(lag) > n then
      return -1
    end
  end
end
return redis.call('XTRIM', KEYS[1], 'MAXLEN', '=', n)
"#;

/// Creates every declared group that does not exist yet (`XGROUP CREATE … MKSTREAM`),
/// waiting for Redis like the cursor load does. Existing groups are left untouched.
pub async fn ensure_groups(
    target: &RedisTarget,
    prefix: &str,
    consumers: &[ConsumerGroup],
    retry: (Duration, Duration),
) -> Result<(), String> {
    if consumers.is_empty() {
        return Ok(());
    }
    target.client().map_err(|e| e.to_string())?;
    let keys = Keys::new(prefix);
    let mut backoff = Backoff::new(retry.0, retry.1);
    'retry: loop {
        let connect = async {
            let client = target.resolve(retry.1.max(Duration::from_secs(1))).await?;
            client.get_multiplexed_async_connection().await
        };
        let mut con = match connect.await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot reach redis to create consumer groups; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        for c in consumers {
            let key = keys.stream(&c.stream);
            let res: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&key)
                .arg(&c.group)
                .arg(&c.start_id)
                .arg("MKSTREAM")
                .query_async(&mut con)
                .await;
            match res {
                Ok(()) => {
                    info!(stream = %key, group = %c.group, start_id = %c.start_id, "consumer group created")
                }
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                    warn!(error = %e, "redis went away while creating consumer groups; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue 'retry;
                }
                Err(e) => return Err(format!("consumer group {} on {key}: {e}", c.group)),
            }
        }
        return Ok(());
    }
}

pub struct RetentionKeeper {
    cfg: RetentionConfig,
    /// With Sentinel, each pass asks where the master is.
    target: RedisTarget,
    keys: Keys,
    /// Stream names (after the prefix) under retention, with their length bound.
    streams: Vec<(String, u64)>,
    disposable: HashMap<String, Vec<String>>,
    busy: bool,
    status: RetentionStatus,
}

impl RetentionKeeper {
    /// `streams`: every job stream name this ingestor writes (records, identity, routes …);
    /// the dead-letter stream is added here with its own bound.
    pub fn new(
        target: &RedisTarget,
        prefix: &str,
        cfg: RetentionConfig,
        streams: Vec<String>,
        consumers: &[ConsumerGroup],
    ) -> Result<Self, redis::RedisError> {
        let mut list: Vec<(String, u64)> = Vec::new();
        for s in streams
            .into_iter()
            .chain(consumers.iter().map(|c| c.stream.clone()))
        {
            if s != "dead" && !list.iter().any(|(n, _)| *n == s) {
                list.push((s, cfg.max_len));
            }
        }
        list.push(("dead".to_owned(), cfg.dead_max_len));
        let mut disposable: HashMap<String, Vec<String>> = HashMap::new();
        for c in consumers.iter().filter(|c| c.disposable) {
            disposable
                .entry(c.stream.clone())
                .or_default()
                .push(c.group.clone());
        }
        Ok(RetentionKeeper {
            target: {
                target.client()?;
                target.clone()
            },
            keys: Keys::new(prefix),
            streams: list,
            disposable,
            busy: false,
            status: RetentionStatus::default(),
            cfg,
        })
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let target = self.target.clone();
        let jobs: Vec<(String, String, Bounds, Vec<String>)> = self
            .streams
            .iter()
            .map(|(name, max_len)| {
                let bounds = Bounds {
                    max_len: *max_len,
                    max_age_ms: self
                        .cfg
                        .max_age
                        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                };
                (
                    name.clone(),
                    self.keys.stream(name),
                    bounds,
                    self.disposable.get(name).cloned().unwrap_or_default(),
                )
            })
            .collect();
        let work = async move {
            let client = target.resolve(Duration::from_secs(5)).await?;
            let mut con = client.get_multiplexed_async_connection().await?;
            let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut con).await?;
            let now_ms = secs * 1000 + micros / 1000;
            let mut out = Vec::with_capacity(jobs.len());
            for (name, key, bounds, disposable) in jobs {
                if let Some(r) =
                    keep_one(&mut con, &name, &key, bounds, &disposable, now_ms).await?
                {
                    out.push(r);
                }
            }
            Ok::<_, redis::RedisError>(out)
        };
        ctx.spawn(work.into_actor(self).map(|res, act, _ctx| {
            act.busy = false;
            match res {
                Ok(streams) => {
                    for s in &streams {
                        metrics::gauge!("jetstream_ingestor_stream_length", "stream" => s.stream.clone()).set(s.length as f64);
                        for b in &s.blocking {
                            metrics::gauge!("jetstream_ingestor_retention_blocked_lag", "stream" => s.stream.clone(), "group" => b.group.clone())
                                .set(b.lag.unwrap_or(0) as f64);
                        }
                        let was_blocked = act.status.streams.iter().any(|o| o.stream == s.stream && !o.blocking.is_empty());
                        if !s.blocking.is_empty() && !was_blocked {
                            warn!(stream = %s.stream, length = s.length, blocking = ?s.blocking, "consumer groups hold this stream above its retention bound; their unread jobs are kept");
                        }
                    }
                    act.status.streams = streams;
                    act.status.last_error = None;
                }
                Err(e) => {
                    metrics::counter!("jetstream_ingestor_retention_errors_total").increment(1);
                    let error = crate::redis_target::describe(&e);
                    warn!(%error, "retention pass failed; next tick retries");
                    act.status.last_error = Some(error);
                }
            }
        }));
    }
}

/// Plans and trims one stream. `None` if the stream does not exist yet.
async fn keep_one(
    con: &mut redis::aio::MultiplexedConnection,
    name: &str,
    key: &str,
    bounds: Bounds,
    disposable: &[String],
    now_ms: u64,
) -> redis::RedisResult<Option<StreamRetention>> {
    let info: Value = match redis::cmd("XINFO")
        .arg("STREAM")
        .arg(key)
        .query_async(con)
        .await
    {
        Ok(v) => v,
        Err(e) if e.to_string().contains("no such key") => return Ok(None),
        Err(e) => return Err(e),
    };
    let info = fields(&info);
    let stream = StreamState {
        length: int(info.get("length")),
        last_generated: id(info.get("last-generated-id")).unwrap_or(StreamId { ms: 0, seq: 0 }),
    };
    let raw_groups: Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(con)
        .await?;
    let mut groups = Vec::new();
    if let Value::Array(list) = raw_groups {
        for g in &list {
            let f = fields(g);
            let name = text(f.get("name"));
            let pending = int(f.get("pending"));
            let oldest_pending = if pending > 0 {
                let summary: Value = redis::cmd("XPENDING")
                    .arg(key)
                    .arg(&name)
                    .query_async(con)
                    .await?;
                match summary {
                    Value::Array(parts) if parts.len() >= 2 => id(parts.get(1)),
                    _ => None,
                }
            } else {
                None
            };
            groups.push(GroupState {
                disposable: disposable.contains(&name),
                name,
                last_delivered: id(f.get("last-delivered-id"))
                    .unwrap_or(StreamId { ms: 0, seq: 0 }),
                pending,
                oldest_pending,
                lag: f.get("lag").and_then(|v| match v {
                    Value::Nil => None,
                    other => Some(int(Some(other))),
                }),
            });
        }
    }
    let Plan { trims, blocking } = plan(&stream, &groups, bounds, now_ms);
    let mut trimmed = 0u64;
    let mut blocking: Vec<Blocking> = blocking;
    for t in trims {
        let n: i64 = match t {
            Trim::MaxLen(n) => {
                let r: i64 = redis::Script::new(GUARDED_MAXLEN)
                    .key(key)
                    .arg(n)
                    .arg(disposable)
                    .invoke_async(con)
                    .await?;
                if r < 0 {
                    // A group fell behind between planning and trimming: trim by id only.
                    let needed = groups
                        .iter()
                        .filter(|g| !g.disposable)
                        .map(GroupState::needs_from)
                        .min();
                    if let Some(min) = needed {
                        redis::cmd("XTRIM")
                            .arg(key)
                            .arg("MINID")
                            .arg("=")
                            .arg(min.to_string())
                            .query_async(con)
                            .await?
                    } else {
                        0
                    }
                } else {
                    r
                }
            }
            Trim::MinId(id) => {
                redis::cmd("XTRIM")
                    .arg(key)
                    .arg("MINID")
                    .arg("=")
                    .arg(id.to_string())
                    .query_async(con)
                    .await?
            }
        };
        trimmed += u64::try_from(n).unwrap_or(0);
    }
    if trimmed > 0 {
        metrics::counter!("jetstream_ingestor_retention_trimmed_total", "stream" => name.to_owned()).increment(trimmed);
    }
    let length: u64 = redis::cmd("XLEN").arg(key).query_async(con).await?;
    blocking.sort_by(|a, b| a.group.cmp(&b.group));
    Ok(Some(StreamRetention {
        stream: name.to_owned(),
        length,
        bound: bounds.max_len,
        trimmed_last: trimmed,
        blocking,
    }))
}

/// A RESP2 flat `[k, v, k, v …]` (or RESP3 map) as a lookup table.
fn fields(v: &Value) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    match v {
        Value::Array(items) => {
            for pair in items.chunks(2) {
                if let [k, v] = pair {
                    out.insert(text(Some(k)), v.clone());
                }
            }
        }
        Value::Map(pairs) => {
            for (k, v) in pairs {
                out.insert(text(Some(k)), v.clone());
            }
        }
        _ => {}
    }
    out
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::SimpleString(s)) => s.clone(),
        Some(Value::Int(i)) => i.to_string(),
        _ => String::new(),
    }
}

fn int(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Int(i)) => u64::try_from(*i).unwrap_or(0),
        other => text(other).parse().unwrap_or(0),
    }
}

fn id(v: Option<&Value>) -> Option<StreamId> {
    StreamId::parse(&text(v))
}

impl Actor for RetentionKeeper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.cfg.interval, |act, ctx| act.tick(ctx));
    }
}

impl Handler<GetRetentionStatus> for RetentionKeeper {
    type Result = MessageResult<GetRetentionStatus>;

    fn handle(&mut self, _: GetRetentionStatus, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.status.clone())
    }
}
