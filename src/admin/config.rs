//! `[admin]` settings: where the admin API listens, its token, the host names it answers to,
//! what `/metrics` requires, the request body limit, and whether the Redis control stream is
//! read. Pure: `settings.rs` loads them (and reads `token_file`), `validate` refuses the
//! unsafe combinations at start, naming the key.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::auth::Secret;

/// Shortest token accepted: a guessable token is no protection.
pub const MIN_TOKEN_LEN: usize = 16;

/// `[admin]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve the admin API (and `/healthz`, `/readyz`, `/metrics`).
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Bearer token for everything that changes or reveals state. Required unless `listen`
    /// is a loopback address.
    pub token: Option<Secret>,
    /// A file holding the token (read at start by `Settings::load`; whitespace trimmed).
    pub token_file: Option<PathBuf>,
    /// Host names (or IP addresses) besides loopback under which `/admin/*` may be reached,
    /// e.g. a service DNS name. Any other `Host` header is refused: a web page that rebinds
    /// its own name to this address must not reach the API. Needs `token`.
    pub allowed_hosts: Vec<String>,
    /// `/metrics` only with the token.
    pub metrics_require_token: bool,
    /// Larger request bodies are refused with 413 before they are parsed.
    pub max_body_bytes: usize,
    /// Also take `restart`/`pause`/`resume` from the Redis stream `<prefix>control`.
    pub control_stream: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8089)),
            token: None,
            token_file: None,
            allowed_hosts: Vec::new(),
            metrics_require_token: false,
            max_body_bytes: 16 * 1024,
            control_stream: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminConfigError {
    #[error(
        "admin.listen {0} is not a loopback address, so admin.token is required (or admin.token_file, or JETSTREAM_INGESTOR__ADMIN__TOKEN); or listen on 127.0.0.1"
    )]
    TokenRequired(SocketAddr),
    #[error("admin.token: {0}")]
    Token(String),
    #[error("admin.token_file {path}: {reason}")]
    TokenFile { path: String, reason: String },
    #[error("admin.metrics_require_token = true needs admin.token")]
    MetricsWithoutToken,
    #[error("admin.max_body_bytes must be between 1024 and 1048576, got {0}")]
    BodyLimit(usize),
    #[error(
        "admin.allowed_hosts[{index}] {host:?}: {reason} (a host name or IP address, without scheme, port or wildcard)"
    )]
    AllowedHost {
        index: usize,
        host: String,
        reason: &'static str,
    },
    #[error(
        "admin.allowed_hosts is set, so the admin API is reached under other names than loopback, which requires admin.token (or admin.token_file, or JETSTREAM_INGESTOR__ADMIN__TOKEN)"
    )]
    AllowedHostsWithoutToken,
}

impl AdminConfig {
    pub fn validate(&self) -> Result<(), AdminConfigError> {
        if let Some(token) = &self.token {
            check_token(token.expose())?;
        } else if let Some(path) = &self.token_file {
            // `Settings::load` turns the file into `token`; a config built in code that sets
            // only the path would otherwise run unprotected.
            return Err(AdminConfigError::TokenFile {
                path: path.display().to_string(),
                reason: "not read (load settings through Settings::load)".into(),
            });
        }
        if !(1024..=1024 * 1024).contains(&self.max_body_bytes) {
            return Err(AdminConfigError::BodyLimit(self.max_body_bytes));
        }
        if self.token.is_none() && self.metrics_require_token {
            return Err(AdminConfigError::MetricsWithoutToken);
        }
        if self.enabled && self.token.is_none() && !self.listen.ip().is_loopback() {
            return Err(AdminConfigError::TokenRequired(self.listen));
        }
        for (index, host) in self.allowed_hosts.iter().enumerate() {
            check_allowed_host(host).map_err(|reason| AdminConfigError::AllowedHost {
                index,
                host: host.clone(),
                reason,
            })?;
        }
        if self.enabled && self.token.is_none() && !self.allowed_hosts.is_empty() {
            return Err(AdminConfigError::AllowedHostsWithoutToken);
        }
        Ok(())
    }
}

/// A bare host name (letters, digits, `-`, `.`) or an IP address (IPv6 with or without
/// brackets).
fn check_allowed_host(host: &str) -> Result<(), &'static str> {
    if host.is_empty() || host.len() > 253 {
        return Err("must be 1 to 253 characters");
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
    {
        return Err("contains a character that is not a letter, digit, '-' or '.'");
    }
    Ok(())
}

/// Long enough, and visible ASCII only (it travels in an HTTP header).
pub fn check_token(token: &str) -> Result<(), AdminConfigError> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(AdminConfigError::Token(format!(
            "must be at least {MIN_TOKEN_LEN} characters"
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AdminConfigError::Token(
            "only visible ASCII characters (no spaces or control characters)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_listen_needs_a_token() {
        let mut c = AdminConfig {
            listen: "0.0.0.0:8089".parse().expect("addr"),
            ..AdminConfig::default()
        };
        let e = c.validate().expect_err("refused").to_string();
        assert!(
            e.contains("admin.listen") && e.contains("admin.token"),
            "{e}"
        );
        c.token = Some(Secret::new("short"));
        assert!(c.validate().is_err());
        c.token = Some(Secret::new("a-long-enough-token-42"));
        c.validate().expect("accepted with a token");
        c.token = Some(Secret::new("a long token with spaces"));
        assert!(c.validate().is_err());
        c.token = None;
        c.enabled = false;
        c.validate().expect("disabled needs nothing");
    }

    #[test]
    fn loopback_default_is_valid_and_metrics_token_needs_a_token() {
        AdminConfig::default().validate().expect("default valid");
        let c = AdminConfig {
            metrics_require_token: true,
            ..AdminConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(AdminConfigError::MetricsWithoutToken)
        ));
        let c = AdminConfig {
            listen: "[::1]:8089".parse().expect("addr"),
            ..AdminConfig::default()
        };
        c.validate().expect("ipv6 loopback is loopback");
    }
}
