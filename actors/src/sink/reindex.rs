//! Rebuilding the dedupe index from the streams, before a replay from older than the index
//! remembers (`Restart { from_cursor }` into the past, `replay --from`).
//!
//! The index (`<prefix>dedupe`) keeps identities for `redis.dedupe_window` behind the
//! cursor: enough for the rewind of a reconnect, not for a replay of the last day. Without
//! this, a replay would write every event again; with it, the replayed range is written
//! only where it is missing (lost by a Redis rollback, a bug, a trim of `dead`…).
//!
//! How: every stream the service writes is read newest first (`XREVRANGE`, pages of
//! [`PAGE`]) back to entries inserted before `from_us` minus a margin (an entry is inserted
//! after its event happened, give or take the clock difference between the Jetstream host
//! and Redis), and the identity of each entry at or after `from_us` is added with its event
//! time as score ([`identity_of_entry`], the inverse of the job schema). The commits of the
//! replay prune the index behind themselves as usual.
//!
//! Then [`mark_replay`] records the replay's start in `<prefix>cursor:replay` before the
//! caller acknowledges it, so a crash before its first commit does not abandon it.
//!
//! Failure: any Redis error is returned; the caller retries or refuses the replay (never
//! replays without the index, which would duplicate).

use redis::aio::MultiplexedConnection;
use redis::streams::StreamRangeReply;

use crate::model::job::identity_of_entry;

/// Entries per `XREVRANGE` page (and per `ZADD`).
pub const PAGE: usize = 500;

/// What a rebuild did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reindexed {
    pub entries_read: u64,
    pub identities_added: u64,
}

/// Adds to `dedupe` the identity of every entry of `streams` whose event time is at or
/// after `from_us`, reading each stream back to entries inserted `margin_us` before it.
///
/// Only adds: an identity the index still holds (the last `redis.dedupe_window`) counts as
/// committed even when its entry is gone from its stream. That entry was trimmed by
/// retention (consumed: writing it again would hand it to consumers twice) or deleted by
/// hand; a replay restores what is older than the window.
pub async fn reindex(
    con: &mut MultiplexedConnection,
    dedupe: &str,
    streams: &[String],
    from_us: u64,
    margin_us: u64,
) -> redis::RedisResult<Reindexed> {
    let mut done = Reindexed::default();
    let stop_ms = from_us.saturating_sub(margin_us) / 1000;
    for key in streams {
        let mut end = "+".to_owned();
        'pages: loop {
            let page: StreamRangeReply = redis::cmd("XREVRANGE")
                .arg(key)
                .arg(&end)
                .arg("-")
                .arg("COUNT")
                .arg(PAGE)
                .query_async(con)
                .await?;
            if page.ids.is_empty() {
                break;
            }
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(dedupe);
            let mut adds = 0u64;
            let mut reached_stop = false;
            for entry in &page.ids {
                done.entries_read += 1;
                let inserted_ms = entry
                    .id
                    .split_once('-')
                    .and_then(|(ms, _)| ms.parse::<u64>().ok())
                    .unwrap_or(0);
                if inserted_ms < stop_ms {
                    reached_stop = true;
                    break;
                }
                let field = |name: &str| match entry.map.get(name) {
                    Some(redis::Value::BulkString(b)) => std::str::from_utf8(b).ok(),
                    Some(redis::Value::SimpleString(s)) => Some(s.as_str()),
                    _ => None,
                };
                if let Some((id, score)) = identity_of_entry(field, inserted_ms * 1000)
                    && score >= from_us
                {
                    zadd.arg(score).arg(id);
                    adds += 1;
                }
            }
            if adds > 0 {
                let _: i64 = zadd.query_async(con).await?;
                done.identities_added += adds;
            }
            let last = page.ids.last().map(|e| e.id.clone()).unwrap_or_default();
            if reached_stop || page.ids.len() < PAGE {
                break 'pages;
            }
            end = format!("({last}");
        }
    }
    Ok(done)
}

/// Records a replay from `from_us` as begun, before anyone is told it is: sets
/// `<prefix>cursor:replay` to `from_us` when that is behind the stored cursor (a replay
/// into the future is none). A crash before the replay's first commit then resumes it at the
/// next start instead of abandoning it; the replay's commits move the key on from there and
/// delete it once they catch up. Returns whether the key was set.
///
/// With `[ha]`, `fence` is the writer's fencing token: an instance that lost the lease
/// meanwhile is refused (`FENCED`), like its commits.
pub async fn mark_replay(
    con: &mut MultiplexedConnection,
    keys: &crate::sink::commit::Keys,
    from_us: u64,
    fence: Option<u64>,
) -> redis::RedisResult<bool> {
    let set: i64 = redis::Script::new(MARK_REPLAY_SCRIPT)
        .key(&keys.cursor)
        .key(&keys.replay)
        .key(&keys.fence)
        .arg(from_us)
        .arg(fence.map_or_else(String::new, |f| f.to_string()))
        .invoke_async(con)
        .await?;
    Ok(set == 1)
}

/// KEYS: 1 cursor, 2 replay cursor, 3 fencing counter. ARGV: 1 where the replay starts,
/// 2 the writer's fencing token ("" = no `[ha]`).
const MARK_REPLAY_SCRIPT: &str = r#"
if ARGV[2] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[2] then
  return redis.error_reply('FENCED this instance holds fencing token ' .. ARGV[2] .. ', the lease is at ' .. tostring(redis.call('GET', KEYS[3])) .. ': the replay is not recorded')
end
local stored = tonumber(redis.call('GET', KEYS[1]) or '')
if stored and tonumber(ARGV[1]) < stored then
  redis.call('SET', KEYS[2], ARGV[1])
  return 1
end
return 0
"#;
