//! Who may talk to `/admin/*`, decided from the request head before any body is read, in
//! this order:
//!
//! 1. `Host` must name this API: a loopback name or address, the address it listens on, the
//!    local address the connection arrived on, or an entry of `admin.allowed_hosts`. A web
//!    page that rebinds its own DNS name to 127.0.0.1 (DNS rebinding) sends its own name and
//!    is refused: 403 (400 without a `Host`).
//! 2. `Origin`, when present, must be this API's own origin (`http://<Host>`): a page of any
//!    other site is refused, 403.
//! 3. The bearer token ([`TokenCheck`]): the same bare 401 for every failure.
//! 4. A request with a body (or a `Content-Type`) must say `application/json`: HTML forms and
//!    `text/plain` fetches, the requests a browser sends cross-site without asking, get 415.
//!
//! Every refusal is logged with the header it concerns and counted in
//! `jetstream_ingestor_admin_refused_total{reason}` (`host`, `origin`, `content_type`; wrong
//! tokens in `jetstream_ingestor_admin_auth_failures_total`). `/healthz`, `/readyz` and
//! `/metrics` are outside this guard: probes reach them under any name (a pod IP).
//! Pure parts ([`HostPolicy`], [`body_type`]) beside the middleware ([`admin_guard`]).

use std::net::{IpAddr, SocketAddr};

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use serde_json::json;
use tracing::warn;

use super::auth::unauthorized;
use super::config::AdminConfig;
use super::server::AdminState;

/// The counter of refused requests, by reason.
pub const REFUSED_METRIC: &str = "jetstream_ingestor_admin_refused_total";

/// The local address of a connection, recorded when it is accepted (the listen address may
/// be `0.0.0.0`; this is the address the client actually dialled).
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub SocketAddr);

/// The names `/admin/*` answers to.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    /// `admin.listen`'s address, unless unspecified (`0.0.0.0`, `::`).
    listen: Option<IpAddr>,
    /// `admin.allowed_hosts`, lower-case, without brackets or a trailing dot.
    allowed: Vec<String>,
}

/// Why a request was refused before it reached a handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    MissingHost,
    Host(String),
    Origin { origin: String, host: String },
    ContentType(Option<String>),
}

impl Refusal {
    /// The `reason` label of the metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::MissingHost | Refusal::Host(_) => "host",
            Refusal::Origin { .. } => "origin",
            Refusal::ContentType(_) => "content_type",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Refusal::MissingHost => 400,
            Refusal::Host(_) | Refusal::Origin { .. } => 403,
            Refusal::ContentType(_) => 415,
        }
    }

    /// The `error` of the JSON answer, naming the header.
    pub fn message(&self) -> String {
        match self {
            Refusal::MissingHost => "Host header missing".to_owned(),
            Refusal::Host(h) => format!(
                "Host header {h:?} is not a name of this admin API (loopback, the address it listens on, or admin.allowed_hosts)"
            ),
            Refusal::Origin { origin, host } => format!(
                "Origin header {origin:?} is not this admin API's own origin (http://{host}); cross-origin requests are refused"
            ),
            Refusal::ContentType(None) => {
                "Content-Type header missing: request bodies must be application/json".to_owned()
            }
            Refusal::ContentType(Some(t)) => {
                format!("Content-Type header {t:?} is not application/json")
            }
        }
    }
}

/// A header value for a message: lossy text, at most 100 bytes.
fn shown(value: &[u8]) -> String {
    let cut = &value[..value.len().min(100)];
    String::from_utf8_lossy(cut).into_owned()
}

impl HostPolicy {
    pub fn new(cfg: &AdminConfig) -> HostPolicy {
        let ip = cfg.listen.ip();
        HostPolicy {
            listen: (!ip.is_unspecified()).then_some(ip),
            allowed: cfg
                .allowed_hosts
                .iter()
                .map(|h| normalise(h.trim_start_matches('[').trim_end_matches(']')))
                .collect(),
        }
    }

    /// Whether the `Host` value (`name[:port]`, `[v6][:port]`) names this API. `local` is the
    /// address the connection arrived on.
    pub fn allows_host(&self, value: &str, local: Option<IpAddr>) -> bool {
        let Some(host) = host_of(value) else {
            return false;
        };
        if host == "localhost" || self.allowed.contains(&host) {
            return true;
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => {
                let ip = ip.to_canonical();
                ip.is_loopback()
                    || Some(ip) == self.listen
                    || local.is_some_and(|l| l.to_canonical() == ip)
            }
            Err(_) => false,
        }
    }

    /// Checks `Host` (or the request target's authority) and `Origin`.
    pub fn check(
        &self,
        headers: &HeaderMap,
        authority: Option<&str>,
        local: Option<IpAddr>,
    ) -> Result<(), Refusal> {
        let host = match headers.get(header::HOST) {
            Some(h) => h.as_bytes(),
            None => authority.map(str::as_bytes).ok_or(Refusal::MissingHost)?,
        };
        let host_text = std::str::from_utf8(host)
            .ok()
            .filter(|h| self.allows_host(h, local))
            .ok_or_else(|| Refusal::Host(shown(host)))?;
        if let Some(origin) = headers.get(header::ORIGIN) {
            let own = ["http://", "https://"].iter().any(|scheme| {
                origin
                    .as_bytes()
                    .strip_prefix(scheme.as_bytes())
                    .is_some_and(|rest| rest.eq_ignore_ascii_case(host_text.as_bytes()))
            });
            if !own {
                return Err(Refusal::Origin {
                    origin: shown(origin.as_bytes()),
                    host: host_text.to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// Lower-case, without one trailing dot (`localhost.` is `localhost`).
fn normalise(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// The host part of a `Host` value, normalised; `None` when it is malformed.
fn host_of(value: &str) -> Option<String> {
    let value = value.trim();
    let digits = |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    let host = if let Some(rest) = value.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(digits)) {
            return None;
        }
        inner
    } else {
        match value.split_once(':') {
            Some((h, port)) if digits(port) => h,
            Some(_) => return None,
            None => value,
        }
    };
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'));
    ok.then(|| normalise(host))
}

/// A request with a body, or one that declares a content type, must be JSON.
pub fn body_type(headers: &HeaderMap) -> Result<(), Refusal> {
    let declared = headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes());
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes().iter().any(|b| *b != b'0'));
    match declared {
        None if !has_body => Ok(()),
        None => Err(Refusal::ContentType(None)),
        Some(t) => {
            let essence = t.split(|b| *b == b';').next().unwrap_or_default();
            if essence
                .trim_ascii()
                .eq_ignore_ascii_case(b"application/json")
            {
                Ok(())
            } else {
                Err(Refusal::ContentType(Some(shown(t))))
            }
        }
    }
}

/// The middleware of `/admin/*`: host and origin, token, body type, in that order; refused
/// before the body is read.
pub async fn admin_guard(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AdminState>>().cloned() else {
        return Ok(req.into_response(unauthorized()));
    };
    let local = req.conn_data::<LocalAddr>().map(|a| a.0.ip());
    let authority = req.uri().authority().map(|a| a.as_str().to_owned());
    if let Err(r) = state
        .hosts
        .check(req.headers(), authority.as_deref(), local)
    {
        return Ok(refuse(req, &r));
    }
    if !state.authorized(req.request()) {
        metrics::counter!("jetstream_ingestor_admin_auth_failures_total").increment(1);
        warn!(path = %req.path(), peer = ?req.peer_addr(), "admin request refused: missing or wrong token");
        return Ok(req.into_response(unauthorized()));
    }
    if let Err(r) = body_type(req.headers()) {
        return Ok(refuse(req, &r));
    }
    next.call(req).await
}

fn refuse(req: ServiceRequest, r: &Refusal) -> ServiceResponse<BoxBody> {
    metrics::counter!(REFUSED_METRIC, "reason" => r.reason()).increment(1);
    let message = r.message();
    warn!(path = %req.path(), peer = ?req.peer_addr(), reason = r.reason(), %message, "admin request refused");
    let code = actix_web::http::StatusCode::from_u16(r.status())
        .unwrap_or(actix_web::http::StatusCode::FORBIDDEN);
    req.into_response(HttpResponse::build(code).json(json!({ "error": message })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn policy(listen: &str, allowed: &[&str]) -> HostPolicy {
        HostPolicy::new(&AdminConfig {
            listen: listen.parse().expect("addr"),
            allowed_hosts: allowed.iter().map(|h| (*h).to_owned()).collect(),
            ..AdminConfig::default()
        })
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hosts_are_loopback_the_listen_or_local_address_or_allowed() {
        let p = policy("127.0.0.1:8089", &["Ingestor.Internal."]);
        for ok in [
            "127.0.0.1:8089",
            "127.0.0.1",
            "127.9.9.9:1",
            "localhost:8089",
            "LOCALHOST.",
            "[::1]:8089",
            "[::ffff:127.0.0.1]:8089",
            "ingestor.internal:8089",
            "INGESTOR.internal",
        ] {
            assert!(p.allows_host(ok, None), "{ok}");
        }
        for bad in [
            "evil.example:8089",
            "localhost.evil.example",
            "10.0.0.5:8089",
            "127.0.0.1:80:80",
            "127.0.0.1:port",
            "[::1",
            "",
            "local host",
        ] {
            assert!(!p.allows_host(bad, None), "{bad}");
        }
        let local: IpAddr = "10.0.0.5".parse().expect("ip");
        assert!(p.allows_host("10.0.0.5:8089", Some(local)));
        let p = policy("10.0.0.7:8089", &[]);
        assert!(p.allows_host("10.0.0.7:8089", None));
        assert!(!policy("0.0.0.0:8089", &[]).allows_host("0.0.0.0:8089", None));
    }

    #[test]
    fn origin_must_be_the_apis_own_and_host_is_required() {
        let p = policy("127.0.0.1:8089", &[]);
        let ok = headers(&[
            ("host", "127.0.0.1:8089"),
            ("origin", "http://127.0.0.1:8089"),
        ]);
        assert_eq!(p.check(&ok, None, None), Ok(()));
        let other_port = headers(&[
            ("host", "127.0.0.1:8089"),
            ("origin", "http://127.0.0.1:3000"),
        ]);
        assert_eq!(
            p.check(&other_port, None, None).map_err(|r| r.reason()),
            Err("origin")
        );
        let null = headers(&[("host", "127.0.0.1:8089"), ("origin", "null")]);
        assert_eq!(p.check(&null, None, None).map_err(|r| r.status()), Err(403));
        let rebound = headers(&[
            ("host", "evil.example:8089"),
            ("origin", "http://evil.example:8089"),
        ]);
        let e = p.check(&rebound, None, None).expect_err("refused");
        assert_eq!((e.reason(), e.status()), ("host", 403));
        assert!(
            e.message().contains("Host header \"evil.example:8089\""),
            "{}",
            e.message()
        );
        assert_eq!(
            p.check(&HeaderMap::new(), None, None),
            Err(Refusal::MissingHost)
        );
        assert_eq!(
            p.check(&HeaderMap::new(), Some("127.0.0.1:8089"), None),
            Ok(())
        );
    }

    #[test]
    fn bodies_must_be_json() {
        assert_eq!(body_type(&headers(&[])), Ok(()));
        assert_eq!(body_type(&headers(&[("content-length", "0")])), Ok(()));
        assert_eq!(
            body_type(&headers(&[
                ("content-type", "application/json; charset=utf-8"),
                ("content-length", "2")
            ])),
            Ok(())
        );
        let e = body_type(&headers(&[
            ("content-type", "text/plain"),
            ("content-length", "2"),
        ]))
        .expect_err("refused");
        assert_eq!((e.status(), e.reason()), (415, "content_type"));
        assert!(e.message().contains("\"text/plain\""), "{}", e.message());
        assert!(body_type(&headers(&[("content-type", "text/plain")])).is_err());
        assert_eq!(
            body_type(&headers(&[("content-length", "5")])),
            Err(Refusal::ContentType(None))
        );
        assert!(body_type(&headers(&[("transfer-encoding", "chunked")])).is_err());
    }
}
