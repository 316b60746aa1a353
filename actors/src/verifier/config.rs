//! The verifier's typed configuration: record limits, `rev` clock skew, collection filter.
//!
//! Deserialised by the edge (`settings`, the only place reading files/env) as one section of
//! the config file; durations are strings (`"5m"`). [`VerifierConfig::validate`] runs at
//! startup, so a bad value or pattern fails there rather than on the event path.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::filter::{CollectionFilter, FilterError};
use super::record::RecordLimits;
use super::route::{Route, Router};

/// Largest `max_record_bytes` accepted (far above any real record; Jetstream itself caps
/// messages well below this).
pub const MAX_RECORD_BYTES_CEILING: usize = 64 << 20;
/// Largest `max_depth` accepted: below serde_json's recursion limit (128), so depth is
/// always reported as `record_too_deep`.
pub const MAX_DEPTH_CEILING: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifierConfig {
    /// Run the checks and the CID recompute (routing applies either way).
    pub enabled: bool,
    /// Verifier threads; 0 = one per CPU core.
    pub workers: usize,
    /// Largest record accepted, in bytes of JSON as received (`record_too_large` beyond).
    pub max_record_bytes: usize,
    /// Deepest nesting of objects/arrays in a record; the record object is depth 1.
    pub max_depth: usize,
    /// How far a commit's `rev` (a TID timestamp) may run ahead of the event's `time_us`.
    #[serde(with = "crate::model::duration")]
    pub max_rev_skew: Duration,
    /// Collections let through: NSIDs or `prefix.*`; empty = all.
    pub allow_collections: Vec<String>,
    /// Collections refused (`collection_denied`), same syntax; wins over the allow list.
    pub deny_collections: Vec<String>,
    /// Record jobs of matching collections go to `<prefix><stream>` instead of
    /// `<prefix>records`; the first matching route wins.
    pub routes: Vec<Route>,
}

impl Default for VerifierConfig {
    fn default() -> VerifierConfig {
        VerifierConfig {
            enabled: true,
            workers: 0,
            max_record_bytes: 1 << 20,
            max_depth: 32,
            max_rev_skew: Duration::from_secs(5 * 60),
            allow_collections: Vec::new(),
            deny_collections: Vec::new(),
            routes: Vec::new(),
        }
    }
}

/// A verifier setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifierConfigError {
    #[error("verifier.{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The cause is in the message (so not a `source`: it would read twice in a chain).
    #[error("verifier collections: {0}")]
    Filter(FilterError),
    #[error("verifier.routes[{index}]: {message}")]
    Route { index: usize, message: String },
}

impl From<FilterError> for VerifierConfigError {
    fn from(e: FilterError) -> Self {
        VerifierConfigError::Filter(e)
    }
}

impl VerifierConfig {
    /// Checks every value; the edge calls it at startup and in `check-config`.
    pub fn validate(&self) -> Result<(), VerifierConfigError> {
        let invalid = |field, message: String| Err(VerifierConfigError::Invalid { field, message });
        if self.max_record_bytes == 0 || self.max_record_bytes > MAX_RECORD_BYTES_CEILING {
            return invalid(
                "max_record_bytes",
                format!(
                    "must be 1..={MAX_RECORD_BYTES_CEILING}, got {}",
                    self.max_record_bytes
                ),
            );
        }
        if self.max_depth == 0 || self.max_depth > MAX_DEPTH_CEILING {
            return invalid(
                "max_depth",
                format!("must be 1..={MAX_DEPTH_CEILING}, got {}", self.max_depth),
            );
        }
        if self.workers > 256 {
            return invalid(
                "workers",
                format!("must be 0 (one per core) ..= 256, got {}", self.workers),
            );
        }
        self.collection_filter()?;
        self.router()?;
        Ok(())
    }

    /// The router built from `routes`.
    pub fn router(&self) -> Result<Router, VerifierConfigError> {
        Router::new(&self.routes)
            .map_err(|(index, message)| VerifierConfigError::Route { index, message })
    }

    /// Worker threads to start.
    pub fn worker_count(&self) -> usize {
        if self.workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            self.workers
        }
    }

    /// The limits handed to the record checks.
    pub fn record_limits(&self) -> RecordLimits {
        RecordLimits {
            max_bytes: self.max_record_bytes,
            max_depth: self.max_depth,
        }
    }

    /// The collection matcher built from the allow/deny lists.
    pub fn collection_filter(&self) -> Result<CollectionFilter, FilterError> {
        CollectionFilter::new(&self.allow_collections, &self.deny_collections)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let cfg = VerifierConfig::default();
        cfg.validate().unwrap();
        assert_eq!(cfg.max_record_bytes, 1024 * 1024);
        assert_eq!(cfg.max_depth, 32);
        assert_eq!(cfg.max_rev_skew, Duration::from_secs(300));
        assert!(cfg.collection_filter().unwrap().is_unrestricted());
    }

    #[test]
    fn deserialises_with_duration_strings_and_defaults() {
        let cfg: VerifierConfig = serde_json::from_str(
            r#"{"max_rev_skew":"90s","deny_collections":["app.bsky.feed.like"]}"#,
        )
        .unwrap();
        assert_eq!(cfg.max_rev_skew, Duration::from_secs(90));
        assert_eq!(cfg.max_depth, 32);
        assert!(
            !cfg.collection_filter()
                .unwrap()
                .allows("app.bsky.feed.like")
        );
        let back = serde_json::to_value(&cfg).unwrap();
        assert_eq!(back["max_rev_skew"], "1m 30s");
        let again: VerifierConfig = serde_json::from_value(back).unwrap();
        assert_eq!(again, cfg);
    }

    #[test]
    fn rejects_unknown_fields_and_bad_durations() {
        assert!(serde_json::from_str::<VerifierConfig>(r#"{"max_dept":3}"#).is_err());
        let err = serde_json::from_str::<VerifierConfig>(r#"{"max_rev_skew":"soon"}"#).unwrap_err();
        assert!(err.to_string().contains("invalid duration"), "{err}");
    }

    #[test]
    fn validate_catches_bad_values() {
        let bad = [
            VerifierConfig {
                max_record_bytes: 0,
                ..VerifierConfig::default()
            },
            VerifierConfig {
                max_depth: 0,
                ..VerifierConfig::default()
            },
            VerifierConfig {
                max_depth: 128,
                ..VerifierConfig::default()
            },
            VerifierConfig {
                allow_collections: vec!["app.*.post".into()],
                ..VerifierConfig::default()
            },
        ];
        for cfg in bad {
            assert!(cfg.validate().is_err(), "{cfg:?}");
        }
        let err = VerifierConfig {
            max_depth: 0,
            ..VerifierConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().starts_with("verifier.max_depth"), "{err}");
    }
}
