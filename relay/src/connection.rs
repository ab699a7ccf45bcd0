//! One server's WebSocket: the handshake that proves its name, then one task that reads
//! frames, writes what others queued for it, pings it, and closes it when it misbehaves.
//! Whatever ends this connection ends nothing else.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use hearth_relay_proto::answer::close;
use hearth_relay_proto::auth;
use hearth_relay_proto::frame::{Challenge, Frame, VERSION, Welcome};
use tokio::sync::mpsc;

use crate::AppState;
use crate::hub::{Conn, Hub, until_shutdown};
use crate::metrics::CloseReason;
use crate::ratelimit::ConnLimiter;

/// tungstenite's read buffer is allocated up front for every connection (128 KiB by default);
/// small frames need far less, and a large one grows it as needed.
const READ_BUFFER: usize = 4 * 1024;
/// Written frames are gathered up to this size before a write to the socket.
const WRITE_BUFFER: usize = 64 * 1024;
/// Most frames and bytes gathered into one flush.
const BATCH_FRAMES: usize = 128;
const BATCH_BYTES: usize = 256 * 1024;
/// Time allowed for a close frame to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

/// `GET /_hearth/relay`: upgrades to the relay protocol.
pub async fn upgrade(State(state): State<Arc<AppState>>, ws: WebSocketUpgrade) -> Response {
    let hub = state.hub.clone();
    if hub.is_shutting_down() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the relay is shutting down",
        )
            .into_response();
    }
    let max = hub.limits.max_frame_bytes;
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade(|e| tracing::debug!("websocket upgrade failed: {e}"))
        .on_upgrade(move |socket| run(hub, socket))
}

/// Why the handshake ended without a connection.
struct Refusal {
    code: u16,
    reason: String,
}

async fn run(hub: Arc<Hub>, socket: WebSocket) {
    let _task = hub.task();
    let (mut sink, mut stream) = socket.split();
    let mut shutdown = hub.shutdown_signal();
    let handshake = tokio::select! {
        h = handshake(&hub, &mut sink, &mut stream) => h,
        _ = until_shutdown(&mut shutdown) => Err(Refusal {
            code: close::GOING_AWAY,
            reason: "the relay is shutting down".into(),
        }),
    };
    let (conn, rx) = match handshake {
        Ok(c) => c,
        Err(refusal) => {
            hub.metrics.refused.fetch_add(1, Relaxed);
            hub.metrics.closed(match refusal.code {
                close::GOING_AWAY => CloseReason::Shutdown,
                close::PROTOCOL_ERROR => CloseReason::Protocol,
                _ => CloseReason::AuthFailed,
            });
            tracing::info!(reason = %refusal.reason, "connection refused");
            send_close(&mut sink, &mut stream, refusal.code, &refusal.reason).await;
            return;
        }
    };
    hub.metrics.accepted.fetch_add(1, Relaxed);
    let queued = hub.register(&conn);
    tracing::info!(server = %conn.name, id = conn.id, queued, "server connected");
    let welcome = Welcome {
        name: &conn.name,
        queued: u32::try_from(queued).unwrap_or(u32::MAX),
    }
    .encode();
    let (reason, detail) = match welcome {
        Ok(w) => match tokio::time::timeout(
            hub.limits.idle_timeout,
            sink.send(Message::Binary(w.into())),
        )
        .await
        {
            Ok(Ok(())) => serve(&hub, &conn, &mut sink, &mut stream, rx).await,
            _ => (CloseReason::PeerClosed, String::new()),
        },
        Err(e) => (CloseReason::Protocol, e.to_string()),
    };
    hub.unregister(&conn);
    hub.metrics.closed(reason);
    tracing::info!(server = %conn.name, id = conn.id, reason = reason.as_str(), %detail, "server disconnected");
    if let Some(code) = close_code(reason) {
        let text = if detail.is_empty() {
            reason.as_str().replace('_', " ")
        } else {
            detail
        };
        send_close(&mut sink, &mut stream, code, &text).await;
    }
}

async fn handshake(
    hub: &Arc<Hub>,
    sink: &mut Sink,
    stream: &mut Stream,
) -> Result<(Arc<Conn>, mpsc::Receiver<Bytes>), Refusal> {
    let refuse = |code, reason: String| Refusal { code, reason };
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce)
        .map_err(|e| refuse(close::GOING_AWAY, format!("no randomness: {e}")))?;
    let challenge = Challenge {
        version: VERSION,
        nonce,
        max_frame_bytes: u32::try_from(hub.limits.max_frame_bytes).unwrap_or(u32::MAX),
    };
    let limit = hub.limits.auth_timeout;
    let exchange = async {
        sink.send(Message::Binary(challenge.encode().into()))
            .await
            .map_err(|_| refuse(close::AUTH_FAILED, "cannot send the challenge".into()))?;
        loop {
            match stream.next().await {
                Some(Ok(Message::Binary(b))) => {
                    hub.metrics
                        .bytes_received
                        .fetch_add(b.len() as u64, Relaxed);
                    return Ok(b);
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Err(refuse(
                        close::PROTOCOL_ERROR,
                        "text frames are not part of the protocol".into(),
                    ));
                }
                _ => return Err(refuse(close::AUTH_FAILED, "closed before the hello".into())),
            }
        }
    };
    let hello = tokio::time::timeout(limit, exchange).await.map_err(|_| {
        refuse(
            close::AUTH_FAILED,
            format!("no hello within {} ms", limit.as_millis()),
        )
    })??;
    let Ok(Frame::Hello(h)) = Frame::decode(&hello) else {
        return Err(refuse(close::AUTH_FAILED, "expected a hello frame".into()));
    };
    auth::verify_hello(&h, &nonce, hub.origins())
        .map_err(|e| refuse(close::AUTH_FAILED, format!("{}: {e}", short(h.name))))?;
    let (conn, rx) = Conn::new(
        hub.next_conn_id(),
        h.name.to_owned(),
        hub.limits.outbound_max_bytes,
    );
    Ok((conn, rx))
}

/// The authenticated connection's loop; returns why it ended.
async fn serve(
    hub: &Arc<Hub>,
    conn: &Arc<Conn>,
    sink: &mut Sink,
    stream: &mut Stream,
    mut rx: mpsc::Receiver<Bytes>,
) -> (CloseReason, String) {
    let limits = &hub.limits;
    let mut shutdown = hub.shutdown_signal();
    let mut limiter = ConnLimiter::new(
        limits.rate_frames,
        limits.rate_bytes,
        limits.max_frame_bytes,
        Instant::now(),
    );
    // A live peer must get a ping, and time to answer it, before it could count as idle.
    let ping_every = limits
        .ping_interval
        .min(limits.idle_timeout / 2)
        .max(Duration::from_millis(10));
    let check_every = ping_every;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + check_every, check_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();
    let mut last_ping = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = conn.kicked.notified() => {
                return (conn.close_reason().unwrap_or(CloseReason::Protocol), String::new());
            }
            _ = until_shutdown(&mut shutdown) => {
                // Answers already queued for this server (202s among them) go out first.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain_outbound(hub, conn, sink, &mut rx)).await;
                return (CloseReason::Shutdown, "the relay is shutting down".into());
            }
            Some(first) = rx.recv() => {
                // A write blocked by a peer that does not read ends when the relay gives up
                // on it: on the stall limit, or as soon as its buffer overflows (a kick).
                let written = tokio::select! {
                    w = tokio::time::timeout(limits.idle_timeout, write_batch(hub, conn, sink, first, &mut rx)) => w,
                    _ = conn.kicked.notified() => {
                        return (conn.close_reason().unwrap_or(CloseReason::Protocol), String::new());
                    }
                };
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return (CloseReason::PeerClosed, String::new()),
                    Err(_) => return (CloseReason::SlowReader, "writes stalled".into()),
                }
            }
            msg = stream.next() => {
                let now = Instant::now();
                last_seen = now;
                match msg {
                    Some(Ok(Message::Binary(b))) => {
                        hub.metrics.bytes_received.fetch_add(b.len() as u64, Relaxed);
                        if !limiter.allow(b.len(), now) {
                            return (CloseReason::RateLimited, String::new());
                        }
                        if let Err(e) = hub.on_frame(conn, b) {
                            return (CloseReason::Protocol, e.to_string());
                        }
                    }
                    Some(Ok(Message::Ping(p) | Message::Pong(p))) => {
                        if !limiter.allow(p.len(), now) {
                            return (CloseReason::RateLimited, String::new());
                        }
                    }
                    Some(Ok(Message::Text(_))) => {
                        return (CloseReason::Protocol, "text frames are not part of the protocol".into());
                    }
                    Some(Ok(Message::Close(_))) | None => return (CloseReason::PeerClosed, String::new()),
                    Some(Err(e)) => return classify(e),
                }
            }
            _ = tick.tick() => {
                if last_seen.elapsed() >= limits.idle_timeout {
                    return (CloseReason::Idle, format!("nothing received for {} ms", limits.idle_timeout.as_millis()));
                }
                if last_ping.elapsed() >= ping_every {
                    last_ping = Instant::now();
                    let ping = tokio::time::timeout(limits.idle_timeout, sink.send(Message::Ping(Bytes::new()))).await;
                    if !matches!(ping, Ok(Ok(()))) {
                        return (CloseReason::PeerClosed, String::new());
                    }
                }
            }
        }
    }
}

/// Writes `first` and whatever else is already queued, then flushes once.
async fn write_batch(
    hub: &Hub,
    conn: &Conn,
    sink: &mut Sink,
    first: Bytes,
    rx: &mut mpsc::Receiver<Bytes>,
) -> Result<(), axum::Error> {
    let mut total = first.len();
    let mut frames = 1;
    let result = async {
        sink.feed(Message::Binary(first)).await?;
        while frames < BATCH_FRAMES && total < BATCH_BYTES {
            let Ok(next) = rx.try_recv() else { break };
            total += next.len();
            frames += 1;
            sink.feed(Message::Binary(next)).await?;
        }
        sink.flush().await
    }
    .await;
    conn.written(total);
    hub.metrics.bytes_sent.fetch_add(total as u64, Relaxed);
    result
}

async fn drain_outbound(hub: &Hub, conn: &Conn, sink: &mut Sink, rx: &mut mpsc::Receiver<Bytes>) {
    while let Ok(first) = rx.try_recv() {
        if write_batch(hub, conn, sink, first, rx).await.is_err() {
            return;
        }
    }
}

fn classify(e: axum::Error) -> (CloseReason, String) {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let inner = e.into_inner();
    match inner.downcast_ref::<WsError>() {
        Some(WsError::Capacity(c)) => (CloseReason::TooBig, c.to_string()),
        Some(WsError::Protocol(p)) => (CloseReason::Protocol, p.to_string()),
        Some(WsError::Utf8(_)) => (CloseReason::Protocol, "invalid UTF-8".into()),
        _ => (CloseReason::PeerClosed, inner.to_string()),
    }
}

fn close_code(reason: CloseReason) -> Option<u16> {
    Some(match reason {
        CloseReason::PeerClosed => return None,
        CloseReason::AuthFailed => close::AUTH_FAILED,
        CloseReason::Replaced => close::REPLACED,
        CloseReason::RateLimited => close::RATE_LIMITED,
        CloseReason::Idle => close::IDLE,
        CloseReason::SlowReader => close::SLOW_READER,
        CloseReason::TooBig => close::TOO_BIG,
        CloseReason::Protocol => close::PROTOCOL_ERROR,
        CloseReason::Shutdown => close::GOING_AWAY,
    })
}

async fn send_close(sink: &mut Sink, stream: &mut Stream, code: u16, reason: &str) {
    // A close reason is at most 123 bytes.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: reason[..end].into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if sink.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        // Read (and drop) what the peer still sends until it answers the close: closing the
        // socket with unread data would reset it, and the peer would lose the close frame
        // that tells it why.
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// A name shortened for log lines and close reasons.
fn short(name: &str) -> String {
    let mut end = name.len().min(16);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    if end < name.len() {
        format!("{}…", &name[..end])
    } else {
        name.to_owned()
    }
}
