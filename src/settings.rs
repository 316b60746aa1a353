//! Settings: the ONLY place that reads config files and the environment (STYLE rule 9).
//!
//! Layers, later wins: built-in defaults (identical to `config/default.toml`, a test checks
//! it), the file given with `--config`, then `JETSTREAM_INGESTOR__SECTION__KEY` variables
//! (lists comma-separated). Unknown keys and invalid values fail at start, naming the key.

use std::path::Path;
use std::time::Duration;

use actors::jetstream::ReaderConfig;
use actors::jetstream::config::ReaderConfigError;
use actors::sink::WriterConfig;
use actors::sink::config::WriterConfigError;
use actors::supervisor::PipelineConfig;
use actors::verifier::{VerifierConfig, VerifierConfigError};
use serde::{Deserialize, Serialize};

/// Environment variables that override settings start with this, then `__SECTION__KEY`.
pub const ENV_PREFIX: &str = "JETSTREAM_INGESTOR";

/// Keys whose environment values are comma-separated lists.
const LIST_KEYS: [&str; 3] = [
    "jetstream.endpoints",
    "jetstream.wanted_collections",
    "jetstream.wanted_dids",
];

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub jetstream: ReaderConfig,
    pub redis: WriterConfig,
    pub verifier: VerifierConfig,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter (`info`, `jetstream_ingestor=debug,actors=info`); `RUST_LOG` wins.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// `[shutdown]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// On SIGTERM/SIGINT: how long to wait for in-flight batches to commit before exiting.
    #[serde(with = "actors::model::duration")]
    pub timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("config file {path}: {source}")]
    File {
        path: String,
        source: config::ConfigError,
    },
    #[error("invalid setting: {0}")]
    Invalid(config::ConfigError),
    #[error(transparent)]
    Jetstream(#[from] ReaderConfigError),
    #[error(transparent)]
    Redis(#[from] WriterConfigError),
    #[error(transparent)]
    Verifier(#[from] VerifierConfigError),
    #[error("log.level: {0}")]
    LogLevel(String),
    #[error(
        "redis.dedupe_window ({window:?}) must be longer than jetstream.rewind ({rewind:?}), or replayed events would be written twice"
    )]
    DedupeWindow { window: Duration, rewind: Duration },
}

impl Settings {
    /// Loads defaults, then `file`, then the environment given as `(name, value)` pairs
    /// (the process environment in production, a fixed list in tests).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, SettingsError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            if !path.exists() {
                return Err(SettingsError::File {
                    path: path.display().to_string(),
                    source: config::ConfigError::Message("file not found".into()),
                });
            }
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let vars: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        let mut environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .try_parsing(true)
            .source(Some(vars));
        for key in LIST_KEYS {
            environment = environment.with_list_parse_key(key);
        }
        builder = builder.add_source(environment);
        let built = builder.build().map_err(|e| match file {
            Some(p) => SettingsError::File {
                path: p.display().to_string(),
                source: e,
            },
            None => SettingsError::Invalid(e),
        })?;
        let settings: Settings = built.try_deserialize().map_err(SettingsError::Invalid)?;
        settings.validate()?;
        Ok(settings)
    }

    /// The part of the settings the actors run on.
    pub fn pipeline(&self) -> PipelineConfig {
        PipelineConfig {
            reader: self.jetstream.clone(),
            writer: self.redis.clone(),
            verifier: self.verifier.clone(),
        }
    }

    /// Loads with the real process environment.
    pub fn from_process(file: Option<&Path>) -> Result<Settings, SettingsError> {
        Settings::load(file, std::env::vars())
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        self.jetstream.validate()?;
        self.redis.validate()?;
        self.verifier.validate()?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| SettingsError::LogLevel(e.to_string()))?;
        if self.redis.dedupe_window <= self.jetstream.rewind {
            return Err(SettingsError::DedupeWindow {
                window: self.redis.dedupe_window,
                rewind: self.jetstream.rewind,
            });
        }
        Ok(())
    }
}
