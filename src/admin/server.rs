//! The admin HTTP API (actix-web on the process's actix System, one worker, no signal
//! handling of its own: CRATES.md F13). Handlers only translate HTTP into supervisor
//! messages (`Restart`, `Pause`, `Resume`, `UpdateFilters`, `GetStatus`) and back.
//!
//! | route | auth | answer |
//! |---|---|---|
//! | `GET /healthz` | none | 200 `ok` while the process serves HTTP |
//! | `GET /readyz` | details only with the token and this API's own `Host` | 200 when streaming and committing, else 503 |
//! | `GET /metrics` | token if `admin.metrics_require_token` | Prometheus text |
//! | `GET /admin/status` | token | [`StatusView`] JSON |
//! | `POST /admin/restart` | token | body `{"cursor": N}` optional; 202 `{"session_id": …}` |
//! | `POST /admin/pause`, `POST /admin/resume` | token | 202 |
//! | `PUT /admin/filters` | token | body `{"wantedCollections": […], "wantedDids": […]}`; 200 or 400 |
//!
//! Everything under `/admin` passes [`guard::admin_guard`](super::guard) first: a foreign
//! `Host` or `Origin` gets 403, a missing or wrong token the same bare 401 whatever was sent,
//! a body that is not `application/json` 415, all before any body is read.
//!
//! Failure: binding fails at start (the caller refuses to run). Afterwards a request that
//! cannot reach the supervisor gets 503 with a JSON `error`; a bad body gets 400, a body over
//! `admin.max_body_bytes` 413. Nothing here logs the token.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use actix::Addr;
use actix_web::dev::ServerHandle;
use actix_web::http::header::{self, ContentType};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use actors::messages::{Filters, GetStatus, Pause, Restart, Resume, Status, UpdateFilters};
use actors::supervisor::Supervisor;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

use super::auth::{TokenCheck, unauthorized};
use super::config::AdminConfig;
use super::guard::{HostPolicy, LocalAddr, REFUSED_METRIC, admin_guard};
use super::view::{Observed, StatusView, readiness};

/// How long a handler waits for the supervisor before answering 503.
const SUPERVISOR_TIMEOUT: Duration = Duration::from_secs(5);

/// Set once the pipeline has started (it waits for Redis first; the API is up before that).
pub type PipelineCell = Arc<OnceLock<Addr<Supervisor>>>;

/// What every handler reads. `Send + Sync` (actix-web shares it with its worker thread).
pub struct AdminState {
    pub pipeline: PipelineCell,
    pub observed: watch::Receiver<Observed>,
    pub check: TokenCheck,
    /// The names `/admin/*` answers to (`Host`, `Origin`).
    pub hosts: HostPolicy,
    pub metrics: Option<PrometheusHandle>,
    pub metrics_require_token: bool,
    pub instance: String,
}

impl AdminState {
    pub(super) fn authorized(&self, req: &HttpRequest) -> bool {
        self.check.allows(authorization(req.headers()))
    }

    fn supervisor(&self) -> Result<&Addr<Supervisor>, ApiError> {
        self.pipeline.get().ok_or(ApiError::NotStarted)
    }

    async fn fresh_status(&self) -> Option<Status> {
        let sup = self.pipeline.get()?;
        match tokio::time::timeout(SUPERVISOR_TIMEOUT, sup.send(GetStatus)).await {
            Ok(Ok(Ok(s))) => Some(s),
            _ => None,
        }
    }
}

fn authorization(headers: &header::HeaderMap) -> Option<&[u8]> {
    headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())
}

/// A running admin server.
pub struct AdminServer {
    addr: SocketAddr,
    handle: ServerHandle,
    task: actix_rt::task::JoinHandle<std::io::Result<()>>,
}

impl AdminServer {
    /// Binds `cfg.listen` and starts serving. Must run inside an actix System.
    pub fn start(cfg: &AdminConfig, state: AdminState) -> std::io::Result<AdminServer> {
        let open = state.check.is_open();
        metrics::describe_counter!(
            REFUSED_METRIC,
            "Admin API requests refused before the token check or the handler, by reason: host (a Host that does not name this API), origin (a foreign Origin), content_type (a body that is not application/json)"
        );
        let data = web::Data::new(state);
        let limit = cfg.max_body_bytes;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(limit))
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(metrics_text))
                .service(
                    web::scope("/admin")
                        .wrap(from_fn(admin_guard))
                        .route("/status", web::get().to(status))
                        .route("/restart", web::post().to(restart))
                        .route("/pause", web::post().to(pause))
                        .route("/resume", web::post().to(resume))
                        .route("/filters", web::put().to(filters)),
                )
        })
        .on_connect(|io, ext| {
            if let Some(addr) = io
                .downcast_ref::<actix_web::rt::net::TcpStream>()
                .and_then(|s| s.local_addr().ok())
            {
                ext.insert(LocalAddr(addr));
            }
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(2)
        .client_request_timeout(Duration::from_secs(5))
        .bind(cfg.listen)?;
        let addr = server.addrs().first().copied().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "no address bound")
        })?;
        let server = server.run();
        let handle = server.handle();
        let task = actix_rt::spawn(server);
        info!(%addr, token_required = !open, "admin API listening");
        if open {
            warn!(%addr, "admin API has no token: every process on this host can use it");
        }
        Ok(AdminServer { addr, handle, task })
    }

    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets running requests finish (2 s at most), then returns.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        if let Err(e) = self.task.await {
            warn!(error = %e, "admin server task ended abnormally");
        }
    }
}

fn error(status: u16, message: &str) -> HttpResponse {
    let code = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(code).json(json!({ "error": message }))
}

fn count(endpoint: &'static str, outcome: &'static str) {
    metrics::counter!("jetstream_ingestor_admin_requests_total", "endpoint" => endpoint, "outcome" => outcome)
        .increment(1);
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body("ok\n")
}

async fn readyz(state: web::Data<AdminState>, req: HttpRequest) -> HttpResponse {
    let fresh = state.fresh_status().await;
    let observed = state.observed.borrow().clone();
    let status = fresh.as_ref().or(observed.status.as_ref());
    let (ready, reason) = readiness(status);
    let mut reply = if ready {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    // Details only for a request that would pass `/admin/*`'s host and origin checks and
    // the token: a page that rebinds its name gets the bare answer, like any probe.
    let local = req.conn_data::<LocalAddr>().map(|a| a.0.ip());
    let named = state
        .hosts
        .check(
            req.headers(),
            req.uri().authority().map(|a| a.as_str()),
            local,
        )
        .is_ok();
    if named && state.authorized(&req) {
        let view = StatusView::new(
            &observed,
            fresh.as_ref(),
            &state.instance,
            SystemTime::now(),
        );
        reply.json(json!({
            "ready": ready,
            "reason": reason,
            "state": view.state,
            "committed_cursor": view.committed_cursor,
            "lag_seconds": view.lag_seconds,
        }))
    } else {
        reply.content_type(ContentType::plaintext()).body(if ready {
            "ready\n"
        } else {
            "not ready\n"
        })
    }
}

async fn metrics_text(state: web::Data<AdminState>, req: HttpRequest) -> HttpResponse {
    if state.metrics_require_token && !state.authorized(&req) {
        metrics::counter!("jetstream_ingestor_admin_auth_failures_total").increment(1);
        return unauthorized();
    }
    match &state.metrics {
        Some(h) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(h.render()),
        None => error(503, "metrics recorder not installed in this process"),
    }
}

async fn status(state: web::Data<AdminState>) -> HttpResponse {
    let fresh = state.fresh_status().await;
    let observed = state.observed.borrow().clone();
    count("status", "ok");
    HttpResponse::Ok().json(StatusView::new(
        &observed,
        fresh.as_ref(),
        &state.instance,
        SystemTime::now(),
    ))
}

/// Why a command was not carried out.
#[derive(Debug)]
enum ApiError {
    BadRequest(String),
    NotStarted,
    Unavailable,
    /// `[ha]`: a standby does not run commands (409, naming who leads).
    Refused(actors::messages::Refused),
}

impl ApiError {
    fn outcome(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotStarted | ApiError::Unavailable => "unavailable",
            ApiError::Refused(_) => "refused",
        }
    }

    fn response(&self) -> HttpResponse {
        match self {
            ApiError::BadRequest(m) => error(400, m),
            ApiError::NotStarted => error(503, "pipeline not started yet (waiting for Redis)"),
            ApiError::Unavailable => error(503, "supervisor did not answer"),
            ApiError::Refused(
                r
                @ (actors::messages::Refused::Resetting | actors::messages::Refused::NotStored(_)),
            ) => error(503, &r.to_string()),
            ApiError::Refused(r) => error(409, &r.to_string()),
        }
    }
}

/// Counts the outcome and turns an error into its response.
fn answer(endpoint: &'static str, result: Result<HttpResponse, ApiError>) -> HttpResponse {
    match result {
        Ok(r) => {
            count(endpoint, "ok");
            r
        }
        Err(e) => {
            count(endpoint, e.outcome());
            e.response()
        }
    }
}

/// Sends `msg` to the supervisor, waiting at most [`SUPERVISOR_TIMEOUT`].
async fn ask<M>(state: &AdminState, msg: M) -> Result<M::Result, ApiError>
where
    M: actix::Message + Send + 'static,
    M::Result: Send,
    Supervisor: actix::Handler<M>,
{
    let sup = state.supervisor()?;
    match tokio::time::timeout(SUPERVISOR_TIMEOUT, sup.send(msg)).await {
        Ok(Ok(r)) => Ok(r),
        _ => Err(ApiError::Unavailable),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartBody {
    /// Dial exactly from this `time_us`; absent = the committed cursor (minus the rewind).
    cursor: Option<u64>,
}

/// An empty body is the default value; anything else must parse.
fn parse_body<T: Default + for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    if body.trim_ascii().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

async fn restart(state: web::Data<AdminState>, body: web::Bytes) -> HttpResponse {
    let result =
        async {
            let req: RestartBody = parse_body(&body)?;
            let session_id = ask(
                &state,
                Restart {
                    from_cursor: req.cursor,
                },
            )
            .await?
            .map_err(ApiError::Refused)?;
            info!(cursor = ?req.cursor, session_id, "admin: restart");
            Ok(HttpResponse::Accepted()
                .json(json!({ "session_id": session_id, "cursor": req.cursor })))
        }
        .await;
    answer("restart", result)
}

async fn pause(state: web::Data<AdminState>) -> HttpResponse {
    let result = ask(&state, Pause)
        .await
        .and_then(|r| r.map_err(ApiError::Refused))
        .map(|()| {
            info!("admin: pause");
            HttpResponse::Accepted().json(json!({ "accepted": "pause" }))
        });
    answer("pause", result)
}

async fn resume(state: web::Data<AdminState>) -> HttpResponse {
    let result = ask(&state, Resume)
        .await
        .and_then(|r| r.map_err(ApiError::Refused))
        .map(|()| {
            info!("admin: resume");
            HttpResponse::Accepted().json(json!({ "accepted": "resume" }))
        });
    answer("resume", result)
}

/// `PUT /admin/filters`: Jetstream's own names; unknown keys are refused (a typo must not
/// silently widen the subscription to everything).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FiltersBody {
    #[serde(rename = "wantedCollections", default)]
    wanted_collections: Vec<String>,
    #[serde(rename = "wantedDids", default)]
    wanted_dids: Vec<String>,
}

async fn filters(state: web::Data<AdminState>, body: web::Bytes) -> HttpResponse {
    let result = async {
        let req: FiltersBody = parse_body(&body)?;
        let filters = Filters {
            wanted_collections: req.wanted_collections,
            wanted_dids: req.wanted_dids,
        };
        let msg = UpdateFilters {
            filters: filters.clone(),
        };
        ask(&state, msg).await?.map_err(ApiError::BadRequest)?;
        info!(
            collections = filters.wanted_collections.len(),
            dids = filters.wanted_dids.len(),
            "admin: filters updated"
        );
        Ok(HttpResponse::Ok().json(json!({ "applied": filters })))
    }
    .await;
    answer("filters", result)
}
