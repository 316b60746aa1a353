//! Loading the cursors at start: what Redis holds ([`Stored`]: the stored cursor, the
//! progress of an unfinished replay, the commit chain's token), read once before the
//! pipeline starts. Talks to Redis through `RedisTarget` (TLS, Sentinel, Cluster).
//!
//! Failure: waits with backoff until Redis answers; gives up only for what waiting does not
//! mend (a refused certificate, password or ACL right) or a key that does not hold a cursor.

use tracing::warn;

use super::commit::Keys;
use super::config::WriterConfig;
use crate::backoff::Backoff;
use crate::redis_target::redact;

/// What Redis holds at start: the stored cursor, the progress of an unfinished replay behind
/// it (`cursor:replay`) and the commit chain's token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    pub cursor: Option<u64>,
    pub replay: Option<u64>,
    /// The writer's first commit expects exactly this token: Redis rolling back between the
    /// start and that commit is a rollback like any other.
    pub chain: Option<String>,
}

/// Reads [`Stored`], waiting (with backoff) until Redis answers. `Err` names a key that does
/// not hold a cursor.
pub async fn load_cursors(cfg: &WriterConfig) -> Result<Stored, String> {
    let target = cfg.target();
    target.client().map_err(|e| e.to_string())?;
    let keys = Keys::new(&cfg.key_prefix);
    let mut backoff = Backoff::new(cfg.retry_min, cfg.retry_max);
    let url = redact(&cfg.url);
    let parse = |key: &str, v: Option<String>| -> Result<Option<u64>, String> {
        v.map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                format!(
                    "{key} holds {v:?}, which is not a cursor (unix microseconds); fix or delete it"
                )
            })
        })
        .transpose()
    };
    loop {
        let attempt = async {
            let client = target.resolve(cfg.connect_timeout).await?;
            let mut c = client.get_multiplexed_async_connection().await?;
            redis::cmd("MGET")
                .arg(&keys.cursor)
                .arg(&keys.replay)
                .arg(&keys.chain)
                .query_async::<(Option<String>, Option<String>, Option<String>)>(&mut c)
                .await
        };
        match tokio::time::timeout(cfg.connect_timeout.saturating_mul(2), attempt).await {
            Ok(Ok((cursor, replay, chain))) => {
                return Ok(Stored {
                    cursor: parse(&keys.cursor, cursor)?,
                    replay: parse(&keys.replay, replay)?,
                    chain,
                });
            }
            Ok(Err(e)) => {
                // Waiting does not mend a refused certificate, password or ACL right.
                if let Some(why) = crate::redis_target::refusal(&e) {
                    metrics::counter!("jetstream_ingestor_redis_refusals_total").increment(1);
                    return Err(format!("cannot read it from redis at {url}: {why}"));
                }
                warn!(error = %e, url = %url, "cannot read the stored cursor; retrying")
            }
            Err(_) => warn!(url = %url, "reading the stored cursor timed out; retrying"),
        }
        metrics::counter!("jetstream_ingestor_redis_connect_failures_total").increment(1);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
