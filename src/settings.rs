//! Settings: the ONLY place that reads config files and the environment (STYLE rule 9).
//!
//! Layers, later wins: built-in defaults (identical to `config/default.toml`, a test checks
//! it), the file given with `--config`, then `JETSTREAM_INGESTOR__SECTION__KEY` variables
//! (lists comma-separated). Unknown keys and invalid values fail at start, naming the key,
//! and so do routes or consumer groups on a key the ingestor owns (`keys`).

mod keys;

use std::path::Path;
use std::time::Duration;

use actors::buckets::{
    BucketConfigError, BucketDef, BucketsConfig, BucketsSection, parse_bucket_file,
};
use actors::jetstream::ReaderConfig;
use actors::jetstream::config::ReaderConfigError;
use actors::sink::WriterConfig;
use actors::sink::config::{ConsumerGroup, WriterConfigError, validate_consumers};
use actors::supervisor::PipelineConfig;
use actors::verifier::{VerifierConfig, VerifierConfigError};
use serde::{Deserialize, Serialize};

use crate::admin::auth::Secret;
use crate::admin::config::{AdminConfig, AdminConfigError};
use crate::heartbeat::{HeartbeatConfig, HeartbeatConfigError};
use actors::ha::HaConfig;
use actors::ha::config::HaConfigError;
use actors::prove::{ProveConfig, ProveConfigError};

/// Environment variables that override settings start with this, then `__SECTION__KEY`.
pub const ENV_PREFIX: &str = "JETSTREAM_INGESTOR";

/// Keys whose environment values are comma-separated lists.
const LIST_KEYS: [&str; 8] = [
    "redis.sentinels",
    "redis.cluster_nodes",
    "jetstream.endpoints",
    "jetstream.wanted_collections",
    "jetstream.wanted_dids",
    "admin.allowed_hosts",
    "prove.streams",
    "prove.collections",
];

/// `JETSTREAM_INGESTOR__SECTION__KEY` → `section.key` (what `config::Environment` does with
/// the same separators); `None` for variables of other programs.
fn env_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix(ENV_PREFIX)?.strip_prefix("__")?;
    Some(rest.to_lowercase().replace("__", "."))
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub jetstream: ReaderConfig,
    pub redis: WriterConfig,
    pub verifier: VerifierConfig,
    /// `[[consumers]]`: groups created at start and protected from trimming.
    pub consumers: Vec<ConsumerGroup>,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
    pub admin: AdminConfig,
    pub heartbeat: HeartbeatConfig,
    /// `[ha]`: several instances on one key prefix, one writer (a fenced lease).
    pub ha: HaConfig,
    /// `[buckets]`: the bucket definitions file and the shard count.
    pub buckets: BucketsSection,
    /// `[prove]`: the `prove` workers (PDS proofs of each job, docs/prove.md).
    pub prove: ProveConfig,
    /// The definitions read from `buckets.file`, validated (not a config key).
    #[serde(skip)]
    pub bucket_defs: Vec<BucketDef>,
    /// `admin.listen` was given (config file or environment), not defaulted: `replay` serves
    /// the admin API only then, or with `--admin` (not a config key).
    #[serde(skip)]
    pub admin_listen_given: bool,
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
    // The causes below are part of the message, so they are not `source`s: shown with its
    // chain (`{:#}`), "file not found" would read twice.
    #[error("config file {path}: {error}")]
    File {
        path: String,
        error: config::ConfigError,
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
    #[error(transparent)]
    Admin(#[from] AdminConfigError),
    #[error(transparent)]
    Heartbeat(#[from] HeartbeatConfigError),
    #[error(transparent)]
    Ha(#[from] HaConfigError),
    #[error(transparent)]
    Prove(#[from] ProveConfigError),
    #[error("buckets.file {path}: {reason}")]
    BucketFile { path: String, reason: String },
    #[error("buckets.file {path}: {error}")]
    Buckets {
        path: String,
        error: BucketConfigError,
    },
    #[error("buckets.shards: {0} is too many (at most 256)")]
    BucketShards(usize),
    #[error("{field} = {name:?}: {key} is {what}; {why}")]
    ReservedKey {
        field: String,
        name: String,
        key: String,
        what: &'static str,
        why: &'static str,
    },
    #[error(
        "redis.dedupe_window ({window:?}) must be longer than jetstream.rewind and jetstream.failover_rewind ({rewind:?}), or replayed events would be written twice"
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
                    error: config::ConfigError::Message("file not found".into()),
                });
            }
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        // Environment values stay strings (no `try_parsing`): a token, prefix or name that
        // looks like a number must not come back as one (`12345678901234567890` would turn
        // into the float `12345678901234567000`). Numeric and boolean keys are parsed by
        // their own types' deserializers from the string. List keys are split here, since
        // `config` only splits lists when it also guesses types.
        let mut vars = config::Map::new();
        for (name, value) in env {
            let Some(key) = env_key(&name) else {
                continue;
            };
            if LIST_KEYS.contains(&key.as_str()) {
                let list: Vec<String> = value.split(',').map(str::to_owned).collect();
                builder = builder
                    .set_override(key, list)
                    .map_err(SettingsError::Invalid)?;
            } else {
                vars.insert(name, value);
            }
        }
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .source(Some(vars)),
        );
        let built = builder.build().map_err(|e| match file {
            Some(p) => SettingsError::File {
                path: p.display().to_string(),
                error: e,
            },
            None => SettingsError::Invalid(e),
        })?;
        // Defaults come from serde, not from `built`: a key found here was given.
        let admin_listen_given = built.get_string("admin.listen").is_ok();
        let mut settings: Settings = built.try_deserialize().map_err(SettingsError::Invalid)?;
        settings.admin_listen_given = admin_listen_given;
        settings.read_admin_token_file()?;
        settings.read_bucket_file()?;
        settings.validate()?;
        Ok(settings)
    }

    /// The part of the settings the actors run on.
    pub fn pipeline(&self) -> PipelineConfig {
        PipelineConfig {
            reader: self.jetstream.clone(),
            writer: self.redis.clone(),
            verifier: self.verifier.clone(),
            consumers: self.consumers.clone(),
            buckets: (!self.bucket_defs.is_empty()).then(|| BucketsConfig {
                shards: self.buckets.shards,
                buckets: self.bucket_defs.clone(),
            }),
            ha: self.ha.enabled.then(|| self.ha.clone()),
        }
    }

    /// `buckets.file` → `bucket_defs` (empty path: no buckets).
    fn read_bucket_file(&mut self) -> Result<(), SettingsError> {
        let path = self.buckets.file.trim().to_owned();
        if path.is_empty() {
            self.bucket_defs.clear();
            return Ok(());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| SettingsError::BucketFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        self.load_bucket_text(&text, &path)
    }

    /// Parses and validates bucket definitions given as TOML text (`origin` names it in
    /// errors): the file's, or the demo's built-in example.
    pub fn load_bucket_text(&mut self, text: &str, origin: &str) -> Result<(), SettingsError> {
        let tree: serde_json::Value = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| SettingsError::BucketFile {
                path: origin.to_owned(),
                reason: e.to_string(),
            })?;
        self.bucket_defs = parse_bucket_file(&tree).map_err(|error| SettingsError::Buckets {
            path: origin.to_owned(),
            error,
        })?;
        Ok(())
    }

    /// Loads with the real process environment.
    pub fn from_process(file: Option<&Path>) -> Result<Settings, SettingsError> {
        Settings::load(file, std::env::vars())
    }

    /// `admin.token_file` → `admin.token` (first line, whitespace trimmed). Setting both is
    /// refused: which one wins would be a guess.
    fn read_admin_token_file(&mut self) -> Result<(), SettingsError> {
        let Some(path) = &self.admin.token_file else {
            return Ok(());
        };
        let file_error = |reason: String| AdminConfigError::TokenFile {
            path: path.display().to_string(),
            reason,
        };
        if self.admin.token.is_some() {
            return Err(
                file_error("set only one of admin.token and admin.token_file".into()).into(),
            );
        }
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        let token = text.lines().next().unwrap_or_default().trim();
        if token.is_empty() {
            return Err(file_error("the file is empty".into()).into());
        }
        self.admin.token = Some(Secret::new(token));
        Ok(())
    }

    /// `heartbeat.instance_id`, or `<hostname>-<pid>` when it is empty (the hostname from
    /// the kernel, else `$HOSTNAME`, else `unknown`).
    pub fn instance_id(&self) -> String {
        if !self.heartbeat.instance_id.is_empty() {
            return self.heartbeat.instance_id.clone();
        }
        format!(
            "{}-{}",
            actors::model::host::host_name(),
            std::process::id()
        )
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        self.admin.validate()?;
        self.heartbeat.validate()?;
        self.ha.validate()?;
        self.prove.validate()?;
        self.jetstream.validate()?;
        self.redis.validate()?;
        // Before the verifier's own route checks: this message names the key and its use.
        keys::check(self)?;
        self.verifier.validate()?;
        validate_consumers(&self.consumers)?;
        if self.buckets.shards > 256 {
            return Err(SettingsError::BucketShards(self.buckets.shards));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| SettingsError::LogLevel(e.to_string()))?;
        let longest_rewind = self.jetstream.effective_failover_rewind();
        if self.redis.dedupe_window <= longest_rewind {
            return Err(SettingsError::DedupeWindow {
                window: self.redis.dedupe_window,
                rewind: longest_rewind,
            });
        }
        Ok(())
    }
}
