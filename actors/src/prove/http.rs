//! A polite HTTP client for other people's servers (PDSes, the PLC directory, did:web hosts):
//! per-host concurrency limit and token bucket, `Retry-After` / `RateLimit-*` honoured,
//! per-host backoff after failures (full jitter, capped), bounded attempts, a bounded body,
//! timeouts, HTTP/2 keep-alive and a clear `User-Agent`.
//!
//! Failure fates: 429, 5xx, timeouts and connection errors are retried up to
//! `max_attempts` (the host waits out its backoff first, so a struggling host sees fewer
//! requests from every job at once); other statuses are answers and are returned at once.
//! After `breaker_failures` failed attempts in a row a host's circuit opens: no request goes
//! to it until its backoff has passed (then one probe; a success closes it), and callers get
//! [`FetchError::CircuitOpen`] at once. Identical GETs in flight are coalesced: one request,
//! every caller gets its answer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use tokio::sync::Semaphore;

use crate::backoff::full_jitter;

use super::guard::{NotPublic, PublicOnly, is_public, refused};

use super::config::ProveConfig;

/// Why a fetch gave no body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// An answer that is not a success (after retries for 429 / 5xx); `error` is the XRPC
    /// error name from a JSON body (`RecordNotFound`, `RepoDeactivated` …) when there is one.
    #[error("HTTP {code} {error:?}")]
    Status { code: u16, error: Option<String> },
    #[error("timed out")]
    Timeout,
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    #[error("bad URL {0}")]
    BadUrl(String),
    #[error("the host's circuit is open after repeated failures")]
    CircuitOpen,
    #[error("{0} is not a public address (prove.allow_private_hosts is off)")]
    PrivateAddress(String),
}

impl FetchError {
    /// A stable reason code: `http_404`, `repo_deactivated` (from an XRPC error name),
    /// `timeout`, `connect_failed`, `too_large`, `bad_url`.
    pub fn reason(&self) -> String {
        match self {
            FetchError::Status {
                error: Some(e),
                code,
            } if (400..500).contains(code) && *code != 429 => snake(e),
            FetchError::Status { code, .. } => format!("http_{code}"),
            FetchError::Timeout => "timeout".into(),
            FetchError::Connect(_) => "connect_failed".into(),
            FetchError::TooLarge(_) => "too_large".into(),
            FetchError::BadUrl(_) => "bad_url".into(),
            FetchError::CircuitOpen => "circuit_open".into(),
            FetchError::PrivateAddress(_) => "private_address".into(),
        }
    }
}

/// `RecordNotFound` → `record_not_found`.
fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .enumerate()
    {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Token bucket and backoff of one host.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// No request to this host before this instant (Retry-After, backoff, RateLimit-Reset).
    not_before: Instant,
    failures: u32,
}

struct Host {
    permits: Arc<Semaphore>,
    bucket: Mutex<Bucket>,
}

/// The per-host politeness settings.
#[derive(Debug, Clone)]
pub struct Politeness {
    pub per_host_concurrency: usize,
    pub rate: f64,
    pub burst: u32,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    pub max_body: usize,
    pub breaker_failures: u32,
    /// Refuse non-public addresses (except the trusted PLC directory).
    pub public_only: bool,
    /// `host:port` of the PLC directory.
    pub trusted_origin: Option<String>,
}

/// At most 3 redirects, and (public only) never to a non-public IP literal (names are
/// checked by the resolver).
fn redirects(public_only: bool, trusted: Option<String>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        let ip = match attempt.url().host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        let refused = public_only
            && ip.is_some_and(|ip| !is_public(ip))
            && trusted.as_deref() != Some(origin(attempt.url()).as_str());
        if refused {
            let host = attempt.url().host_str().unwrap_or("").to_owned();
            attempt.error(NotPublic(host))
        } else if attempt.previous().len() >= 3 {
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}

/// `host:port` of a URL.
fn origin(url: &reqwest::Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// The answer shared by coalesced callers.
pub type Body = Arc<Vec<u8>>;
type Pending = Shared<BoxFuture<'static, Result<Body, FetchError>>>;

/// The client. Cheap to share (`Arc`).
pub struct Polite {
    client: reqwest::Client,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    /// GETs in flight by URL, for coalescing.
    inflight: Mutex<HashMap<String, Pending>>,
    p: Politeness,
}

impl Polite {
    pub fn new(cfg: &ProveConfig) -> Result<Polite, FetchError> {
        // The configured PLC directory is trusted (its name for the resolver, its
        // `host:port` for IP literals); everything else comes from documents.
        let plc = reqwest::Url::parse(&cfg.plc_url).ok();
        let trusted: Vec<String> = plc
            .as_ref()
            .and_then(|u| u.host_str().map(str::to_owned))
            .into_iter()
            .collect();
        let trusted_origin = plc.as_ref().map(origin);
        let mut builder = reqwest::Client::builder();
        if !cfg.allow_private_hosts {
            builder = builder.dns_resolver(Arc::new(PublicOnly {
                trusted: trusted.clone(),
            }));
        }
        let client = builder
            .user_agent(cfg.user_agent())
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_while_idle(true)
            .redirect(redirects(!cfg.allow_private_hosts, trusted_origin.clone()))
            .build()
            .map_err(|e| FetchError::Connect(e.to_string()))?;
        Ok(Polite {
            client,
            hosts: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            p: Politeness {
                per_host_concurrency: cfg.per_host_concurrency,
                rate: cfg.per_host_rate,
                burst: cfg.per_host_burst,
                max_attempts: cfg.max_attempts,
                retry_base: cfg.retry_base,
                retry_cap: cfg.retry_cap,
                max_body: cfg.max_car_bytes,
                breaker_failures: cfg.breaker_failures,
                public_only: !cfg.allow_private_hosts,
                trusted_origin,
            },
        })
    }

    fn host(&self, url: &reqwest::Url) -> Arc<Host> {
        let key = origin(url);
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Host {
                    permits: Arc::new(Semaphore::new(self.p.per_host_concurrency)),
                    bucket: Mutex::new(Bucket {
                        tokens: f64::from(self.p.burst),
                        last: Instant::now(),
                        not_before: Instant::now(),
                        failures: 0,
                    }),
                })
            })
            .clone()
    }

    /// Waits for the host's backoff to pass and a token, then takes the token.
    async fn take_token(&self, host: &Host) {
        loop {
            let wait = {
                let mut b = host.bucket.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let elapsed = now.duration_since(b.last).as_secs_f64();
                b.tokens = (b.tokens + elapsed * self.p.rate).min(f64::from(self.p.burst));
                b.last = now;
                if b.not_before > now {
                    b.not_before - now
                } else if b.tokens >= 1.0 {
                    b.tokens -= 1.0;
                    return;
                } else {
                    Duration::from_secs_f64((1.0 - b.tokens) / self.p.rate)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// After a failure: back off the host (the server's delay if it gave one, else
    /// exponential with full jitter), capped.
    fn penalize(&self, host: &Host, server_delay: Option<Duration>) {
        let mut b = host.bucket.lock().unwrap_or_else(|e| e.into_inner());
        b.failures = b.failures.saturating_add(1);
        let ceiling = self
            .p
            .retry_base
            .saturating_mul(1u32 << b.failures.min(16).saturating_sub(1))
            .min(self.p.retry_cap);
        let delay = server_delay
            .unwrap_or_else(|| full_jitter(ceiling))
            .min(self.p.retry_cap);
        b.not_before = b.not_before.max(Instant::now() + delay);
    }

    fn pause_until(&self, host: &Host, delay: Duration) {
        let mut b = host.bucket.lock().unwrap_or_else(|e| e.into_inner());
        b.not_before = b
            .not_before
            .max(Instant::now() + delay.min(self.p.retry_cap));
    }

    fn healthy(&self, host: &Host) {
        host.bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failures = 0;
    }

    /// GETs `url` politely; the body of a 2xx answer. A GET of the same URL already in
    /// flight is joined instead of sent again.
    pub async fn get(self: &Arc<Self>, url: &str) -> Result<Body, FetchError> {
        let pending = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(p) = inflight.get(url) {
                metrics::counter!("jetstream_ingestor_prove_requests_coalesced_total").increment(1);
                p.clone()
            } else {
                let me = self.clone();
                let key = url.to_owned();
                let p = async move {
                    let r = me.fetch(&key).await.map(Arc::new);
                    me.inflight
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&key);
                    r
                }
                .boxed()
                .shared();
                inflight.insert(url.to_owned(), p.clone());
                p
            }
        };
        pending.await
    }

    /// True while the host's circuit is open: enough failures in a row, backoff not over.
    fn circuit_open(&self, host: &Host) -> bool {
        let b = host.bucket.lock().unwrap_or_else(|e| e.into_inner());
        b.failures >= self.p.breaker_failures && b.not_before > Instant::now()
    }

    /// A URL naming a non-public IP literal (host names are checked by the resolver).
    fn refused_literal(&self, url: &reqwest::Url) -> bool {
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return false,
        };
        self.p.public_only
            && !is_public(ip)
            && self.p.trusted_origin.as_deref() != Some(origin(url).as_str())
    }

    async fn fetch(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| FetchError::BadUrl(url.to_owned()))?;
        if self.refused_literal(&parsed) {
            return Err(FetchError::PrivateAddress(
                parsed.host_str().unwrap_or("").to_owned(),
            ));
        }
        let host = self.host(&parsed);
        let mut last = FetchError::Timeout;
        for attempt in 1..=self.p.max_attempts {
            if self.circuit_open(&host) {
                metrics::counter!("jetstream_ingestor_prove_requests_total", "outcome" => "circuit_open").increment(1);
                return Err(FetchError::CircuitOpen);
            }
            let outcome = {
                let Ok(_permit) = host.permits.clone().acquire_owned().await else {
                    return Err(FetchError::Connect("client closed".into()));
                };
                self.take_token(&host).await;
                self.once(&host, parsed.clone()).await
            };
            match outcome {
                Attempt::Done(r) => {
                    metrics::counter!("jetstream_ingestor_prove_requests_total", "outcome" => if r.is_ok() { "ok" } else { "answer" }).increment(1);
                    return r;
                }
                Attempt::Retry(e, server_delay) => {
                    metrics::counter!("jetstream_ingestor_prove_requests_total", "outcome" => "retry").increment(1);
                    tracing::debug!(%e, attempt, url, "request failed; retrying after the host's backoff");
                    self.penalize(&host, server_delay);
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn once(&self, host: &Host, url: reqwest::Url) -> Attempt {
        let resp = match self.client.get(url).send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Attempt::Retry(FetchError::Timeout, None),
            Err(e) if refused(&e) => {
                let host = e.url().and_then(|u| u.host_str()).unwrap_or("").to_owned();
                return Attempt::Done(Err(FetchError::PrivateAddress(host)));
            }
            Err(e) => return Attempt::Retry(FetchError::Connect(e.to_string()), None),
        };
        let status = resp.status().as_u16();
        let headers = resp.headers();
        let retry_after = header_delay(headers, "retry-after")
            .or_else(|| header_delay(headers, "ratelimit-reset").filter(|_| status == 429));
        if header_u64(headers, "ratelimit-remaining") == Some(0)
            && let Some(reset) = header_delay(headers, "ratelimit-reset")
        {
            self.pause_until(host, reset);
        }
        if status == 429 || status >= 500 {
            return Attempt::Retry(
                FetchError::Status {
                    code: status,
                    error: None,
                },
                retry_after,
            );
        }
        let body = match read_body(resp, self.p.max_body).await {
            Ok(b) => b,
            Err(e @ FetchError::TooLarge(_)) => return Attempt::Done(Err(e)),
            Err(e) => return Attempt::Retry(e, None),
        };
        if (200..300).contains(&status) {
            self.healthy(host);
            return Attempt::Done(Ok(body));
        }
        let error = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned));
        self.healthy(host);
        Attempt::Done(Err(FetchError::Status {
            code: status,
            error,
        }))
    }
}

enum Attempt {
    Done(Result<Vec<u8>, FetchError>),
    Retry(FetchError, Option<Duration>),
}

fn header_u64(headers: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// A delay header: seconds, or (RateLimit-Reset as sent by Bluesky's PDS) a unix time.
fn header_delay(headers: &reqwest::header::HeaderMap, name: &str) -> Option<Duration> {
    let v = header_u64(headers, name)?;
    if v > 1_000_000_000 {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Some(Duration::from_secs(v.saturating_sub(now)))
    } else {
        Some(Duration::from_secs(v))
    }
}

async fn read_body(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, FetchError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(FetchError::TooLarge(max));
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max {
                    return Err(FetchError::TooLarge(max));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) if e.is_timeout() => return Err(FetchError::Timeout),
            Err(e) => return Err(FetchError::Connect(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes() {
        let e = FetchError::Status {
            code: 400,
            error: Some("RepoDeactivated".into()),
        };
        assert_eq!(e.reason(), "repo_deactivated");
        let e = FetchError::Status {
            code: 404,
            error: Some("RecordNotFound".into()),
        };
        assert_eq!(e.reason(), "record_not_found");
        let e = FetchError::Status {
            code: 500,
            error: Some("InternalServerError".into()),
        };
        assert_eq!(e.reason(), "http_500");
        assert_eq!(FetchError::Timeout.reason(), "timeout");
    }
}
