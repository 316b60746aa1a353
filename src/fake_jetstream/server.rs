//! The accept loop and the life of one TCP connection: read the HTTP request, refuse what
//! is not a valid `/subscribe` upgrade (404, 405, 426, 400), record the subscription, do the
//! WebSocket handshake and run the session; on shutdown, stop accepting and give sessions a
//! moment to send their Close frame.
//!
//! Talks to: [`super::http`] (request head), [`super::filter`] (query), [`super::session`]
//! (the WebSocket part), [`super::live`] (the generator task in generate mode).
//!
//! Failure: a failed `accept` is logged and retried after a short pause; a bad request or a
//! failed handshake ends that connection only and is recorded in its [`ConnectionEnd`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::{debug, info, warn};

use super::feed::SourceData;
use super::filter::SubscribeParams;
use super::http::{self, Prefixed};
use super::live;
use super::{ConnectionEnd, ConnectionRecord};

/// Time a client gets to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time sessions get to close cleanly on shutdown before they are aborted.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Jetstream v1's cap on a subscriber message.
const MAX_CLIENT_MESSAGE: usize = 10_000_000;

/// Everything the sessions of one server share.
pub(crate) struct ServerCtx {
    pub source: SourceData,
    /// Generate mode: (events/s, seed) for the generator task.
    pub generator: Option<(u32, u64)>,
    pub rate: Option<u32>,
    pub close_every: Option<u64>,
    pub close_at_end: bool,
    /// What `compress=true` subscribers' frames are compressed with.
    pub dictionary: zstd::dict::EncoderDictionary<'static>,
    /// Shift of generated times (file lines are shifted at load).
    pub clock_offset_us: i64,
    pub silent_after: Option<u64>,
    pub honor_max_message_size: bool,
    /// Connections start this much before the cursor asked for.
    pub resume_early_us: u64,
    pub shared: Arc<Shared>,
}

/// State the [`super::FakeJetstream`] handle reads while the server runs.
#[derive(Default)]
pub(crate) struct Shared {
    pub connections: Mutex<Vec<Arc<ConnState>>>,
    pub events_sent: AtomicU64,
}

impl Shared {
    fn register(&self, uri: &str, params: &SubscribeParams, end: ConnectionEnd) -> Arc<ConnState> {
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let conn = Arc::new(ConnState {
            id: connections.len() as u64,
            uri: uri.to_owned(),
            cursor: params.cursor,
            wanted_collections: params.wanted_collections.clone(),
            wanted_dids: params.wanted_dids.clone(),
            compress: params.compress,
            require_hello: params.require_hello,
            events_sent: AtomicU64::new(0),
            options_updates: AtomicU64::new(0),
            filter_changes_at: Mutex::new(Vec::new()),
            end: Mutex::new(end),
        });
        connections.push(Arc::clone(&conn));
        conn
    }

    pub fn snapshot(&self) -> Vec<ConnectionRecord> {
        let connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        connections.iter().map(|c| c.record()).collect()
    }
}

/// One `/subscribe` request, as it goes.
pub(crate) struct ConnState {
    /// Index in the connection list, used in logs.
    pub id: u64,
    uri: String,
    cursor: Option<u64>,
    wanted_collections: Vec<String>,
    wanted_dids: Vec<String>,
    compress: bool,
    require_hello: bool,
    pub events_sent: AtomicU64,
    pub options_updates: AtomicU64,
    filter_changes_at: Mutex<Vec<u64>>,
    end: Mutex<ConnectionEnd>,
}

impl ConnState {
    /// A new filter takes effect after `events_sent` events.
    pub fn filter_changed(&self, events_sent: u64) {
        self.filter_changes_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(events_sent);
    }

    pub fn set_end(&self, end: ConnectionEnd) {
        *self.end.lock().unwrap_or_else(PoisonError::into_inner) = end;
    }

    fn record(&self) -> ConnectionRecord {
        ConnectionRecord {
            uri: self.uri.clone(),
            cursor: self.cursor,
            wanted_collections: self.wanted_collections.clone(),
            wanted_dids: self.wanted_dids.clone(),
            compress: self.compress,
            require_hello: self.require_hello,
            options_updates: self.options_updates.load(Ordering::Relaxed),
            filter_changes_at: self
                .filter_changes_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            events_sent: self.events_sent.load(Ordering::Relaxed),
            end: self
                .end
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

/// Serves until `stop` turns true (or its sender is dropped).
pub(crate) async fn run(
    listener: TcpListener,
    ctx: Arc<ServerCtx>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    if let (SourceData::Live(hub), Some((rate, seed))) = (&ctx.source, ctx.generator) {
        tasks.spawn(live::run_generator(
            Arc::clone(hub),
            rate,
            seed,
            ctx.clock_offset_us,
            stop.clone(),
        ));
    }
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tasks.spawn(handle_connection(stream, peer, Arc::clone(&ctx), stop.clone()));
                }
                Err(err) => {
                    warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(err) = joined {
                    warn!(%err, "connection task failed");
                }
            }
        }
    }
    drop(listener);
    info!("fake jetstream stopping");
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            left = tasks.len(),
            "sessions did not close in time; aborting them"
        );
        tasks.shutdown().await;
    }
}

async fn handle_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ServerCtx>,
    stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (buf, head_len) =
        match tokio::time::timeout(HEAD_TIMEOUT, http::read_head(&mut stream)).await {
            Ok(Ok(read)) => read,
            Ok(Err(err)) => {
                debug!(%peer, %err, "no request head");
                let _ = http::respond(&mut stream, 400, "bad request", &[]).await;
                return;
            }
            Err(_) => {
                debug!(%peer, "request head timed out");
                return;
            }
        };
    let head = match http::parse_head(&buf[..head_len]) {
        Ok(head) => head,
        Err(why) => {
            let _ = http::respond(&mut stream, 400, why, &[]).await;
            return;
        }
    };
    if head.path() != "/subscribe" {
        debug!(%peer, target = head.target, "404");
        let _ = http::respond(
            &mut stream,
            404,
            "not found: this server only serves /subscribe",
            &[],
        )
        .await;
        return;
    }
    if head.method != "GET" {
        let _ = http::respond(&mut stream, 405, "method not allowed", &[("Allow", "GET")]).await;
        return;
    }
    if !head.is_websocket_upgrade() {
        let _ = http::respond(
            &mut stream,
            426,
            "/subscribe is a WebSocket endpoint",
            &[("Upgrade", "websocket")],
        )
        .await;
        return;
    }
    let params = match SubscribeParams::parse(head.query(), head.header("socket-encoding")) {
        Ok(params) => params,
        Err(message) => {
            info!(%peer, target = head.target, %message, "subscribe request rejected");
            let end = ConnectionEnd::Rejected {
                status: 400,
                message: message.clone(),
            };
            ctx.shared
                .register(&head.target, &SubscribeParams::default(), end);
            let _ = http::respond(&mut stream, 400, &message, &[]).await;
            return;
        }
    };
    let conn = ctx
        .shared
        .register(&head.target, &params, ConnectionEnd::Open);
    info!(
        conn = conn.id,
        %peer,
        uri = head.target,
        cursor = ?params.cursor,
        compress = params.compress,
        require_hello = params.require_hello,
        "subscriber connected"
    );
    let config = WebSocketConfig::default().max_message_size(Some(MAX_CLIENT_MESSAGE));
    // The head was read and checked above; tungstenite reads it again from `Prefixed`.
    let upgraded =
        tokio_tungstenite::accept_async_with_config(Prefixed::new(stream, buf), Some(config)).await;
    let end = match upgraded {
        Ok(ws) => super::session::run(ws, params, &ctx, &conn, stop).await,
        Err(err) => ConnectionEnd::HandshakeFailed(err.to_string()),
    };
    info!(conn = conn.id, end = ?end, sent = conn.events_sent.load(Ordering::Relaxed), "subscriber gone");
    conn.set_end(end);
}
