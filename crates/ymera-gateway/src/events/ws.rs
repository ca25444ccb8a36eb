//! `GET /v1/events/ws`: the event stream over a WebSocket, with
//! permessage-deflate (RFC 7692) when the client offers it.
//!
//! axum's WebSocket (tungstenite 0.29) has no permessage-deflate, so this
//! route upgrades with `yawc`, which negotiates it: the gateway answers an
//! offer with `permessage-deflate; server_no_context_takeover;
//! client_no_context_takeover` (RFC 7692 lets a server ask both), so no
//! connection keeps deflate state between messages; the state comes from one
//! pool per process ([`super::EventHub`]) for the time of one message, and an
//! idle subscriber costs a few KiB, compressed or not. Messages under 256
//! bytes (ready, pings) go uncompressed. A client that offers nothing gets
//! plain frames.
//!
//! Frames: `{"type":"ready","subjects","last_seq"}`, then
//! `{"type":"events","events":[…],"last_seq"}`; a ping every
//! `GATEWAY_EVENTS_HEARTBEAT`; on an early end `{"type":"error","error":{…}}`
//! and a close frame (4429 `slow_consumer`, 4503 otherwise), after which the
//! connection waits (up to [`CLOSE_GRACE`]) for the client's close frame,
//! reading what the client sent: closing a socket with unread input makes
//! the kernel reset it, and the client would lose the frames still in
//! flight, the close frame with them. A frame the socket does not take
//! within [`STALL`] ends the connection.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use yawc::close::CloseCode;
use yawc::{Frame, HttpWebSocket, IncomingUpgrade, OpCode, Options};
use ymera_core::Error;

use super::{STALL, Stream, StreamQuery, record_ending};
use crate::AppState;
use crate::reply::error_response;

/// Largest frame a client may send (it has nothing to say but control frames).
const MAX_CLIENT_FRAME: usize = 64 * 1024;
/// Messages smaller than this go uncompressed.
const COMPRESSION_THRESHOLD: usize = 256;
/// How long a closing connection tries to get its last frames out.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The connection options: deflate without context takeover from the
/// process's pool, small buffers.
fn options(pool: &yawc::DeflatePool) -> Options {
    Options::default()
        .with_low_latency_compression()
        .server_no_context_takeover()
        .client_no_context_takeover()
        .with_deflate_pool(pool.clone())
        .with_compression_threshold(COMPRESSION_THRESHOLD)
        .with_max_payload_read(MAX_CLIENT_FRAME)
        .with_read_buffer_capacity(1024)
        .with_write_buffer_capacity(4096)
}

/// `GET /v1/events/ws`.
pub async fn websocket(
    State(state): State<AppState>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
    upgrade: Result<IncomingUpgrade, StatusCode>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return error_response(&Error::invalid_request(
            "GET /v1/events/ws needs a WebSocket upgrade (Sec-WebSocket-Version: 13); use GET /v1/events for SSE",
        ));
    };
    let stream = match Stream::open(&state, &headers, &query).await {
        Ok(stream) => stream,
        Err(err) => return error_response(&err),
    };
    let (response, socket) = match upgrade.upgrade(options(&stream.hub.deflate)) {
        Ok(parts) => parts,
        Err(err) => {
            return error_response(&Error::invalid_request(format!(
                "WebSocket upgrade refused: {err}"
            )));
        }
    };
    let heartbeat = state.settings.events_heartbeat;
    tokio::spawn(async move {
        match tokio::time::timeout(STALL, socket).await {
            Ok(Ok(socket)) => serve(socket, stream, heartbeat).await,
            Ok(Err(err)) => tracing::debug!(error = %err, "event socket upgrade failed"),
            Err(_) => tracing::debug!("event socket upgrade timed out"),
        }
    });
    response.map(Body::new).into_response()
}

async fn serve(mut socket: HttpWebSocket, mut stream: Stream, heartbeat: Duration) {
    let mut ready = stream.ready.clone();
    if let Value::Object(map) = &mut ready {
        map.insert("type".to_owned(), json!("ready"));
    }
    if send(&mut socket, Frame::text(ready.to_string()))
        .await
        .is_err()
    {
        return;
    }
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            next = stream.next() => match next {
                Ok(delivery) => {
                    if send(&mut socket, Frame::text(delivery.ws())).await.is_err() {
                        stalled(&mut socket).await;
                        return;
                    }
                }
                Err(err) => {
                    record_ending(&err);
                    close(&mut socket, &err).await;
                    return;
                }
            },
            _ = ticker.tick() => {
                if send(&mut socket, Frame::ping(Bytes::new())).await.is_err() {
                    stalled(&mut socket).await;
                    return;
                }
            }
            incoming = socket.next() => match incoming {
                None => return,
                Some(frame) if frame.opcode() == OpCode::Close => return,
                Some(_) => {}
            },
        }
    }
}

/// Sends and flushes one frame within [`STALL`].
async fn send(socket: &mut HttpWebSocket, frame: Frame) -> Result<(), ()> {
    match tokio::time::timeout(STALL, socket.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// The error frame and the close frame (4429 for `slow_consumer`, else 4503).
async fn close(socket: &mut HttpWebSocket, err: &Error) {
    let reason = err
        .details
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or(err.kind.slug())
        .to_owned();
    let code: u16 = if reason == "slow_consumer" {
        4429
    } else {
        4503
    };
    let text = json!({"type": "error", "error": {"code": err.kind.slug(), "message": err.message, "details": err.details}});
    closing(socket, Some(Frame::text(text.to_string())), code, &reason).await;
}

/// The closing handshake: `last` (if any) and the close frame, sent within
/// [`CLOSE_GRACE`], then [`await_close`].
async fn closing(socket: &mut HttpWebSocket, last: Option<Frame>, code: u16, reason: &str) {
    let sent = tokio::time::timeout(CLOSE_GRACE, async {
        if let Some(frame) = last {
            socket.feed(frame).await?;
        }
        socket
            .send(Frame::close(CloseCode::from(code), reason.as_bytes()))
            .await
    })
    .await;
    if matches!(sent, Ok(Ok(()))) {
        await_close(socket).await;
    }
}

/// The end of the closing handshake: reads (and drops) what the client sends
/// until its close frame, within [`CLOSE_GRACE`], so the socket is closed
/// with no unread input (which would reset it and lose the frames in flight).
async fn await_close(socket: &mut HttpWebSocket) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(frame) = socket.next().await {
            if frame.opcode() == OpCode::Close {
                break;
            }
        }
    })
    .await;
}

/// A socket that took no frame for [`STALL`]: the close frame is queued
/// behind what is pending, for a client that starts reading again within
/// [`CLOSE_GRACE`], and the connection is dropped.
async fn stalled(socket: &mut HttpWebSocket) {
    metrics::counter!("ymera_gateway_slow_consumers_total").increment(1);
    closing(socket, None, 4429, "slow_consumer").await;
}
