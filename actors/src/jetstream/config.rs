//! Typed settings of the Jetstream reader (`[jetstream]` in the config file). Read and
//! validated by the edge (`src/settings.rs`); the reader only consumes them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::subscribe::{FilterError, Filters};

/// `[jetstream]`: where to subscribe and how to batch, reconnect and detect dead hosts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReaderConfig {
    /// Jetstream subscribe URLs (`wss://host/subscribe`), tried in order.
    pub endpoints: Vec<String>,
    /// Collections to receive (NSIDs or `prefix.*`); empty = all.
    pub wanted_collections: Vec<String>,
    /// Accounts to receive; empty = all.
    pub wanted_dids: Vec<String>,
    /// How far before the committed cursor every dial starts, so nothing at the edge of a
    /// disconnect is missed (the dedupe index hides the overlap).
    #[serde(with = "crate::model::duration")]
    pub rewind: Duration,
    /// Cursor to start from when Redis holds none (`None` = live tail).
    pub initial_cursor: Option<u64>,
    /// A batch is sent when it holds this many frames …
    pub batch_max_events: usize,
    /// … or when its first frame has waited this long.
    #[serde(with = "crate::model::duration")]
    pub batch_linger: Duration,
    /// Batches between the socket and Redis at most; when all are in flight, reading stops.
    pub max_in_flight_batches: usize,
    #[serde(with = "crate::model::duration")]
    pub connect_timeout: Duration,
    /// A ping is sent after this long without any frame.
    #[serde(with = "crate::model::duration")]
    pub ping_interval: Duration,
    /// The session is declared dead after this long without any frame (pongs count).
    #[serde(with = "crate::model::duration")]
    pub idle_timeout: Duration,
    /// First reconnect delay ceiling (full jitter below it), doubled per failure …
    #[serde(with = "crate::model::duration")]
    pub backoff_min: Duration,
    /// … up to this cap.
    #[serde(with = "crate::model::duration")]
    pub backoff_max: Duration,
    /// Largest WebSocket message accepted; bigger ones end the session (never allocated).
    pub max_frame_bytes: usize,
    /// Replay mode only (set by `replay --until`, not by the file): stop after this cursor.
    #[serde(skip)]
    pub until: Option<u64>,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        ReaderConfig {
            endpoints: vec!["wss://jetstream2.us-east.bsky.network/subscribe".to_owned()],
            wanted_collections: Vec::new(),
            wanted_dids: Vec::new(),
            rewind: Duration::from_secs(5),
            initial_cursor: None,
            batch_max_events: 512,
            batch_linger: Duration::from_millis(5),
            max_in_flight_batches: 16,
            connect_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_frame_bytes: 2 * 1024 * 1024,
            until: None,
        }
    }
}

/// A `[jetstream]` value that cannot work, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ReaderConfigError {
    #[error("jetstream.endpoints: at least one endpoint is required")]
    NoEndpoint,
    #[error("jetstream.endpoints: {0:?} is not a ws:// or wss:// URL")]
    BadEndpoint(String),
    #[error("jetstream.{key}: must be at least {min}")]
    TooSmall { key: &'static str, min: u64 },
    #[error("jetstream.idle_timeout must be longer than jetstream.ping_interval")]
    IdleNotAbovePing,
    #[error("jetstream.backoff_max must be at least jetstream.backoff_min")]
    BackoffOrder,
    #[error(transparent)]
    Filter(#[from] FilterError),
}

impl ReaderConfig {
    pub fn validate(&self) -> Result<(), ReaderConfigError> {
        if self.endpoints.is_empty() {
            return Err(ReaderConfigError::NoEndpoint);
        }
        for e in &self.endpoints {
            let ok = url::Url::parse(e)
                .map(|u| matches!(u.scheme(), "ws" | "wss") && u.host_str().is_some())
                .unwrap_or(false);
            if !ok {
                return Err(ReaderConfigError::BadEndpoint(e.clone()));
            }
        }
        if self.batch_max_events == 0 {
            return Err(ReaderConfigError::TooSmall {
                key: "batch_max_events",
                min: 1,
            });
        }
        if self.max_in_flight_batches == 0 {
            return Err(ReaderConfigError::TooSmall {
                key: "max_in_flight_batches",
                min: 1,
            });
        }
        if self.max_frame_bytes < 1024 {
            return Err(ReaderConfigError::TooSmall {
                key: "max_frame_bytes",
                min: 1024,
            });
        }
        if self.idle_timeout <= self.ping_interval {
            return Err(ReaderConfigError::IdleNotAbovePing);
        }
        if self.backoff_max < self.backoff_min {
            return Err(ReaderConfigError::BackoffOrder);
        }
        self.filters().validate()?;
        Ok(())
    }

    pub fn filters(&self) -> Filters {
        Filters {
            wanted_collections: self.wanted_collections.clone(),
            wanted_dids: self.wanted_dids.clone(),
        }
    }
}
