//! Typed settings of the Redis writer (`[redis]` in the config file).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::redis_target::{
    ClusterSpec, Discovery, RedisTarget, SentinelSpec, TargetError, TlsFiles,
};

/// `[redis]`: where jobs go and how commits are retried.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterConfig {
    /// `redis://[user:pass@]host:port[/db]` (or `rediss://`).
    pub url: String,
    /// `rediss://` only: a PEM bundle of the CAs to trust instead of the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// `rediss://` only: a PEM client certificate (chain), for servers that require one;
    /// goes with `tls_client_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_cert: Option<PathBuf>,
    /// The client certificate's PEM private key (read when connecting, never printed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_key: Option<PathBuf>,
    /// Redis Sentinel: the name of the master the sentinels watch ("" = no Sentinel). The
    /// master's address comes from the sentinels; `url` then gives only the scheme,
    /// credentials and database.
    pub sentinel_master: String,
    /// The sentinels to ask, `redis://host:port` each (or `rediss://`).
    pub sentinels: Vec<String>,
    /// Redis Cluster: `url` is one node; every key of `key_prefix` must share its hash tag
    /// (`{jsi}:`), and the master serving that slot is found and followed.
    pub cluster: bool,
    /// More cluster nodes to ask (`host:port`), in case the URL's is down.
    pub cluster_nodes: Vec<String>,
    /// Prefix of every key we own (`<prefix>records`, `<prefix>cursor`, …).
    pub key_prefix: String,
    /// How streams are trimmed without deleting what consumer groups still need.
    pub retention: RetentionConfig,
    /// Batches in flight at once on the connection (probes and commits). Each commit checks
    /// inside its own transaction that its predecessor landed and undoes itself otherwise,
    /// so order and the cursor rule hold; 1 = strictly one batch at a time.
    pub pipeline_depth: usize,
    /// How long an event identity is remembered to skip replays; must exceed the reader's
    /// rewind (checked at start).
    #[serde(with = "crate::model::duration")]
    pub dedupe_window: Duration,
    #[serde(with = "crate::model::duration")]
    pub connect_timeout: Duration,
    /// A command without an answer for this long counts as failed (and is retried).
    #[serde(with = "crate::model::duration")]
    pub response_timeout: Duration,
    /// First retry delay ceiling of a failed commit (full jitter), doubled per failure …
    #[serde(with = "crate::model::duration")]
    pub retry_min: Duration,
    /// … up to this cap. Commits are retried forever, never skipped.
    #[serde(with = "crate::model::duration")]
    pub retry_max: Duration,
    /// A batch counts as committed (cursor acknowledged to the reader, credit freed) only
    /// once `WAIT` confirms this many replicas have it; 0 = as soon as the master has it.
    /// With Sentinel, 1 keeps a failover from losing acknowledged batches.
    pub wait_replicas: u32,
    /// How long one `WAIT` blocks before it is logged as short and asked again.
    #[serde(with = "crate::model::duration")]
    pub wait_timeout: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            url: "redis://127.0.0.1:6379".to_owned(),
            tls_ca_file: None,
            tls_client_cert: None,
            tls_client_key: None,
            sentinel_master: String::new(),
            sentinels: Vec::new(),
            cluster: false,
            cluster_nodes: Vec::new(),
            key_prefix: "jsi:".to_owned(),
            retention: RetentionConfig::default(),
            pipeline_depth: 3,
            dedupe_window: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(10),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
        }
    }
}

/// `[redis.retention]`: upper bounds the operator wants, applied periodically by the
/// retention keeper, never past an entry a protected consumer group still needs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Keep at most about this many entries per job stream (0 = no length bound).
    pub max_len: u64,
    /// Trim entries older than this (by entry id time); "" = no age bound.
    #[serde(with = "crate::model::duration::option")]
    pub max_age: Option<Duration>,
    /// The same length bound for the dead-letter stream.
    pub dead_max_len: u64,
    /// How often streams are checked and trimmed.
    #[serde(with = "crate::model::duration")]
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_len: 1_000_000,
            max_age: None,
            dead_max_len: 100_000,
            interval: Duration::from_secs(10),
        }
    }
}

/// `[[consumers]]`: a consumer group the ingestor creates at start (if missing) and protects
/// from trimming unless `disposable`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerGroup {
    /// Stream name after the key prefix (`records`, `identity`, a route's stream …).
    pub stream: String,
    pub group: String,
    /// Where a newly created group starts: `0` (every entry still in the stream) or `$`.
    #[serde(default = "default_start_id")]
    pub start_id: String,
    /// Retention may trim entries this group has not read.
    #[serde(default)]
    pub disposable: bool,
}

fn default_start_id() -> String {
    "0".to_owned()
}

#[derive(Debug, thiserror::Error)]
pub enum WriterConfigError {
    /// The URL or a TLS file (the message names the key).
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("redis.cluster and redis.sentinel_master exclude each other")]
    ClusterAndSentinel,
    #[error("redis.key_prefix: must not be empty")]
    EmptyPrefix,
    #[error("redis.retry_max must be at least redis.retry_min")]
    RetryOrder,
    #[error("redis.pipeline_depth must be 1..=16, got {0}")]
    PipelineDepth(usize),
    #[error("redis.retention.interval must be at least 100ms")]
    RetentionInterval,
    #[error("consumers[{index}]: {message}")]
    Consumer { index: usize, message: String },
}

/// Checks declared consumer groups (names, start ids, duplicates).
pub fn validate_consumers(consumers: &[ConsumerGroup]) -> Result<(), WriterConfigError> {
    for (index, c) in consumers.iter().enumerate() {
        let bad = |message: String| Err(WriterConfigError::Consumer { index, message });
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 128
                && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        };
        if !name_ok(&c.stream) {
            return bad(format!(
                "stream {:?} must be a non-empty name without spaces",
                c.stream
            ));
        }
        if !name_ok(&c.group) {
            return bad(format!(
                "group {:?} must be a non-empty name without spaces",
                c.group
            ));
        }
        let start_ok = c.start_id == "$" || super::trim::StreamId::parse(&c.start_id).is_some();
        if !start_ok {
            return bad(format!(
                "start_id {:?} must be \"0\", \"$\" or an entry id like \"1700000000000-0\"",
                c.start_id
            ));
        }
        if consumers[..index]
            .iter()
            .any(|o| o.stream == c.stream && o.group == c.group)
        {
            return bad(format!(
                "group {:?} on stream {:?} is declared twice",
                c.group, c.stream
            ));
        }
    }
    Ok(())
}

impl WriterConfig {
    /// Where Redis is and how to reach it (URL and TLS files).
    pub fn target(&self) -> RedisTarget {
        RedisTarget::new(
            self.url.clone(),
            TlsFiles {
                ca_file: self.tls_ca_file.clone(),
                client_cert: self.tls_client_cert.clone(),
                client_key: self.tls_client_key.clone(),
            },
        )
        .with_discovery(if self.cluster {
            Some(Discovery::Cluster(ClusterSpec {
                slot_key: self.key_prefix.clone(),
                seeds: self.cluster_nodes.clone(),
            }))
        } else if !self.sentinel_master.is_empty() || !self.sentinels.is_empty() {
            Some(Discovery::Sentinel(SentinelSpec {
                master: self.sentinel_master.clone(),
                sentinels: self.sentinels.clone(),
            }))
        } else {
            None
        })
    }

    pub fn validate(&self) -> Result<(), WriterConfigError> {
        // Reads the TLS files: a missing or malformed one stops the start, naming it.
        let target = self.target();
        target.client()?;
        target.check_discovery()?;
        if self.cluster && !self.sentinel_master.is_empty() {
            return Err(WriterConfigError::ClusterAndSentinel);
        }
        if self.key_prefix.is_empty() {
            return Err(WriterConfigError::EmptyPrefix);
        }
        if self.retry_max < self.retry_min {
            return Err(WriterConfigError::RetryOrder);
        }
        if self.pipeline_depth == 0 || self.pipeline_depth > 16 {
            return Err(WriterConfigError::PipelineDepth(self.pipeline_depth));
        }
        if self.retention.interval < Duration::from_millis(100) {
            return Err(WriterConfigError::RetentionInterval);
        }
        Ok(())
    }
}
