//! Typed settings of the `prove` workers (`[prove]` in the config file).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[prove]`: workers that check each job against its author's PDS (docs/prove.md).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProveConfig {
    /// The PLC directory `did:plc` documents are fetched from (`GET {plc_url}/{did}`).
    pub plc_url: String,
    /// `https`; `http` only for tests against a loopback fake of `did:web` hosts.
    pub did_web_scheme: String,
    /// Job streams to prove (names after `redis.key_prefix`).
    pub streams: Vec<String>,
    /// The consumer group every worker joins (one group: each job proven by one worker).
    pub group: String,
    /// This worker's consumer name; "" = `<hostname>-<pid>`. Unique per worker.
    pub consumer: String,
    /// The identity stream whose events invalidate cached DID documents ("" = none).
    pub identity_stream: String,
    /// Jobs in flight per worker.
    pub concurrency: usize,
    /// Entries per XREADGROUP / XAUTOCLAIM.
    pub batch: usize,
    /// How long one XREADGROUP waits for new jobs.
    #[serde(with = "crate::model::duration")]
    pub block: Duration,
    /// Jobs pending this long on another worker (a dead one) are claimed (XAUTOCLAIM).
    #[serde(with = "crate::model::duration")]
    pub claim_idle: Duration,
    /// Collections to prove (empty = all); other jobs are acknowledged without a verdict.
    pub collections: Vec<String>,
    /// Share of jobs proven, 0.0..=1.0, chosen by a hash of `idem` (the same jobs on every
    /// worker); the others are acknowledged without a verdict.
    pub sample_rate: f64,
    /// Requests in flight per PDS / PLC host.
    pub per_host_concurrency: usize,
    /// Requests per second per host (token bucket) …
    pub per_host_rate: f64,
    /// … with this burst.
    pub per_host_burst: u32,
    /// Whole-request timeout (connect, headers, body).
    #[serde(with = "crate::model::duration")]
    pub request_timeout: Duration,
    #[serde(with = "crate::model::duration")]
    pub connect_timeout: Duration,
    /// Attempts per request (429, 5xx, timeouts, connection errors are retried) before the
    /// verdict is `unavailable`.
    pub max_attempts: u32,
    /// First retry delay (doubling, full jitter, capped by `retry_cap`); a `Retry-After`
    /// longer than this is honoured up to `retry_cap`.
    #[serde(with = "crate::model::duration")]
    pub retry_base: Duration,
    #[serde(with = "crate::model::duration")]
    pub retry_cap: Duration,
    /// Failed attempts in a row after which a host gets no requests until its backoff has
    /// passed (its jobs are `unavailable`, `pds_circuit_open`, meanwhile).
    pub breaker_failures: u32,
    /// Send requests to loopback, private and other non-public addresses too. Off: PDS
    /// endpoints and did:web hosts (from documents anyone can write) must be public, else the
    /// job is `unavailable` (`pds_private_address`); the configured PLC directory is trusted.
    pub allow_private_hosts: bool,
    /// Largest getRecord answer read (bytes).
    pub max_car_bytes: usize,
    /// DID documents cached, at most …
    pub did_cache_size: usize,
    /// … each for at most this long.
    #[serde(with = "crate::model::duration")]
    pub did_cache_ttl: Duration,
    /// `User-Agent` of every request; "" = `jetstream-ingestor/<version> (prove)`.
    pub user_agent: String,
}

impl Default for ProveConfig {
    fn default() -> Self {
        ProveConfig {
            plc_url: "https://plc.directory".into(),
            did_web_scheme: "https".into(),
            streams: vec!["records".into()],
            group: "prove".into(),
            consumer: String::new(),
            identity_stream: "identity".into(),
            concurrency: 32,
            batch: 64,
            block: Duration::from_secs(2),
            claim_idle: Duration::from_secs(60),
            collections: Vec::new(),
            sample_rate: 1.0,
            per_host_concurrency: 4,
            per_host_rate: 20.0,
            per_host_burst: 40,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_attempts: 4,
            retry_base: Duration::from_millis(500),
            retry_cap: Duration::from_secs(30),
            breaker_failures: 8,
            allow_private_hosts: false,
            max_car_bytes: 2 * 1024 * 1024,
            did_cache_size: 100_000,
            did_cache_ttl: Duration::from_secs(3600),
            user_agent: String::new(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProveConfigError {
    #[error("prove.{0} must be positive")]
    Zero(&'static str),
    #[error("prove.sample_rate must be within 0.0..=1.0")]
    SampleRate,
    #[error("prove.plc_url must be an http(s) URL (got {0:?})")]
    PlcUrl(String),
    #[error("prove.did_web_scheme must be https or http")]
    WebScheme,
    #[error("prove.streams must name at least one stream, and prove.group a group")]
    Streams,
}

impl ProveConfig {
    pub fn validate(&self) -> Result<(), ProveConfigError> {
        for (name, v) in [
            ("concurrency", self.concurrency),
            ("batch", self.batch),
            ("per_host_concurrency", self.per_host_concurrency),
            ("per_host_burst", self.per_host_burst as usize),
            ("max_attempts", self.max_attempts as usize),
            ("breaker_failures", self.breaker_failures as usize),
            ("max_car_bytes", self.max_car_bytes),
            ("did_cache_size", self.did_cache_size),
        ] {
            if v == 0 {
                return Err(ProveConfigError::Zero(name));
            }
        }
        if self.per_host_rate.is_nan() || self.per_host_rate <= 0.0 {
            return Err(ProveConfigError::Zero("per_host_rate"));
        }
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(ProveConfigError::SampleRate);
        }
        if !(self.plc_url.starts_with("https://") || self.plc_url.starts_with("http://")) {
            return Err(ProveConfigError::PlcUrl(self.plc_url.clone()));
        }
        if !["https", "http"].contains(&self.did_web_scheme.as_str()) {
            return Err(ProveConfigError::WebScheme);
        }
        if self.streams.is_empty()
            || self.streams.iter().any(String::is_empty)
            || self.group.is_empty()
        {
            return Err(ProveConfigError::Streams);
        }
        Ok(())
    }

    /// The consumer name: as configured, or `<hostname>-<pid>`.
    pub fn consumer_name(&self) -> String {
        if !self.consumer.is_empty() {
            return self.consumer.clone();
        }
        format!("{}-{}", crate::model::host::host_name(), std::process::id())
    }

    pub fn user_agent(&self) -> String {
        if self.user_agent.is_empty() {
            format!("jetstream-ingestor/{} (prove)", env!("CARGO_PKG_VERSION"))
        } else {
            self.user_agent.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_limits_are_checked() {
        assert_eq!(ProveConfig::default().validate(), Ok(()));
        let bad = ProveConfig {
            sample_rate: 1.5,
            ..ProveConfig::default()
        };
        assert_eq!(bad.validate(), Err(ProveConfigError::SampleRate));
        let bad = ProveConfig {
            per_host_concurrency: 0,
            ..ProveConfig::default()
        };
        assert_eq!(
            bad.validate(),
            Err(ProveConfigError::Zero("per_host_concurrency"))
        );
        let bad = ProveConfig {
            plc_url: "ftp://x".into(),
            ..ProveConfig::default()
        };
        assert!(matches!(bad.validate(), Err(ProveConfigError::PlcUrl(_))));
        assert!(
            ProveConfig::default()
                .user_agent()
                .starts_with("jetstream-ingestor/")
        );
    }
}
