//! Logs and metrics: structured `tracing` output (text or JSON) and the Prometheus recorder
//! every `metrics::counter!` in the actors reports to. Installed once, at the edge.

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::settings::{LogConfig, LogFormat};

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the log subscriber (`RUST_LOG` overrides `log.level`). Safe to call twice: the
/// second call is a no-op. Colours only when stderr is a terminal: a file, a pipe or a log
/// shipper gets plain text.
pub fn init_logging(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match cfg.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Installs the Prometheus recorder once and returns its handle (render it for `/metrics`;
/// call `run_upkeep` periodically, CRATES.md F15).
pub fn metrics_handle() -> Option<PrometheusHandle> {
    if let Some(h) = PROMETHEUS.get() {
        return Some(h.clone());
    }
    match PrometheusBuilder::new().install_recorder() {
        Ok(h) => Some(PROMETHEUS.get_or_init(|| h).clone()),
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed");
            None
        }
    }
}

/// rustls needs exactly one crypto provider (CRATES.md F9); we ship ring.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
