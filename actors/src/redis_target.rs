//! Where Redis is and how to reach it: the URL (`redis://`, or `rediss://` for TLS, with an
//! ACL user and password if any) and the TLS files of `[redis]` (`tls_ca_file`,
//! `tls_client_cert`, `tls_client_key`). Every room and the edge make their Redis clients
//! through [`RedisTarget::client`], so TLS and credentials are handled in one place. Ground
//! floor like `model`: imports nothing of ours.
//!
//! Secrets: a target prints (`Debug`, errors) the URL with its password replaced by `***`
//! and the files' paths, never a file's content; a key that does not parse is reported
//! without the parser's details (they could quote it).
//!
//! Failure: the files are read when a client is made (the one exception to "settings read
//! the files": every component makes its own client from the paths). Settings make one at
//! start, so an unreadable or malformed file stops `run` and `check-config` with a message
//! naming the key and the path. [`refusal`] tells the errors that waiting does not mend (the
//! server's or our certificate refused, an ACL right missing, a wrong password) from the
//! rest (Redis down, loading, slow), so start-up fails closed on them instead of retrying
//! forever; later the actors retry as for any failure, and their logs carry Redis's words
//! (`NOPERM … 'xadd' command`).

use std::path::{Path, PathBuf};

use redis::IntoConnectionInfo as _;

/// The TLS files of `[redis]`. `ca_file`: a PEM bundle of the CAs to trust instead of the
/// system's roots (a private CA, a managed Redis's own); `client_cert` + `client_key`: a
/// client certificate for servers that require one (`tls-auth-clients yes`), both or neither.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl TlsFiles {
    fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.client_cert.is_none() && self.client_key.is_none()
    }
}

/// `[redis]` with Sentinel: the master's name and the sentinels to ask where it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentinelSpec {
    pub master: String,
    /// `redis://host:port` (or `rediss://`, with a password if the sentinels want one).
    pub sentinels: Vec<String>,
}

/// `[redis]` on a Redis Cluster: every key of the prefix shares one hash tag, so all of them
/// live in one slot, served by one master; the nodes are asked which (`CLUSTER SLOTS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterSpec {
    /// A key of the slot (the key prefix, whose `{tag}` decides the slot).
    pub slot_key: String,
    /// Nodes to ask besides the URL's own (`host:port`).
    pub seeds: Vec<String>,
}

/// How the address of the Redis to write to is found when it is not the URL's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    Sentinel(SentinelSpec),
    Cluster(ClusterSpec),
}

/// A Redis to connect to: the URL and, for `rediss://`, the TLS files (none: system roots,
/// no client certificate). With Sentinel the URL gives the scheme, user, password and
/// database of the master; its host and port come from the sentinels ([`RedisTarget::resolve`]).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    url: String,
    tls: Option<TlsFiles>,
    discovery: Option<Discovery>,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("url", &redact(&self.url))
            .field("tls", &self.tls)
            .field(
                "discovery",
                &self.discovery.as_ref().map(|d| match d {
                    Discovery::Sentinel(s) => format!(
                        "sentinel {:?} via {:?}",
                        s.master,
                        s.sentinels.iter().map(|u| redact(u)).collect::<Vec<_>>()
                    ),
                    Discovery::Cluster(c) => {
                        format!("cluster slot of {:?}, seeds {:?}", c.slot_key, c.seeds)
                    }
                }),
            )
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("redis.url {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("redis.{field} {path}: {reason}")]
    File {
        field: &'static str,
        path: String,
        reason: String,
    },
    #[error(
        "redis.tls_client_cert and redis.tls_client_key go together: set both or neither (only redis.{given} is set)"
    )]
    HalfClientPair { given: &'static str },
    #[error("redis.{field} is set, but redis.url {url} is not a rediss:// (TLS) URL")]
    NotTls { field: &'static str, url: String },
    #[error("redis.sentinel_master and redis.sentinels go together: set both or neither")]
    HalfSentinel,
    #[error("redis.sentinels: {url}: {reason}")]
    SentinelUrl { url: String, reason: String },
    #[error("no sentinel knows where master {master:?} is: {reasons}")]
    NoMaster { master: String, reasons: String },
    #[error(
        "redis.cluster: redis.key_prefix {prefix:?} has no hash tag: every key of a prefix must share one slot (a commit is one transaction); use e.g. \"{{jsi}}:\""
    )]
    NoHashTag { prefix: String },
    #[error("redis.cluster_nodes: {seed:?} is not host:port")]
    Seed { seed: String },
    #[error("no cluster node says who serves the slot of {slot_key:?}: {reasons}")]
    NoSlotOwner { slot_key: String, reasons: String },
}

/// Call sites that speak `redis::RedisResult` keep their `?`; the message is kept whole.
impl From<TargetError> for redis::RedisError {
    fn from(e: TargetError) -> Self {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "redis target",
            e.to_string(),
        ))
    }
}

impl RedisTarget {
    /// `tls` with no file set is the same as none.
    pub fn new(url: impl Into<String>, tls: TlsFiles) -> RedisTarget {
        RedisTarget {
            url: url.into(),
            tls: (!tls.is_empty()).then_some(tls),
            discovery: None,
        }
    }

    /// Finds the server to write to this way (see [`RedisTarget::resolve`]).
    pub fn with_discovery(mut self, discovery: Option<Discovery>) -> RedisTarget {
        self.discovery = discovery;
        self
    }

    /// The address is found by asking (Sentinel, Cluster): ask again after a failure.
    pub fn discovers(&self) -> bool {
        self.discovery.is_some()
    }

    /// Checks the discovery settings without asking anyone.
    pub fn check_discovery(&self) -> Result<(), TargetError> {
        match &self.discovery {
            None => Ok(()),
            Some(Discovery::Sentinel(s)) => {
                if s.master.is_empty() || s.sentinels.is_empty() {
                    return Err(TargetError::HalfSentinel);
                }
                for url in &s.sentinels {
                    url.as_str()
                        .into_connection_info()
                        .map_err(|e| TargetError::SentinelUrl {
                            url: redact(url),
                            reason: e.to_string(),
                        })?;
                }
                Ok(())
            }
            Some(Discovery::Cluster(c)) => {
                if hash_tag(&c.slot_key).is_none() {
                    return Err(TargetError::NoHashTag {
                        prefix: c.slot_key.clone(),
                    });
                }
                for seed in &c.seeds {
                    parse_seed(seed)?;
                }
                Ok(())
            }
        }
    }

    /// A client for where Redis is now: without Sentinel, [`RedisTarget::client`]; with it,
    /// the sentinels are asked at once (`SENTINEL GET-MASTER-ADDR-BY-NAME`, each within
    /// `timeout`) and the client goes to the master the first answer names, with the URL's
    /// scheme, credentials, database and TLS files. Called again after a failure, it follows
    /// a failover.
    pub async fn resolve(
        &self,
        timeout: std::time::Duration,
    ) -> Result<redis::Client, TargetError> {
        let spec = match &self.discovery {
            None => return self.client(),
            Some(Discovery::Cluster(c)) => return self.slot_owner(c, timeout).await,
            Some(Discovery::Sentinel(s)) => s,
        };
        let asks = spec.sentinels.iter().map(|url| {
            let ask = async move {
                let client = RedisTarget::from_url(url.clone())
                    .client()
                    .map_err(|e| e.to_string())?;
                let mut con = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| e.to_string())?;
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(&spec.master)
                    .query_async::<Option<(String, u16)>>(&mut con)
                    .await
                    .map_err(|e| e.to_string())
            };
            (redact(url), ask)
        });
        match first_answer(asks, timeout).await {
            Ok(addr) => self.client_at(Some(addr)),
            Err(reasons) => Err(TargetError::NoMaster {
                master: spec.master.clone(),
                reasons: reasons.join("; "),
            }),
        }
    }

    /// Asks the URL's node, then the seeds, which master serves the slot of the prefix
    /// (`CLUSTER KEYSLOT`, `CLUSTER SLOTS`), with the URL's credentials and TLS files.
    async fn slot_owner(
        &self,
        spec: &ClusterSpec,
        timeout: std::time::Duration,
    ) -> Result<redis::Client, TargetError> {
        let mut seeds = vec![None];
        for seed in &spec.seeds {
            seeds.push(Some(parse_seed(seed)?));
        }
        let mut asks = Vec::with_capacity(seeds.len());
        for seed in seeds {
            let name = seed
                .as_ref()
                .map_or_else(|| self.redacted_url(), |(h, p)| format!("{h}:{p}"));
            let client = self.client_at(seed)?;
            let ask = async move {
                let read = async {
                    let mut con = client.get_multiplexed_async_connection().await?;
                    let slot: i64 = redis::cmd("CLUSTER")
                        .arg("KEYSLOT")
                        .arg(&spec.slot_key)
                        .query_async(&mut con)
                        .await?;
                    let slots: redis::Value = redis::cmd("CLUSTER")
                        .arg("SLOTS")
                        .query_async(&mut con)
                        .await?;
                    Ok::<_, redis::RedisError>(owner_of(slot, &slots))
                };
                read.await.map_err(|e| describe(&e))
            };
            asks.push((name, ask));
        }
        match first_answer(asks, timeout).await {
            Ok(owner) => self.client_at(Some(owner)),
            Err(reasons) => Err(TargetError::NoSlotOwner {
                slot_key: spec.slot_key.clone(),
                reasons: reasons.join("; "),
            }),
        }
    }

    /// A URL alone (`rediss://` then trusts the system's roots).
    pub fn from_url(url: impl Into<String>) -> RedisTarget {
        RedisTarget::new(url, TlsFiles::default())
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL without its password, for logs and status.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// A client for this target (no connection yet). Reads and parses the TLS files; errors
    /// name the key and the path.
    pub fn client(&self) -> Result<redis::Client, TargetError> {
        self.client_at(None)
    }

    /// [`RedisTarget::client`], at `at` (host, port) instead of the URL's address.
    fn client_at(&self, at: Option<(String, u16)>) -> Result<redis::Client, TargetError> {
        let info = self
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| TargetError::Url {
                url: self.redacted_url(),
                reason: e.to_string(),
            })?;
        let info = match at {
            None => info,
            Some((host, port)) => {
                let addr = match info.addr().clone() {
                    redis::ConnectionAddr::TcpTls {
                        insecure,
                        tls_params,
                        ..
                    } => redis::ConnectionAddr::TcpTls {
                        host,
                        port,
                        insecure,
                        tls_params,
                    },
                    _ => redis::ConnectionAddr::Tcp(host, port),
                };
                info.set_addr(addr)
            }
        };
        let Some(tls) = &self.tls else {
            return redis::Client::open(info).map_err(|e| TargetError::Url {
                url: self.redacted_url(),
                reason: e.to_string(),
            });
        };
        let field = if tls.ca_file.is_some() {
            "tls_ca_file"
        } else if tls.client_cert.is_some() {
            "tls_client_cert"
        } else {
            "tls_client_key"
        };
        if !matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
            return Err(TargetError::NotTls {
                field,
                url: self.redacted_url(),
            });
        }
        let root_cert = match &tls.ca_file {
            Some(p) => Some(read_pem(p, "tls_ca_file", Pem::Certificates)?),
            None => None,
        };
        let client_tls = match (&tls.client_cert, &tls.client_key) {
            (Some(cert), Some(key)) => {
                let client_cert = read_pem(cert, "tls_client_cert", Pem::Certificates)?;
                let client_key = read_pem(key, "tls_client_key", Pem::PrivateKey)?;
                check_client_pair(&client_cert, cert, &client_key, key)?;
                Some(redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                })
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(TargetError::HalfClientPair {
                    given: "tls_client_cert",
                });
            }
            (None, Some(_)) => {
                return Err(TargetError::HalfClientPair {
                    given: "tls_client_key",
                });
            }
        };
        redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls,
                root_cert,
            },
        )
        .map_err(|e| self.which_file(&e))
    }

    /// Names the file a TLS parse error of redis-rs is about. The key's parser error is
    /// left out (it could quote the key).
    fn which_file(&self, e: &redis::RedisError) -> TargetError {
        let text = e.to_string();
        let tls = self.tls.clone().unwrap_or_default();
        let path = |p: &Option<PathBuf>| p.as_deref().map(|p| p.display().to_string());
        let (field, path, reason) = if text.contains("private key") {
            (
                "tls_client_key",
                path(&tls.client_key),
                "not a usable PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned(),
            )
        } else if text.contains("client certificate") {
            ("tls_client_cert", path(&tls.client_cert), text)
        } else {
            ("tls_ca_file", path(&tls.ca_file), text)
        };
        TargetError::File {
            field,
            path: path.unwrap_or_default(),
            reason,
        }
    }
}

/// What a PEM file must hold.
#[derive(Clone, Copy)]
enum Pem {
    Certificates,
    PrivateKey,
}

/// Reads a PEM file and checks it holds what `kind` needs (an empty CA bundle would make
/// every handshake fail later, with a vaguer message). Never quotes the content.
fn read_pem(path: &Path, field: &'static str, kind: Pem) -> Result<Vec<u8>, TargetError> {
    let error = |reason: String| TargetError::File {
        field,
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    let text = String::from_utf8_lossy(&bytes);
    let ok = match kind {
        Pem::Certificates => text.contains("-----BEGIN CERTIFICATE-----"),
        Pem::PrivateKey => text.contains("PRIVATE KEY-----"),
    };
    if !ok {
        return Err(error(
            match kind {
                Pem::Certificates => "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                Pem::PrivateKey => "holds no PEM private key (-----BEGIN … PRIVATE KEY-----)",
            }
            .to_owned(),
        ));
    }
    Ok(bytes)
}

/// Parses the client certificate chain and key the way the handshake will (ring, the one
/// provider) and checks they belong together, so a wrong file stops the start rather than
/// every connection. The key's parser errors are not quoted.
fn check_client_pair(
    cert: &[u8],
    cert_path: &Path,
    key: &[u8],
    key_path: &Path,
) -> Result<(), TargetError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_error = |reason: String| TargetError::File {
        field: "tls_client_cert",
        path: cert_path.display().to_string(),
        reason,
    };
    let key_error = || TargetError::File {
        field: "tls_client_key",
        path: key_path.display().to_string(),
        reason: "not a usable PEM private key (PKCS#8, PKCS#1 or SEC1; RSA, ECDSA or Ed25519)"
            .to_owned(),
    };
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(format!("not a PEM certificate chain: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| key_error())?;
    let provider = rustls::crypto::ring::default_provider();
    provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|_| key_error())?;
    rustls::sign::CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        cert_error(format!(
            "does not go with redis.tls_client_key {} ({e})",
            key_path.display()
        ))
    })?;
    Ok(())
}

/// The URL without its password, for logs; also a URL that does not parse (its error is
/// reported with it).
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => redact_by_hand(url),
    }
}

/// `scheme://user:secret@host…` → `scheme://user:***@host…`, by position alone: the
/// userinfo is what comes before the last `@` of the authority.
fn redact_by_hand(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let Some(colon) = rest[..at].find(':') else {
        return url.to_owned();
    };
    format!("{}{}:***{}", &url[..start], &rest[..colon], &rest[at..])
}

/// Why Redis refuses us in a way that waiting does not mend, for the operator; `None` for
/// the rest (down, loading, timeouts …), which are retried:
/// - TLS: the server's certificate refused (wrong `tls_ca_file`, name mismatch, expired) or
///   ours (missing or unknown client certificate);
/// - ACL: a command the user may not run (`NOPERM`, naming the command);
/// - a wrong user or password (`WRONGPASS`), or none given where one is needed (`NOAUTH`).
pub fn refusal(e: &redis::RedisError) -> Option<String> {
    let text = e.to_string();
    let servers = server_errors(e);
    if let Some((_, detail)) = servers.iter().find(|(code, _)| code == "NOPERM") {
        let command = quoted(detail).map_or_else(String::new, |c| format!(" ({c})"));
        return Some(format!(
            "the Redis user lacks an ACL right{command}; Redis answered NOPERM {detail}; grant the rights listed in docs/deploying.md"
        ));
    }
    if e.kind() == redis::ErrorKind::AuthenticationFailed
        || servers
            .iter()
            .any(|(code, _)| code == "WRONGPASS" || code == "NOAUTH")
    {
        return Some(format!(
            "Redis refused the user and password of redis.url ({text}); check them, and that the ACL user is `on`"
        ));
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("invalid peer certificate") {
        return Some(format!(
            "TLS: the server's certificate was refused ({text}); redis.tls_ca_file must hold the CA that signed it (without it, the system's roots), and the host of redis.url must be one of its names"
        ));
    }
    if lower.contains("certificate") || lower.contains("unknownca") || lower.contains("unknown ca")
    {
        return Some(format!(
            "TLS: the server refused our client certificate ({text}); set redis.tls_client_cert and redis.tls_client_key to a certificate signed by a CA the server trusts"
        ));
    }
    None
}

/// An error for a log line: what [`refusal`] says when Redis refuses us (it names NOPERM and
/// the command), else the error as it is.
pub fn describe(e: &redis::RedisError) -> String {
    refusal(e).unwrap_or_else(|| e.to_string())
}

/// The codes (`NOPERM`, `OOM`, `READONLY` …) and details of the server errors in `e`, one
/// per refused command of a pipeline or transaction. redis-rs shows known codes by their
/// Rust names (`NoPerm`), so matching its text for Redis's codes misses them.
pub fn server_errors(e: &redis::RedisError) -> Vec<(String, String)> {
    e.clone()
        .into_server_errors()
        .map(|errs| {
            errs.iter()
                .map(|(_, s)| {
                    (
                        s.code().to_owned(),
                        s.details().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The first `'word'` of an error text: the command Redis names in a NOPERM error.
fn quoted(text: &str) -> Option<&str> {
    let start = text.find('\'')? + 1;
    let len = text[start..].find('\'')?;
    Some(&text[start..start + len]).filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
        p
    }

    #[test]
    fn debug_and_errors_hide_the_password() {
        let t = RedisTarget::from_url("rediss://ingestor:s3cret-pw@127.0.0.1:1/");
        assert!(!format!("{t:?}").contains("s3cret-pw"));
        assert!(t.redacted_url().contains("***"));
        let bad = RedisTarget::new(
            "redis://ingestor:s3cret-pw@127.0.0.1:1/",
            TlsFiles {
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..TlsFiles::default()
            },
        );
        for url in [
            "redis://ingestor:s3cret-pw@127.0.0.1:notaport/",
            "redis://ingestor:s3cret-pw@127.0.0.1:1/notadb",
            "postgres://ingestor:s3cret-pw@127.0.0.1:1/",
        ] {
            let e = RedisTarget::from_url(url).client().map(|_| ()).err();
            let e = e.map(|e| e.to_string()).unwrap_or_default();
            assert!(e.starts_with("redis.url"), "{url}: {e}");
            assert!(!e.contains("s3cret-pw"), "{e}");
            assert!(e.contains("ingestor:***@127.0.0.1"), "{e}");
        }
        assert_eq!(redact("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(redact("rediss://h:1/0"), "rediss://h:1/0");
        assert_eq!(redact("redis://u:p@ss@h:x/"), "redis://u:***@h:x/");
        assert_eq!(redact("junk"), "junk");
        let e = bad.client().map(|_| ()).err().map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(
            e.contains("redis.tls_ca_file") && e.contains("rediss://"),
            "{e}"
        );
        assert!(!e.contains("s3cret-pw"), "{e}");
    }

    #[test]
    fn file_errors_name_the_key_and_path_never_the_content() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let secret =
            "-----BEGIN PRIVATE KEY-----\nTOPSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n";
        let key = file(&dir, "key.pem", secret);
        let not_a_cert = file(&dir, "cert.pem", "TOPSECRETKEYMATERIAL\n");
        let url = "rediss://127.0.0.1:1";
        let t = RedisTarget::new(
            url,
            TlsFiles {
                ca_file: None,
                client_cert: Some(not_a_cert.clone()),
                client_key: Some(key.clone()),
            },
        );
        let e = t
            .client()
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("redis.tls_client_cert"), "{e}");
        assert!(e.contains(&not_a_cert.display().to_string()), "{e}");
        assert!(!e.contains("TOPSECRET"), "{e}");

        // A key that looks like PEM but does not parse: named, not quoted.
        let cert = file(
            &dir,
            "ok-cert.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let t = RedisTarget::new(
            url,
            TlsFiles {
                ca_file: None,
                client_cert: Some(cert),
                client_key: Some(key),
            },
        );
        let e = t
            .client()
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!e.contains("TOPSECRET"), "{e}");
        assert!(e.contains("redis.tls_client"), "{e}");
    }

    #[test]
    fn client_cert_and_key_go_together() {
        let t = RedisTarget::new(
            "rediss://127.0.0.1:1",
            TlsFiles {
                client_key: Some("/k.pem".into()),
                ..TlsFiles::default()
            },
        );
        let e = t
            .client()
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("redis.tls_client_cert and redis.tls_client_key go together")
                && e.contains("only redis.tls_client_key"),
            "{e}"
        );
    }

    #[test]
    fn refusals_are_recognised_and_name_the_command() {
        let noperm = redis::parse_redis_value(
            b"-NOPERM this user has no permissions to run the 'xadd' command\r\n",
        )
        .and_then(|v| v.extract_error())
        .err()
        .unwrap_or_else(|| panic!("an error reply is an error"));
        let r = refusal(&noperm).unwrap_or_default();
        assert!(r.contains("NOPERM") && r.contains("(xadd)"), "{r}");
        let down =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(refusal(&down), None);
    }
}

/// Asks every place at once, each within `timeout`: the first that knows answers (a hung
/// sentinel or node listed first costs nothing while another answers). `Err` lists why
/// each one did not.
async fn first_answer<T, F>(
    asks: impl IntoIterator<Item = (String, F)>,
    timeout: std::time::Duration,
) -> Result<T, Vec<String>>
where
    F: std::future::Future<Output = Result<Option<T>, String>>,
{
    use futures_util::stream::{FuturesUnordered, StreamExt as _};
    let mut pending: FuturesUnordered<_> = asks
        .into_iter()
        .map(|(name, ask)| async move {
            match tokio::time::timeout(timeout, ask).await {
                Ok(Ok(Some(v))) => Ok(v),
                Ok(Ok(None)) => Err(format!("{name}: does not know it")),
                Ok(Err(e)) => Err(format!("{name}: {e}")),
                Err(_) => Err(format!("{name}: no answer within {timeout:?}")),
            }
        })
        .collect();
    let mut reasons = Vec::new();
    while let Some(answer) = pending.next().await {
        match answer {
            Ok(v) => return Ok(v),
            Err(why) => reasons.push(why),
        }
    }
    Err(reasons)
}

/// The `{tag}` of a key as Redis Cluster reads it: the first `{`, then up to the next `}`,
/// not empty.
pub fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let rest = &key[open + 1..];
    let close = rest.find('}')?;
    (close > 0).then(|| &rest[..close])
}

fn parse_seed(seed: &str) -> Result<(String, u16), TargetError> {
    seed.rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
        .filter(|(h, _)| !h.is_empty())
        .ok_or_else(|| TargetError::Seed {
            seed: seed.to_owned(),
        })
}

/// The master serving `slot` in a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id],
/// replicas…], …]`.
fn owner_of(slot: i64, reply: &redis::Value) -> Option<(String, u16)> {
    let redis::Value::Array(ranges) = reply else {
        return None;
    };
    ranges.iter().find_map(|range| {
        let redis::Value::Array(parts) = range else {
            return None;
        };
        let (Some(redis::Value::Int(start)), Some(redis::Value::Int(end))) =
            (parts.first(), parts.get(1))
        else {
            return None;
        };
        if !(*start..=*end).contains(&slot) {
            return None;
        }
        let Some(redis::Value::Array(master)) = parts.get(2) else {
            return None;
        };
        let host = match master.first() {
            Some(redis::Value::BulkString(b)) => String::from_utf8(b.clone()).ok()?,
            Some(redis::Value::SimpleString(s)) => s.clone(),
            _ => return None,
        };
        let port = match master.get(1) {
            Some(redis::Value::Int(p)) => u16::try_from(*p).ok()?,
            _ => return None,
        };
        Some((host, port))
    })
}

#[cfg(test)]
mod discovery_tests {
    use super::*;

    #[test]
    fn hash_tags_are_read_as_redis_cluster_reads_them() {
        assert_eq!(hash_tag("{jsi}:"), Some("jsi"));
        assert_eq!(hash_tag("app:{jsi}:x"), Some("jsi"));
        assert_eq!(hash_tag("jsi:"), None);
        assert_eq!(
            hash_tag("{}jsi:"),
            None,
            "an empty tag hashes the whole key"
        );
        assert_eq!(hash_tag("{jsi"), None);
    }

    #[test]
    fn the_slot_owner_is_read_from_cluster_slots() {
        use redis::Value::{Array, BulkString, Int};
        let node = |h: &str, p: i64| {
            Array(vec![
                BulkString(h.into()),
                Int(p),
                BulkString(b"id".to_vec()),
            ])
        };
        let reply = Array(vec![
            Array(vec![Int(0), Int(5460), node("10.0.0.1", 7000)]),
            Array(vec![
                Int(5461),
                Int(10922),
                node("10.0.0.2", 7001),
                node("10.0.0.4", 7003),
            ]),
        ]);
        assert_eq!(owner_of(6000, &reply), Some(("10.0.0.2".into(), 7001)));
        assert_eq!(owner_of(0, &reply), Some(("10.0.0.1".into(), 7000)));
        assert_eq!(owner_of(16000, &reply), None, "not served");
        assert!(parse_seed("10.0.0.1:7000").is_ok());
        assert!(parse_seed("10.0.0.1").is_err());
    }
}
