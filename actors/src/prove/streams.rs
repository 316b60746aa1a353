//! The worker's reads from Redis: new jobs of its consumer group (XREADGROUP), jobs left
//! pending by dead consumers (XAUTOCLAIM), and the identity stream whose events invalidate
//! cached DID documents (XREAD, every worker sees every event). A failed read is returned
//! (jobs) or logged and retried after a second (identities); nothing is acknowledged here.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};

use super::resolver::Resolver;

/// One stream entry: id and fields.
pub type Entry = (String, Vec<(String, String)>);

/// The consumer group a worker reads as.
pub struct Group<'a> {
    pub group: &'a str,
    pub consumer: &'a str,
    /// The full stream keys (prefix included).
    pub keys: &'a [String],
}

/// New entries of every stream (blocks up to `block` when given and there are none).
pub async fn read_new(
    group: &Group<'_>,
    con: &mut MultiplexedConnection,
    count: usize,
    block: Option<Duration>,
) -> RedisResult<Vec<(String, Entry)>> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(group.group)
        .arg(group.consumer)
        .arg("COUNT")
        .arg(count);
    if let Some(b) = block {
        cmd.arg("BLOCK").arg(b.as_millis() as u64);
    }
    cmd.arg("STREAMS");
    for key in group.keys {
        cmd.arg(key);
    }
    for _ in group.keys {
        cmd.arg(">");
    }
    let reply: Value = cmd.query_async(con).await?;
    let streams: Option<Vec<(String, Vec<Entry>)>> = redis::from_redis_value(reply)?;
    Ok(streams
        .into_iter()
        .flatten()
        .flat_map(|(s, entries)| entries.into_iter().map(move |e| (s.clone(), e)))
        .collect())
}

/// Entries pending longer than `claim_idle` on any consumer (a dead one): now ours.
pub async fn claim_stuck(
    group: &Group<'_>,
    con: &mut MultiplexedConnection,
    count: usize,
    claim_idle: Duration,
) -> RedisResult<Vec<(String, Entry)>> {
    let mut out = Vec::new();
    for key in group.keys {
        let (_next, entries, _deleted): (String, Vec<Entry>, Value) = redis::cmd("XAUTOCLAIM")
            .arg(key)
            .arg(group.group)
            .arg(group.consumer)
            .arg(claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(con)
            .await?;
        out.extend(entries.into_iter().map(|e| (key.clone(), e)));
    }
    Ok(out)
}

/// Claims `entries` (stream key, id) again for this consumer (XCLAIM, min idle 0, JUSTID):
/// resets their idle time so other workers do not take over jobs still being worked on.
pub async fn touch(
    group: &Group<'_>,
    con: &mut MultiplexedConnection,
    entries: &[&(String, String)],
) -> RedisResult<()> {
    for key in group.keys {
        let ids: Vec<&str> = entries
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, id)| id.as_str())
            .collect();
        if ids.is_empty() {
            continue;
        }
        let _: Value = redis::cmd("XCLAIM")
            .arg(key)
            .arg(group.group)
            .arg(group.consumer)
            .arg(0)
            .arg(&ids)
            .arg("JUSTID")
            .query_async(con)
            .await?;
    }
    Ok(())
}

/// Follows `<prefix>identity` from its end and forgets the DID of every event.
pub async fn watch_identities(
    mut con: MultiplexedConnection,
    key: String,
    mut last: String,
    block: Duration,
    resolver: Arc<Resolver>,
) {
    loop {
        let reply: RedisResult<Value> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(500)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&key)
            .arg(&last)
            .query_async(&mut con)
            .await;
        let entries: Vec<Entry> = match reply.and_then(|v| {
            redis::from_redis_value::<Option<Vec<(String, Vec<Entry>)>>>(v).map_err(Into::into)
        }) {
            Ok(streams) => streams.into_iter().flatten().flat_map(|(_, e)| e).collect(),
            Err(e) => {
                tracing::warn!(%e, "prove: reading the identity stream failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for (id, fields) in entries {
            if let Some((_, did)) = fields.iter().find(|(k, _)| k == "did") {
                resolver.invalidate(did);
            }
            last = id;
        }
    }
}
