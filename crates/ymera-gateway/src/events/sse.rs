//! `GET /v1/events`: Server-Sent Events.
//!
//! `event: ready` (`{subjects, last_seq}`), then `event: events` messages
//! (the shared bytes of the live feed's batch, or the subscriber's own
//! selection), `:heartbeat` comments every `GATEWAY_EVENTS_HEARTBEAT`, and
//! on an early end a final `event: error` with the DESIGN §4 body. The body
//! is written straight from those `Bytes` (no per-subscriber encoding).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;

use super::{Stream, StreamQuery, error_json, record_ending};
use crate::AppState;
use crate::reply::error_response;

/// Hyper not asking for the next frame this long means the socket is full.
const STALLED_AFTER: Duration = Duration::from_secs(1);

/// `GET /v1/events`.
pub async fn sse(
    State(state): State<AppState>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
) -> Response {
    let stream = match Stream::open(&state, &headers, &query).await {
        Ok(stream) => stream,
        Err(err) => return error_response(&err),
    };
    let ready = Bytes::from(format!("event: ready\ndata: {}\n\n", stream.ready));
    let beat = state.settings.events_heartbeat;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let body = Writer {
        stream,
        ticker,
        handed_at: None,
        done: false,
    };
    let rest = futures::stream::unfold(body, |mut writer| async move {
        let frame = writer.next().await?;
        Some((Ok::<_, Infallible>(frame), writer))
    });
    let frames = futures::stream::once(async move { Ok::<_, Infallible>(ready) }).chain(rest);
    let mut response = Body::from_stream(frames).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The subscriber's side of the body.
struct Writer {
    stream: Stream,
    ticker: tokio::time::Interval,
    /// When the last frame went to hyper, while hyper has not asked for the
    /// next one (hyper asks at once unless the socket is full).
    handed_at: Option<Instant>,
    done: bool,
}

impl Writer {
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        self.handed_at = None;
        let frame = tokio::select! {
            next = self.stream.next() => match next {
                Ok(delivery) => delivery.sse(),
                Err(err) => {
                    record_ending(&err);
                    self.done = true;
                    Bytes::from(format!("event: error\ndata: {}\n\n", error_json(&err)))
                }
            },
            _ = self.ticker.tick() => Bytes::from_static(b":heartbeat\n\n"),
        };
        self.handed_at = Some(Instant::now());
        Some(frame)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Dropped while hyper had not asked for the next frame for a while
        // (its buffer and the socket full): the kernel's write timeout
        // (`TCP_USER_TIMEOUT`, [`super::STALL`]) ended a stalled client. A client
        // that leaves while its stream waits for events is not counted.
        if !self.done && self.handed_at.is_some_and(|t| t.elapsed() >= STALLED_AFTER) {
            metrics::counter!("ymera_gateway_slow_consumers_total").increment(1);
        }
    }
}
