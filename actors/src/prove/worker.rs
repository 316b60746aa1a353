//! The `prove` worker: reads jobs with XREADGROUP (one consumer group, any number of
//! workers), proves each against its author's PDS, and writes the verdict to
//! `<prefix>proven` (and an `invalid` one also to `<prefix>dead` as `pds_proof_invalid`)
//! together with the XACK in one atomic Lua script.
//!
//! Exactly once: the script writes only if its XACK acknowledged the entry (returned 1). A
//! worker that dies before its script leaves the job pending; another worker claims it
//! (XAUTOCLAIM after `claim_idle`) and proves it again; if both finish, the second XACK
//! returns 0 and the second verdict is not written. Redis errors leave the job pending too
//! (claimed again later): nothing is lost and nothing is written twice.
//!
//! Talks to: Redis (three connections: blocking reads, commits, the identity watcher), the
//! PLC directory / did:web hosts and PDSes through `http::Polite`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt as _;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult, Value};
use sha2::{Digest, Sha256};

use super::car::CarLimits;
use super::config::ProveConfig;
use super::entry::{Origin, dead_letter_fields, proven_fields};
use super::http::Polite;
use super::resolver::{CacheStats, Resolver};
use super::streams::{Entry, Group, claim_stuck, read_new, touch, watch_identities};
use super::verify::{Claim, Proof, Verdict, prove};

/// The commit: XACK, then (only if it acknowledged) the verdict and the dead letter.
/// KEYS: job stream, proven, dead. ARGV: group, id, n (proven args), proven field/values…,
/// dead field/values (none when valid).
const COMMIT: &str = r#"
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
local n = tonumber(ARGV[3])
local proven = {}
for i = 1, n do proven[i] = ARGV[3 + i] end
redis.call('XADD', KEYS[2], '*', unpack(proven))
if #ARGV > 3 + n then
  local dead = {}
  for i = 4 + n, #ARGV do dead[#dead + 1] = ARGV[i] end
  redis.call('XADD', KEYS[3], '*', unpack(dead))
end
return 1
"#;

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("http client: {0}")]
    Http(String),
}

/// What one worker did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WorkerStats {
    /// Verdicts written, by verdict.
    pub verdicts: HashMap<String, u64>,
    /// Verdicts not written because another worker had acknowledged the job first.
    pub duplicates_avoided: u64,
    /// Jobs acknowledged without a verdict (collection not proven, sampled out).
    pub skipped: u64,
    /// Jobs taken over from other consumers (XAUTOCLAIM).
    pub claimed: u64,
    /// Signatures that failed with a cached key and were judged again with a fresh one.
    pub stale_key_retries: u64,
    /// The DID cache's counters.
    pub did_cache: CacheStats,
}

/// The worker's fixed parts, shared by the jobs in flight.
struct Shared {
    cfg: ProveConfig,
    prefix: String,
    consumer: String,
    http: Arc<Polite>,
    resolver: Arc<Resolver>,
    commit: redis::Script,
    limits: CarLimits,
    stale_key_retries: AtomicU64,
}

/// What handling one job came to.
enum Outcome {
    Written(&'static str),
    Duplicate,
    Skipped,
    /// A Redis error: the job stays pending and is claimed again later.
    Failed,
}

/// A connected worker, ready to run.
pub struct Worker {
    shared: Arc<Shared>,
    reads: MultiplexedConnection,
    commits: MultiplexedConnection,
    identities: Option<(MultiplexedConnection, String)>,
}

impl Worker {
    /// Connects to Redis and creates the consumer group on every stream (from `0`, so jobs
    /// already queued are proven).
    pub async fn connect(
        cfg: ProveConfig,
        prefix: &str,
        redis: &crate::redis_target::RedisTarget,
    ) -> Result<Worker, ProveError> {
        let http = Arc::new(Polite::new(&cfg).map_err(|e| ProveError::Http(e.to_string()))?);
        let resolver = Arc::new(Resolver::new(
            http.clone(),
            &cfg.plc_url,
            &cfg.did_web_scheme,
            cfg.did_cache_size,
            cfg.did_cache_ttl,
        ));
        // Through the target: TLS files, Sentinel and Cluster as for the ingestor.
        let client = redis
            .resolve(Duration::from_secs(5))
            .await
            .map_err(redis::RedisError::from)?;
        let conf = AsyncConnectionConfig::new()
            .set_response_timeout(Some(cfg.block + Duration::from_secs(5)))
            .set_connection_timeout(Some(Duration::from_secs(5)));
        let mut reads = client
            .get_multiplexed_async_connection_with_config(&conf)
            .await?;
        let commits = client
            .get_multiplexed_async_connection_with_config(&conf)
            .await?;
        for s in &cfg.streams {
            let created: RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(format!("{prefix}{s}"))
                .arg(&cfg.group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut reads)
                .await;
            if let Err(e) = created
                && e.code() != Some("BUSYGROUP")
            {
                return Err(e.into());
            }
        }
        let identities = if cfg.identity_stream.is_empty() {
            None
        } else {
            let con = client
                .get_multiplexed_async_connection_with_config(&conf)
                .await?;
            // Start after the newest entry now: the cache is empty, older events are moot.
            let newest: Vec<(String, Value)> = redis::cmd("XREVRANGE")
                .arg(format!("{prefix}{}", cfg.identity_stream))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut reads)
                .await?;
            let from = newest
                .into_iter()
                .next()
                .map_or_else(|| "0-0".to_owned(), |(id, _)| id);
            Some((con, from))
        };
        let shared = Arc::new(Shared {
            consumer: cfg.consumer_name(),
            limits: CarLimits {
                max_bytes: cfg.max_car_bytes,
                ..CarLimits::default()
            },
            cfg,
            prefix: prefix.to_owned(),
            http,
            resolver,
            commit: redis::Script::new(COMMIT),
            stale_key_retries: AtomicU64::new(0),
        });
        Ok(Worker {
            shared,
            reads,
            commits,
            identities,
        })
    }

    /// The DID resolver (its cache counters show invalidations).
    pub fn resolver(&self) -> Arc<Resolver> {
        self.shared.resolver.clone()
    }

    /// Runs until `shutdown` resolves; jobs in hand are finished first.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<WorkerStats, ProveError> {
        let shared = self.shared.clone();
        tracing::info!(consumer = %shared.consumer, group = %shared.cfg.group, streams = ?shared.cfg.streams, "prove worker started");
        let watcher = self.identities.take().map(|(con, from)| {
            tokio::spawn(watch_identities(
                con,
                format!("{}{}", shared.prefix, shared.cfg.identity_stream),
                from,
                shared.cfg.block,
                shared.resolver.clone(),
            ))
        });
        let result = main_loop(&shared, &mut self.reads, self.commits.clone(), shutdown).await;
        if let Some(w) = watcher {
            w.abort();
        }
        result.map(|mut stats| {
            stats.did_cache = shared.resolver.stats();
            stats.stale_key_retries = shared.stale_key_retries.load(Ordering::Relaxed);
            stats
        })
    }
}

/// Connects and runs one worker until `shutdown` resolves.
pub async fn run(
    cfg: ProveConfig,
    prefix: &str,
    redis: &crate::redis_target::RedisTarget,
    shutdown: impl Future<Output = ()>,
) -> Result<WorkerStats, ProveError> {
    Worker::connect(cfg, prefix, redis)
        .await?
        .run(shutdown)
        .await
}

async fn main_loop(
    shared: &Arc<Shared>,
    reads: &mut MultiplexedConnection,
    commits: MultiplexedConnection,
    shutdown: impl Future<Output = ()>,
) -> Result<WorkerStats, ProveError> {
    let cfg = &shared.cfg;
    let keys: Vec<String> = cfg
        .streams
        .iter()
        .map(|s| format!("{}{s}", shared.prefix))
        .collect();
    let group = Group {
        group: &cfg.group,
        consumer: &shared.consumer,
        keys: &keys,
    };
    let mut stop = std::pin::pin!(shutdown.fuse());
    let mut stopping = false;
    let mut stats = WorkerStats::default();
    let mut inflight = FuturesUnordered::new();
    // Jobs in flight here, with when they were taken (to keep long ones from being claimed).
    let mut in_hand: HashMap<(String, String), tokio::time::Instant> = HashMap::new();
    let mut claim_due = false;
    let claim_every = (cfg.claim_idle / 2).max(Duration::from_millis(200));
    let mut next_claim = tokio::time::Instant::now();
    let mut read_errors = 0u32;

    loop {
        if !stopping && (&mut stop).now_or_never().is_some() {
            stopping = true;
            tracing::info!(in_flight = inflight.len(), "prove worker stopping");
        }
        if stopping && inflight.is_empty() {
            break;
        }
        let now = tokio::time::Instant::now();
        if now >= next_claim {
            next_claim = now + claim_every;
            claim_due = true;
            // Jobs held here for half the claim time (a slow PDS, long Retry-After) are
            // claimed again by ourselves, which resets their idle time: live workers keep
            // their jobs, only dead ones lose them.
            let long: Vec<&(String, String)> = in_hand
                .iter()
                .filter(|(_, t)| now.duration_since(**t) >= claim_every)
                .map(|(k, _)| k)
                .collect();
            if let Err(e) = touch(&group, reads, &long).await {
                tracing::warn!(%e, "prove: keeping long jobs claimed failed");
            }
        }
        let room = cfg.concurrency.saturating_sub(inflight.len());
        let mut got = 0;
        if !stopping && room > 0 {
            let mut batch: Vec<(String, Entry)> = Vec::new();
            let res = if claim_due {
                claim_due = false;
                claim_stuck(&group, reads, room.min(cfg.batch), cfg.claim_idle).await
            } else {
                Ok(Vec::new())
            };
            let res = match res {
                Ok(claimed) if !claimed.is_empty() => {
                    stats.claimed += claimed.len() as u64;
                    Ok(claimed)
                }
                Ok(_) => {
                    let block = inflight.is_empty().then_some(cfg.block);
                    read_new(&group, reads, room.min(cfg.batch), block).await
                }
                Err(e) => Err(e),
            };
            match res {
                Ok(entries) => {
                    read_errors = 0;
                    batch.extend(entries);
                }
                Err(e) => {
                    read_errors += 1;
                    metrics::counter!("jetstream_ingestor_prove_read_errors_total").increment(1);
                    tracing::warn!(%e, read_errors, "prove: reading jobs failed; retrying");
                    let delay = Duration::from_millis(100 * u64::from(read_errors.min(50)));
                    tokio::select! {
                        _ = &mut stop => { stopping = true; }
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
            for (stream, entry) in batch {
                let key = (stream.clone(), entry.0.clone());
                if in_hand.contains_key(&key) {
                    continue;
                }
                in_hand.insert(key, tokio::time::Instant::now());
                got += 1;
                let shared = shared.clone();
                let con = commits.clone();
                inflight.push(async move {
                    let key = (stream.clone(), entry.0.clone());
                    (key, handle(&shared, con, &stream, entry).await)
                });
            }
            if got > 0 && inflight.len() < cfg.concurrency {
                continue;
            }
        }
        if inflight.is_empty() {
            continue;
        }
        let done = tokio::select! {
            done = inflight.next() => done,
            _ = &mut stop, if !stopping => { stopping = true; None }
            // The claim tick comes round even while every job in hand is slow.
            _ = tokio::time::sleep_until(next_claim) => None,
        };
        if let Some((key, outcome)) = done {
            in_hand.remove(&key);
            match outcome {
                Outcome::Written(v) => *stats.verdicts.entry(v.to_owned()).or_default() += 1,
                Outcome::Duplicate => stats.duplicates_avoided += 1,
                Outcome::Skipped => stats.skipped += 1,
                Outcome::Failed => {}
            }
        }
    }
    tracing::info!(?stats, "prove worker stopped");
    Ok(stats)
}

/// Deterministic sampling on `idem`: the same jobs are proven whichever worker reads them.
fn sampled(idem: &str, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    let h = Sha256::digest(idem.as_bytes());
    let x = u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
    (x as f64 / u64::MAX as f64) < rate
}

async fn handle(
    shared: &Shared,
    mut con: MultiplexedConnection,
    stream: &str,
    entry: Entry,
) -> Outcome {
    let (id, fields) = entry;
    let get = |k: &str| {
        fields
            .iter()
            .find(|(f, _)| f == k)
            .map_or("", |(_, v)| v.as_str())
    };
    let cfg = &shared.cfg;
    let in_scope = (cfg.collections.is_empty()
        || cfg.collections.iter().any(|c| c == get("collection")))
        && sampled(get("idem"), cfg.sample_rate);
    if !in_scope {
        let acked: RedisResult<i64> = redis::cmd("XACK")
            .arg(stream)
            .arg(&cfg.group)
            .arg(&id)
            .query_async(&mut con)
            .await;
        metrics::counter!("jetstream_ingestor_prove_skipped_total").increment(1);
        return if acked.is_ok() {
            Outcome::Skipped
        } else {
            Outcome::Failed
        };
    }
    let claim = Claim {
        did: get("did"),
        collection: get("collection"),
        rkey: get("rkey"),
        rev: get("rev"),
        operation: get("operation"),
        cid: get("cid"),
    };
    let (proof, pds) = prove_job(shared, &claim).await;
    let verdict = proof.verdict.as_str();
    metrics::counter!("jetstream_ingestor_prove_verdicts_total", "verdict" => verdict).increment(1);

    let checked_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let origin = Origin {
        job_stream: stream.strip_prefix(&shared.prefix).unwrap_or(stream),
        job_id: &id,
        pds: &pds,
        checked_at,
    };
    let proven = proven_fields(&fields, origin, &proof);
    let mut script = shared.commit.prepare_invoke();
    script
        .key(stream)
        .key(format!("{}proven", shared.prefix))
        .key(format!("{}dead", shared.prefix))
        .arg(&cfg.group)
        .arg(&id)
        .arg(proven.len() * 2);
    for (k, v) in &proven {
        script.arg(k).arg(v);
    }
    for (k, v) in dead_letter_fields(&fields, origin, &proof)
        .into_iter()
        .flatten()
    {
        script.arg(k).arg(v);
    }
    match script.invoke_async::<i64>(&mut con).await {
        Ok(1) => Outcome::Written(verdict),
        Ok(_) => {
            metrics::counter!("jetstream_ingestor_prove_duplicates_avoided_total").increment(1);
            Outcome::Duplicate
        }
        Err(e) => {
            metrics::counter!("jetstream_ingestor_prove_commit_errors_total").increment(1);
            tracing::warn!(%e, id, "prove: committing the verdict failed; the job stays pending");
            Outcome::Failed
        }
    }
}

/// Resolves, fetches and verifies; the proof and the PDS asked.
async fn prove_job(shared: &Shared, claim: &Claim<'_>) -> (Proof, String) {
    let unavailable = |reason: String| Proof {
        verdict: Verdict::Unavailable(reason),
        rev: None,
        commit: None,
        record: None,
    };
    if claim.did.is_empty()
        || claim.collection.is_empty()
        || claim.rkey.is_empty()
        || claim.rev.is_empty()
        || !["create", "update", "delete"].contains(&claim.operation)
    {
        return (unavailable("job_malformed".into()), String::new());
    }
    let (mut identity, mut cached) = match shared.resolver.resolve(claim.did, false).await {
        Ok(r) => r,
        Err(e) => return (unavailable(e.reason()), String::new()),
    };
    loop {
        let url = match reqwest::Url::parse_with_params(
            &format!("{}/xrpc/com.atproto.sync.getRecord", identity.pds),
            [
                ("did", claim.did),
                ("collection", claim.collection),
                ("rkey", claim.rkey),
            ],
        ) {
            Ok(u) => u,
            Err(_) => return (unavailable("pds_bad_url".into()), identity.pds.clone()),
        };
        let car = match shared.http.get(url.as_str()).await {
            Ok(car) => car,
            Err(e) => {
                // A PDS that no longer hosts the account may mean it moved: one fresh try.
                if cached
                    && let Ok((fresh, _)) = shared.resolver.resolve(claim.did, true).await
                    && fresh.pds != identity.pds
                {
                    identity = fresh;
                    cached = false;
                    continue;
                }
                return (
                    unavailable(format!("pds_{}", e.reason())),
                    identity.pds.clone(),
                );
            }
        };
        let proof = prove(claim, &car, &identity.key, shared.limits);
        // A signature failing with a cached key: the key may have rotated since. Re-resolve
        // once, fresh, and judge with the current key.
        if cached
            && matches!(&proof.verdict, Verdict::Invalid(r) if r.starts_with("signature_"))
            && let Ok((fresh, _)) = shared.resolver.resolve(claim.did, true).await
            && (fresh.key != identity.key || fresh.pds != identity.pds)
        {
            shared.stale_key_retries.fetch_add(1, Ordering::Relaxed);
            identity = fresh;
            cached = false;
            continue;
        }
        return (proof, identity.pds.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_deterministic_and_near_the_rate() {
        let n = 10_000;
        let hits = (0..n)
            .filter(|i| sampled(&format!("did:plc:x|c|{i}|r"), 0.25))
            .count();
        assert!((2_200..2_800).contains(&hits), "{hits}");
        assert!(sampled("anything", 1.0));
        assert!(!sampled("anything", 0.0));
        assert_eq!(sampled("a|b", 0.5), sampled("a|b", 0.5));
    }
}
