//! Operating surfaces around the pipeline: the admin HTTP API (`server`, `guard`, `auth`,
//! `config`), its client and the `admin` CLI commands (`client`, `command`), the operator's
//! view of the status (`view`), and [`Surfaces`], which `app.rs` uses to start them with the
//! heartbeat (`crate::heartbeat`) and the Redis control stream (`crate::control`), feed them
//! status samples and stop them.
//!
//! Order: the API and the heartbeat start before the pipeline (which waits for Redis), so
//! `/healthz` answers and `/readyz` says "starting" meanwhile; the control stream starts once
//! the supervisor exists ([`Surfaces::attach`]).
//!
//! Failure: an admin address that cannot be bound stops the process at start
//! ([`SurfacesError`]); everything else degrades without stopping ingestion.

pub mod auth;
pub mod client;
pub mod command;
pub mod config;
pub mod guard;
pub mod server;
pub mod view;

use std::time::{Instant, SystemTime};

use actix::Addr;
use actors::messages::Status;
use actors::supervisor::Supervisor;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use crate::control::{ControlKeys, ControlStream, ControlTarget};
use crate::heartbeat::{Heartbeat, HeartbeatTarget};
use crate::settings::Settings;
use auth::TokenCheck;
use guard::HostPolicy;
use server::{AdminServer, AdminState, PipelineCell};
use view::{Observed, Sampler, lag_seconds};

#[derive(Debug, thiserror::Error)]
pub enum SurfacesError {
    #[error("admin.listen {addr}: cannot listen")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// The admin API, heartbeat and control stream of one running pipeline.
pub struct Surfaces {
    server: Option<AdminServer>,
    heartbeat: Option<Heartbeat>,
    control: Option<ControlStream>,
    control_target: Option<ControlTarget>,
    pipeline: PipelineCell,
    observed: watch::Sender<Observed>,
    sampler: Sampler,
}

impl Surfaces {
    /// Starts the admin API (if enabled) and the heartbeat (if enabled). Must run inside an
    /// actix System.
    pub fn start(
        settings: &Settings,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Surfaces, SurfacesError> {
        let instance = settings.instance_id();
        let (observed, observed_rx) = watch::channel(Observed::default());
        let pipeline = PipelineCell::default();
        let redis = &settings.redis;
        let server = if settings.admin.enabled {
            let state = AdminState {
                pipeline: pipeline.clone(),
                observed: observed_rx.clone(),
                check: TokenCheck::new(settings.admin.token.as_ref()),
                hosts: HostPolicy::new(&settings.admin),
                metrics,
                metrics_require_token: settings.admin.metrics_require_token,
                instance: instance.clone(),
            };
            Some(
                AdminServer::start(&settings.admin, state).map_err(|source| {
                    SurfacesError::Bind {
                        addr: settings.admin.listen,
                        source,
                    }
                })?,
            )
        } else {
            None
        };
        let heartbeat = settings.heartbeat.enabled.then(|| {
            Heartbeat::start(
                &settings.heartbeat,
                HeartbeatTarget {
                    redis: redis.target(),
                    key: format!("{}heartbeat", redis.key_prefix),
                    instance: instance.clone(),
                    connect_timeout: redis.connect_timeout,
                    response_timeout: redis.response_timeout,
                },
                observed_rx,
            )
        });
        let control_target = settings.admin.control_stream.then(|| ControlTarget {
            redis: redis.target(),
            keys: ControlKeys::new(&redis.key_prefix),
            instance,
            connect_timeout: redis.connect_timeout,
            response_timeout: redis.response_timeout,
            retry_min: redis.retry_min,
            retry_max: redis.retry_max,
        });
        Ok(Surfaces {
            server,
            heartbeat,
            control: None,
            control_target,
            pipeline,
            observed,
            sampler: Sampler::default(),
        })
    }

    /// The admin API's bound address, if it runs.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.server.as_ref().map(AdminServer::addr)
    }

    /// The pipeline is up: commands can reach it; the control stream starts.
    pub fn attach(&mut self, supervisor: Addr<Supervisor>) {
        let _ = self.pipeline.set(supervisor.clone());
        if let Some(target) = self.control_target.take() {
            self.control = Some(ControlStream::start(target, supervisor));
        }
    }

    /// A new status sample (every 250 ms from `app.rs`): rates, last event time, lag gauge.
    pub fn observe(&mut self, status: &Status) {
        let now = SystemTime::now();
        let observed = self.sampler.observe(Instant::now(), now, status);
        if let Some(lag) = lag_seconds(status.reader.committed_cursor, now) {
            metrics::gauge!("jetstream_ingestor_cursor_lag_seconds").set(lag);
        }
        metrics::gauge!("jetstream_ingestor_events_per_second").set(observed.events_per_second);
        self.observed.send_replace(observed);
    }

    /// Stops the control stream, the admin API (running requests finish) and the heartbeat
    /// (after a last `stopped` write).
    pub async fn stop(self) {
        if let Some(c) = self.control {
            c.stop();
        }
        if let Some(s) = self.server {
            s.stop().await;
        }
        if let Some(h) = self.heartbeat {
            h.stop().await;
        }
    }
}
