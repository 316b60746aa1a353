//! A reference consumer for jetstream-ingestor's streams: copy it and replace `work`.
//!
//! It reads a stream with a consumer group (XREADGROUP), processes each job exactly once by
//! its `idem` key, acknowledges it (XACK), takes over entries that a crashed consumer left
//! pending (XAUTOCLAIM), and stops cleanly on Ctrl-C / SIGTERM (finishing the jobs in hand).
//!
//!   REDIS_URL=redis://127.0.0.1:6379 STREAM=jsi:records GROUP=indexer \
//!     cargo run --example consumer
//!
//! Environment: REDIS_URL, STREAM (jsi:records), GROUP (example), CONSUMER (host-pid),
//! OUT (jsi:example:processed: the hash `work` writes to), CLAIM_IDLE_MS (30000: a pending
//! entry idle this long belongs to a dead consumer and is claimed), DONE_TTL_S (86400: how
//! long the "done" mark of a processed job is kept, see `WORK`).
//!
//! Idle is normal: once caught up, each XREADGROUP blocks up to `BLOCK` waiting for new
//! jobs, so the connection's response timeout is `BLOCK` plus `RESPONSE_MARGIN` (the redis
//! client's default, 500 ms, would fail every idle read with "timed out").

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult, Value};

/// How long one XREADGROUP waits for new entries.
const BLOCK: Duration = Duration::from_secs(2);
/// How much longer than `BLOCK` a reply may take before Redis counts as unreachable.
const RESPONSE_MARGIN: Duration = Duration::from_secs(5);

/// One stream entry: id and fields.
type Entry = (String, Vec<(String, String)>);

/// Your processing, done together with the "done" mark in one atomic script, so a crash
/// before or after it never processes a job twice or loses it. Here the work is a counter in
/// Redis; if your work is outside Redis (an HTTP call, a database), make it idempotent on
/// `idem` instead (an upsert keyed by it), because no transaction spans two systems.
///
/// The marks are bounded: one small key per job (`<stream>:done:<group>:<idem>`), expiring
/// after DONE_TTL_S (ARGV[2]), so Redis holds about jobs-per-second × TTL of them (a day of
/// the full firehose is tens of millions: lower it there). A mark only has to outlive the
/// time a job can come back: an entry left pending by a crashed consumer (claimed again
/// after CLAIM_IDLE_MS, or when a consumer next runs) and a deliberate `replay` of a range
/// older than the ingestor's dedupe window. Keep it above both; a job redelivered after its
/// mark expired is processed again.
const WORK: &str = r#"
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
  return 1
end
return 0
"#;

struct Consumer {
    con: MultiplexedConnection,
    stream: String,
    group: String,
    name: String,
    out: String,
    claim_idle_ms: u64,
    done_ttl_s: u64,
    work: redis::Script,
}

impl Consumer {
    /// Processes one entry (idempotently) and acknowledges it.
    async fn handle(&mut self, (id, fields): Entry) -> RedisResult<()> {
        let idem = fields
            .iter()
            .find(|(k, _)| k == "idem")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| id.clone());
        let done_key = format!("{}:done:{}:{idem}", self.stream, self.group);
        let _fresh: i64 = self
            .work
            .key(&done_key)
            .key(&self.out)
            .arg(&idem)
            .arg(self.done_ttl_s)
            .invoke_async(&mut self.con)
            .await?;
        let _: i64 = redis::cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&id)
            .query_async(&mut self.con)
            .await?;
        Ok(())
    }

    /// New entries for this group (blocks up to `BLOCK` when there are none).
    async fn read_new(&mut self) -> RedisResult<Vec<Entry>> {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(200)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(&mut self.con)
            .await?;
        // Reply: [[stream, [[id, [k, v, …]], …]]] or nil on timeout.
        let streams: Option<Vec<(String, Vec<Entry>)>> = redis::from_redis_value(reply)?;
        Ok(streams
            .into_iter()
            .flatten()
            .flat_map(|(_, entries)| entries)
            .collect())
    }

    /// Entries pending too long on any consumer (one that died): now ours.
    async fn claim_stuck(&mut self) -> RedisResult<Vec<Entry>> {
        let (_next, entries, _deleted): (String, Vec<Entry>, Value) = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.name)
            .arg(self.claim_idle_ms)
            .arg("0-0")
            .arg("COUNT")
            .arg(200)
            .query_async(&mut self.con)
            .await?;
        Ok(entries)
    }
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> RedisResult<()> {
    let url = env("REDIS_URL", "redis://127.0.0.1:6379");
    let stream = env("STREAM", "jsi:records");
    let group = env("GROUP", "example");
    let name = env("CONSUMER", &format!("consumer-{}", std::process::id()));
    let claim_idle_ms = env("CLAIM_IDLE_MS", "30000").parse().unwrap_or(30_000);
    let done_ttl_s = env("DONE_TTL_S", "86400").parse().unwrap_or(86_400).max(1);
    let config = AsyncConnectionConfig::new().set_response_timeout(Some(BLOCK + RESPONSE_MARGIN));
    let con = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let mut c = Consumer {
        con,
        out: env("OUT", "jsi:example:processed"),
        stream,
        group,
        name,
        claim_idle_ms,
        done_ttl_s,
        work: redis::Script::new(WORK),
    };

    // The ingestor creates declared groups itself; this covers running the example alone.
    let created: RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&c.stream)
        .arg(&c.group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut c.con)
        .await;
    if let Err(e) = created
        && e.code() != Some("BUSYGROUP")
    {
        return Err(e);
    }
    eprintln!(
        "consumer {} reading {} as group {}",
        c.name, c.stream, c.group
    );

    let mut stop = Box::pin(shutdown());
    let mut processed = 0u64;
    loop {
        let mut batch = c.claim_stuck().await?;
        if batch.is_empty() {
            tokio::select! {
                _ = &mut stop => break,
                read = c.read_new() => batch = read?,
            }
        }
        for entry in batch {
            c.handle(entry).await?;
            processed += 1;
        }
    }
    eprintln!("consumer {} stopping after {processed} jobs", c.name);
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
