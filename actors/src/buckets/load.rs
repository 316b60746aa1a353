//! Start-up read of the bucket state: the applied mark (`<prefix>buckets:applied`, see
//! `applied.rs`) and, for every enabled bucket, its stored `criteria_hash`
//! (`<prefix>bucket:<id>:meta`) and every DID's state (`HSCAN <prefix>bucket:<id>:state`).
//! That state is exactly the state after the committed cursor (written in the same atomic
//! commit as the mark), so the router skips exactly the events the mark says it applied.
//!
//! Failure: Redis errors are retried with backoff (the supervisor has just reached Redis);
//! a state this version cannot read fails the start with the key and the field, because
//! guessing would repeat or lose transitions.

use std::time::Duration;

use tracing::{info, warn};

use super::applied::{self, Applied, Mark};
use super::criteria::CompiledBucket;
use super::membership::Slot;
use super::state::decode;
use crate::backoff::Backoff;
use crate::redis_target::{RedisTarget, TargetError, refusal};

/// What Redis holds for one bucket.
#[derive(Debug, Default)]
pub struct LoadedBucket {
    /// `None`: never stored (first run of this bucket).
    pub stored_hash: Option<String>,
    pub states: Vec<(String, Slot)>,
}

impl LoadedBucket {
    pub fn criteria_changed(&self, b: &CompiledBucket) -> bool {
        self.stored_hash
            .as_ref()
            .is_some_and(|h| *h != b.criteria_hash)
    }
}

/// What Redis holds for the buckets room.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The applied mark (`None`: never stored).
    pub mark: Option<Mark>,
    /// Per enabled bucket, in definition order.
    pub buckets: Vec<LoadedBucket>,
}

impl Loaded {
    /// Where the intake starts, given the committed cursor the state belongs to.
    pub fn applied(&self, committed: Option<u64>) -> Applied {
        Applied::start(committed, self.mark.clone())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BucketLoadError {
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Waiting does not mend it (a missing ACL right …): see `redis_target::refusal`.
    #[error("reading the bucket state: {0}")]
    Refused(String),
    #[error("{key} field {field}: {reason}; fix or delete it (HDEL) and restart")]
    BadState {
        key: String,
        field: String,
        reason: String,
    },
}

/// Reads the applied mark and the meta and state of every bucket, retrying Redis errors
/// with backoff until it can.
pub async fn load_state(
    target: &RedisTarget,
    prefix: &str,
    buckets: &[CompiledBucket],
    retry: (Duration, Duration),
) -> Result<Loaded, BucketLoadError> {
    target.client()?;
    let mut backoff = Backoff::new(retry.0, retry.1);
    loop {
        let attempt = async {
            let client = target.resolve(Duration::from_secs(5)).await?;
            read_all(&client, prefix, buckets).await
        };
        match attempt.await {
            Ok(raw) => return decode_all(prefix, buckets, raw),
            Err(e) => {
                if let Some(why) = refusal(&e) {
                    metrics::counter!("jetstream_ingestor_redis_refusals_total").increment(1);
                    return Err(BucketLoadError::Refused(why));
                }
                metrics::counter!("jetstream_ingestor_redis_connect_failures_total").increment(1);
                warn!(error = %e, "cannot read the bucket state; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// The mark's text, then per bucket its stored hash and state fields.
type Raw = (Option<String>, Vec<(Option<String>, Vec<(String, String)>)>);

async fn read_all(
    client: &redis::Client,
    prefix: &str,
    buckets: &[CompiledBucket],
) -> redis::RedisResult<Raw> {
    let mut con = client.get_multiplexed_async_connection().await?;
    let mark: Option<String> = redis::cmd("HGET")
        .arg(format!("{prefix}{}", applied::KEY))
        .arg(applied::FIELD)
        .query_async(&mut con)
        .await?;
    let mut out = Vec::with_capacity(buckets.len());
    for b in buckets {
        let hash: Option<String> = redis::cmd("HGET")
            .arg(format!("{prefix}{}", b.meta_key))
            .arg("criteria_hash")
            .query_async(&mut con)
            .await?;
        let key = format!("{prefix}{}", b.state_key);
        let mut fields = Vec::new();
        let mut cursor = "0".to_owned();
        loop {
            let (next, flat): (String, Vec<String>) = redis::cmd("HSCAN")
                .arg(&key)
                .arg(&cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut con)
                .await?;
            let mut it = flat.into_iter();
            while let (Some(f), Some(v)) = (it.next(), it.next()) {
                fields.push((f, v));
            }
            if next == "0" {
                break;
            }
            cursor = next;
        }
        out.push((hash, fields));
    }
    Ok((mark, out))
}

fn decode_all(
    prefix: &str,
    buckets: &[CompiledBucket],
    (mark, raw): Raw,
) -> Result<Loaded, BucketLoadError> {
    let mark = mark
        .map(|text| {
            Mark::decode(&text).map_err(|reason| BucketLoadError::BadState {
                key: format!("{prefix}{}", applied::KEY),
                field: applied::FIELD.to_owned(),
                reason,
            })
        })
        .transpose()?;
    info!(?mark, "bucket applied mark loaded");
    let mut out = Vec::with_capacity(raw.len());
    for (b, (stored_hash, fields)) in buckets.iter().zip(raw) {
        let mut loaded = LoadedBucket {
            stored_hash,
            states: Vec::with_capacity(fields.len()),
        };
        // After a criteria change only the history and the membership are used; the kept
        // event times belong to the old conditions and are not read.
        let changed = loaded.criteria_changed(b);
        for (did, text) in fields {
            let text = if changed { history_only(&text) } else { text };
            let slot = decode(&text, b).map_err(|reason| BucketLoadError::BadState {
                key: format!("{prefix}{}", b.state_key),
                field: did.clone(),
                reason,
            })?;
            loaded.states.push((did, slot));
        }
        info!(bucket = %b.id, states = loaded.states.len(), changed, "bucket state loaded");
        out.push(loaded);
    }
    Ok(Loaded { mark, buckets: out })
}

/// The stored text without its kept event times.
fn history_only(text: &str) -> String {
    match text.rfind('|') {
        Some(at) => text[..=at].to_owned(),
        None => text.to_owned(),
    }
}
