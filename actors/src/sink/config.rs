//! Typed settings of the Redis writer (`[redis]` in the config file).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[redis]`: where jobs go and how commits are retried.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterConfig {
    /// `redis://[user:pass@]host:port[/db]` (or `rediss://`).
    pub url: String,
    /// Prefix of every key we own (`<prefix>records`, `<prefix>cursor`, …).
    pub key_prefix: String,
    /// `XADD … MAXLEN ~` for the records and identity streams (0 = never trim).
    pub max_len: u64,
    /// `XADD … MAXLEN ~` for the dead-letter stream (0 = never trim).
    pub dead_max_len: u64,
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
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            url: "redis://127.0.0.1:6379".to_owned(),
            key_prefix: "jsi:".to_owned(),
            max_len: 1_000_000,
            dead_max_len: 100_000,
            dedupe_window: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(10),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriterConfigError {
    #[error("redis.url: {0}")]
    BadUrl(String),
    #[error("redis.key_prefix: must not be empty")]
    EmptyPrefix,
    #[error("redis.retry_max must be at least redis.retry_min")]
    RetryOrder,
}

impl WriterConfig {
    pub fn validate(&self) -> Result<(), WriterConfigError> {
        redis::Client::open(self.url.as_str())
            .map_err(|e| WriterConfigError::BadUrl(e.to_string()))?;
        if self.key_prefix.is_empty() {
            return Err(WriterConfigError::EmptyPrefix);
        }
        if self.retry_max < self.retry_min {
            return Err(WriterConfigError::RetryOrder);
        }
        Ok(())
    }
}
