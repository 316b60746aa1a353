//! One subscriber's WebSocket session: sends the events its filter wants (paced, compressed
//! if asked) while reading what the subscriber sends (`options_update`, pings, close) at the
//! same time, and ends the session the way the config says (close after N events, close at
//! the end of the file, close on shutdown, or go silent after N events: no more events, no
//! more pongs, the socket held open until the subscriber leaves).
//!
//! Backpressure: every frame is awaited into the socket (`feed`, flushed whenever the feed
//! has nothing ready), so a slow reader slows its own session and nothing else; nothing is
//! buffered per connection beyond tungstenite's write buffer.
//!
//! Failure: a send or read error ends this session only, recorded as its
//! [`ConnectionEnd::Error`]; so does a compressor that cannot be built (a subscriber that
//! asked for zstd never gets text frames).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tracing::{debug, info, warn};

use super::ConnectionEnd;
use super::feed::Feed;
use super::filter::{ClientMessage, Filter, SubscribeParams, parse_client_message};
use super::server::{ConnState, ServerCtx};

/// How long we wait for the subscriber's answer to our Close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

type Sink<S> = SplitSink<WebSocketStream<S>, Message>;
type Stream<S> = SplitStream<WebSocketStream<S>>;

/// Why the sending half stopped.
enum SendEnd {
    /// Close the connection with this frame; the session ends as `end`.
    Close(CloseCode, &'static str, ConnectionEnd),
    /// `silent_after` reached: stop talking, keep the socket.
    Silent,
    Failed(String),
}

/// Runs a session to its end and says how it ended.
pub(crate) async fn run<S>(
    ws: WebSocketStream<S>,
    params: SubscribeParams,
    ctx: &ServerCtx,
    conn: &ConnState,
    mut stop: watch::Receiver<bool>,
) -> ConnectionEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let (filter_tx, filter_rx) = watch::channel(Arc::new(params.filter.clone()));
    let outcome = tokio::select! {
        end = read_client(&mut stream, &filter_tx, conn) => Err(end),
        end = send_events(&mut sink, filter_rx, &params, ctx, conn) => Ok(end),
        () = wait_for_stop(&mut stop) => Ok(SendEnd::Close(
            CloseCode::Away,
            "server shutting down",
            ConnectionEnd::Shutdown,
        )),
    };
    match outcome {
        // The subscriber closed or vanished: let tungstenite finish the close handshake.
        Err(end) => {
            conn.set_end(end.clone());
            finish_close(&mut stream, &mut stop).await;
            end
        }
        Ok(SendEnd::Close(code, reason, end)) => {
            // Recorded before the frame leaves, so whoever sees the Close sees the record.
            conn.set_end(end.clone());
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            if let Err(err) = sink.send(Message::Close(Some(frame))).await {
                debug!(%err, "close frame not delivered");
            } else {
                finish_close(&mut stream, &mut stop).await;
            }
            end
        }
        Ok(SendEnd::Silent) => {
            conn.set_end(ConnectionEnd::Silent);
            info!(
                conn = conn.id,
                "going silent: no events, no pongs, socket kept open"
            );
            if let Ok(mut ws) = sink.reunite(stream) {
                hold_silently(ws.get_mut(), &mut stop).await;
            }
            ConnectionEnd::Silent
        }
        Ok(SendEnd::Failed(err)) => {
            // A send fails when the subscriber closes while we write: its Close frame may be
            // waiting on the read side, which tells a clean close from a real failure.
            let waiting = tokio::time::timeout(
                std::time::Duration::from_millis(500),
                read_client(&mut stream, &filter_tx, conn),
            )
            .await;
            match waiting {
                Ok(end @ ConnectionEnd::ClientClosed { code: Some(_) }) => end,
                _ => ConnectionEnd::Error(err),
            }
        }
    }
}

/// Keeps a silent connection open: reads the raw socket under the WebSocket layer and drops
/// what comes (so pings are never answered) until the subscriber closes it or the server
/// stops.
async fn hold_silently<S>(raw: &mut S, stop: &mut watch::Receiver<bool>)
where
    S: AsyncRead + Unpin,
{
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            read = raw.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            () = wait_for_stop(stop) => return,
        }
    }
}

async fn wait_for_stop(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Completes the close handshake: reads until the peer's side ends (tungstenite answers a
/// Close while we read), for at most [`CLOSE_GRACE`]. A shutdown cuts the wait short unless
/// the shutdown is what we are closing for.
async fn finish_close<S>(stream: &mut Stream<S>, stop: &mut watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let drain = async { while let Some(Ok(_)) = stream.next().await {} };
    let stopping = *stop.borrow();
    tokio::select! {
        _ = tokio::time::timeout(CLOSE_GRACE, drain) => {}
        () = wait_for_stop(stop), if !stopping => {}
    }
}

/// Handles what the subscriber sends; returns when it closes or the socket fails.
async fn read_client<S>(
    stream: &mut Stream<S>,
    filter_tx: &watch::Sender<Arc<Filter>>,
    conn: &ConnState,
) -> ConnectionEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(message) = stream.next().await {
        match message {
            Ok(Message::Text(text)) => match parse_client_message(text.as_str()) {
                Ok(ClientMessage::OptionsUpdate(filter)) => {
                    conn.options_updates.fetch_add(1, Ordering::Relaxed);
                    info!(conn = conn.id, "options_update applied");
                    filter_tx.send_replace(Arc::new(filter));
                }
                Ok(ClientMessage::Other(kind)) => {
                    info!(
                        conn = conn.id,
                        kind, "ignoring subscriber message of unknown type"
                    );
                }
                Err(err) => {
                    warn!(conn = conn.id, %err, "ignoring invalid subscriber message");
                }
            },
            Ok(Message::Binary(bytes)) => {
                warn!(
                    conn = conn.id,
                    len = bytes.len(),
                    "ignoring binary subscriber message"
                );
            }
            Ok(Message::Close(frame)) => {
                let code = frame.map(|f| u16::from(f.code));
                debug!(conn = conn.id, ?code, "subscriber closed");
                return ConnectionEnd::ClientClosed { code };
            }
            // Pings are answered by tungstenite as we read.
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
            Err(err) => return ConnectionEnd::Error(err.to_string()),
        }
    }
    ConnectionEnd::ClientClosed { code: None }
}

/// Sends events until a configured close, or forever (idle at the end of a file).
async fn send_events<S>(
    sink: &mut Sink<S>,
    mut filter_rx: watch::Receiver<Arc<Filter>>,
    params: &SubscribeParams,
    ctx: &ServerCtx,
    conn: &ConnState,
) -> SendEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut filter = Arc::clone(&filter_rx.borrow_and_update());
    if params.require_hello {
        debug!(
            conn = conn.id,
            "waiting for the subscriber's options_update"
        );
        if filter_rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        filter = Arc::clone(&filter_rx.borrow_and_update());
        conn.filter_changed(0);
    }
    let mut compressor = if params.compress {
        match zstd::bulk::Compressor::with_prepared_dictionary(&ctx.dictionary) {
            Ok(c) => Some(c),
            Err(err) => return SendEnd::Failed(format!("zstd compressor: {err}")),
        }
    } else {
        None
    };
    let mut pacer = ctx.rate.map(Pacer::new);
    let start = params.cursor.map(|c| c.saturating_sub(ctx.resume_early_us));
    let mut feed = Feed::new(&ctx.source, start);
    let mut sent: u64 = 0;
    // A line that is not an event shares the fate of the event before it.
    let mut previous_wanted = true;
    loop {
        let line = match feed.next_ready() {
            Some(line) => line,
            None => {
                if let Err(err) = sink.flush().await {
                    return SendEnd::Failed(err.to_string());
                }
                match feed.next().await {
                    Some(line) => line,
                    None if ctx.close_at_end => {
                        return SendEnd::Close(
                            CloseCode::Normal,
                            "end of file",
                            ConnectionEnd::EndOfFile,
                        );
                    }
                    None => {
                        debug!(conn = conn.id, sent, "end of source; idling");
                        return std::future::pending().await;
                    }
                }
            }
        };
        if filter_rx.has_changed().unwrap_or(false) {
            filter = Arc::clone(&filter_rx.borrow_and_update());
            conn.filter_changed(sent);
        }
        let wanted = match &line.meta {
            Some(meta) => {
                previous_wanted = filter.wants(meta);
                previous_wanted
            }
            None => previous_wanted,
        };
        if !wanted || (ctx.honor_max_message_size && filter.too_big(line.len())) {
            continue;
        }
        if let Some(pacer) = pacer.as_mut()
            && let Some(at) = pacer.next_slot()
        {
            if let Err(err) = sink.flush().await {
                return SendEnd::Failed(err.to_string());
            }
            tokio::time::sleep_until(at).await;
        }
        let message = match compressor.as_mut() {
            Some(c) => match c.compress(line.as_bytes()) {
                Ok(bytes) => Message::Binary(Bytes::from(bytes)),
                Err(err) => return SendEnd::Failed(format!("zstd: {err}")),
            },
            None => line.message(),
        };
        if let Err(err) = sink.feed(message).await {
            return SendEnd::Failed(err.to_string());
        }
        sent += 1;
        record_sent(ctx, conn);
        if ctx.close_every == Some(sent) {
            return SendEnd::Close(
                CloseCode::Normal,
                "close_every reached",
                ConnectionEnd::CloseEvery,
            );
        }
        if ctx.silent_after == Some(sent) {
            if let Err(err) = sink.flush().await {
                return SendEnd::Failed(err.to_string());
            }
            return SendEnd::Silent;
        }
    }
}

fn record_sent(ctx: &ServerCtx, conn: &ConnState) {
    conn.events_sent.fetch_add(1, Ordering::Relaxed);
    ctx.shared.events_sent.fetch_add(1, Ordering::Relaxed);
}

/// Spaces sends `1/rate` seconds apart on average, catching up after short delays but not
/// bursting after long ones.
struct Pacer {
    interval: Duration,
    next: Instant,
}

impl Pacer {
    fn new(rate: u32) -> Pacer {
        Pacer {
            interval: Duration::from_secs_f64(1.0 / f64::from(rate.max(1))),
            next: Instant::now(),
        }
    }

    /// Reserves the next send slot; returns when to send if that is in the future.
    fn next_slot(&mut self) -> Option<Instant> {
        let now = Instant::now();
        if now > self.next + Duration::from_secs(1) {
            self.next = now;
        }
        let slot = self.next;
        self.next += self.interval;
        (slot > now).then_some(slot)
    }
}
