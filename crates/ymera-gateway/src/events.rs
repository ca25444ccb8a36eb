//! Event streams: `GET /v1/events` (Server-Sent Events) and
//! `GET /v1/events/ws` (WebSocket), both with `subjects=<pattern>[,…]`.
//!
//! Every event the platform publishes on `events.>` and `config.changed.>`
//! is stored in the JetStream stream `YMERA_EVENTS` (S2-compressed, at the
//! platform's replica count, kept `GATEWAY_EVENTS_MAX_AGE`); an event's id
//! is its stream sequence. A client that gives `Last-Event-ID` (SSE) or
//! `since=<seq>` gets its own ordered consumer from the next sequence, so it
//! resumes with no gap; a live client shares the process's one consumer
//! through a bounded broadcast ring, so 5,000 subscribers cost one consumer.
//!
//! Each pattern's area needs a permission of the caller (asked of
//! `security.authorize` at connect): `events.communication.*` comm:read,
//! `events.config.*` and `config.changed.*` config:read,
//! `events.drafting.*` drafting:read, `events.code-analysis.*`
//! analysis:run, anything else security:admin. A pattern the caller can see
//! nothing of is 403; events of areas it lacks are filtered out.
//!
//! Events go out in batches of up to `GATEWAY_EVENTS_BATCH_SIZE`, flushed
//! after `GATEWAY_EVENTS_FLUSH_INTERVAL`: one SSE message `event: events`
//! whose `id` is the batch's last sequence and whose data is the JSON array;
//! one WebSocket text frame `{"type":"events","events":[…],"last_seq"}`.
//! Idle streams get heartbeats (an SSE comment, a WebSocket ping). A client
//! that falls `GATEWAY_EVENTS_QUEUE` events behind is disconnected with the
//! reason `slow_consumer` (a final SSE `event: error`, or WebSocket close
//! 4429), so it never slows the others nor grows memory.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use ymera_core::config::AuthMode;
use ymera_core::{Error, ErrorKind};

use crate::AppState;
use crate::reply::error_response;

/// The stream.
pub const STREAM: &str = "YMERA_EVENTS";
/// What it stores.
pub const STREAM_SUBJECTS: [&str; 2] = ["events.>", "config.changed.>"];
/// Most patterns per client.
pub const MAX_PATTERNS: usize = 16;
/// Largest stream size.
const MAX_STREAM_BYTES: i64 = 1024 * 1024 * 1024;
/// A client whose socket takes no batch for this long is dropped.
const STALL: Duration = Duration::from_secs(10);

/// One stored event as clients see it.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    /// The stream sequence (the event id).
    pub seq: u64,
    /// The NATS subject.
    pub subject: String,
    /// When the stream stored it (RFC 3339).
    pub time: String,
    /// The body (JSON, else a string).
    pub data: Value,
}

/// The process's live feed and the stream.
pub struct EventHub {
    js: jetstream::Context,
    live: broadcast::Sender<Arc<StoredEvent>>,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub").finish_non_exhaustive()
    }
}

impl EventHub {
    /// Makes sure `YMERA_EVENTS` exists (updated in place) and starts the live feed.
    pub async fn start(
        nats: async_nats::Client,
        max_age: Duration,
        queue: usize,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<Arc<EventHub>, String> {
        let js = jetstream::new(nats.clone());
        let replicas = ymera_core::jetstream::replicas(&nats)
            .await
            .map_err(|e| e.to_string())?;
        let config = stream::Config {
            name: STREAM.to_owned(),
            description: Some("platform events for the gateway's event streams".to_owned()),
            subjects: STREAM_SUBJECTS.iter().map(|s| (*s).to_owned()).collect(),
            max_age,
            max_bytes: MAX_STREAM_BYTES,
            discard: stream::DiscardPolicy::Old,
            compression: Some(stream::Compression::S2),
            ..Default::default()
        };
        ymera_core::jetstream::ensure_stream(&js, config, replicas).await?;
        let (live, _) = broadcast::channel(queue.max(1));
        let hub = Arc::new(EventHub { js, live });
        tokio::spawn(hub.clone().feed(shutdown));
        Ok(hub)
    }

    /// The live feed: one ordered consumer from now on, into the broadcast ring.
    async fn feed(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            match self.consumer(None, &[]).await {
                Ok(mut messages) => loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        next = messages.next() => match next {
                            Some(Ok(event)) => {
                                let _ = self.live.send(Arc::new(event));
                            }
                            Some(Err(err)) => {
                                tracing::warn!(error = %err, "event feed failed; restarting");
                                break;
                            }
                            None => break,
                        }
                    }
                },
                Err(err) => tracing::warn!(error = %err, "event feed cannot start; retrying"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// An ordered consumer from `start` (`None`: new events only) on `filters`.
    async fn consumer(
        &self,
        start: Option<u64>,
        filters: &[String],
    ) -> Result<impl Stream<Item = Result<StoredEvent, String>> + Send + use<>, String> {
        let stream = self
            .js
            .get_stream(STREAM)
            .await
            .map_err(|e| e.to_string())?;
        let deliver_policy = match start {
            Some(seq) => consumer::DeliverPolicy::ByStartSequence {
                start_sequence: seq.max(1),
            },
            None => consumer::DeliverPolicy::New,
        };
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subjects: filters.to_vec(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let messages = consumer.messages().await.map_err(|e| e.to_string())?;
        Ok(messages.map(|next| {
            let message = next.map_err(|e| e.to_string())?;
            let info = message.info().map_err(|e| e.to_string())?;
            let nanos = info.published.unix_timestamp_nanos();
            let time = chrono::DateTime::from_timestamp_nanos(i64::try_from(nanos).unwrap_or(0))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let seq = info.stream_sequence;
            let data = serde_json::from_slice(&message.payload).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&message.payload).into_owned())
            });
            Ok(StoredEvent {
                seq,
                subject: message.subject.to_string(),
                time,
                data,
            })
        }))
    }

    /// The last sequence in the stream.
    async fn last_seq(&self) -> u64 {
        match self.js.get_stream(STREAM).await {
            Ok(mut stream) => stream
                .info()
                .await
                .map(|i| i.state.last_sequence)
                .unwrap_or(0),
            Err(_) => 0,
        }
    }
}

/// The query of both endpoints.
#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    /// Comma-separated subject patterns (default every event).
    pub subjects: Option<String>,
    /// Resume after this sequence.
    pub since: Option<u64>,
    /// A credential for clients that cannot set headers (EventSource, browsers' WebSocket).
    pub token: Option<String>,
    /// Same as `token`.
    pub api_key: Option<String>,
}

/// The area permission an event subject needs.
pub fn permission_for(subject: &str) -> &'static str {
    let mut tokens = subject.split('.');
    match (tokens.next(), tokens.next()) {
        (Some("config"), Some("changed")) => "config:read",
        (Some("events"), Some("communication")) => "comm:read",
        (Some("events"), Some("config")) => "config:read",
        (Some("events"), Some("drafting")) => "drafting:read",
        (Some("events"), Some("code-analysis")) => "analysis:run",
        _ => "security:admin",
    }
}

/// Every permission that could match events of `pattern`.
fn permissions_of_pattern(pattern: &str) -> BTreeSet<&'static str> {
    let all = [
        "config:read",
        "comm:read",
        "drafting:read",
        "analysis:run",
        "security:admin",
    ];
    let mut tokens = pattern.split('.');
    match (tokens.next(), tokens.next()) {
        (Some("config"), Some("changed" | "*" | ">")) | (Some(">"), _) | (Some("*"), _) => {
            if pattern.starts_with("config.changed") {
                BTreeSet::from(["config:read"])
            } else {
                all.into_iter().collect()
            }
        }
        (Some("events"), Some("*" | ">") | None) => all.into_iter().collect(),
        (Some("events"), Some(area)) => BTreeSet::from([permission_for(&format!("events.{area}"))]),
        _ => BTreeSet::new(),
    }
}

/// Whether `subject` matches the NATS pattern `pattern`.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Parses and checks `subjects=`: valid patterns inside the stream's subjects.
pub fn parse_patterns(raw: Option<&str>) -> Result<Vec<String>, Error> {
    let raw = raw.map(str::trim).filter(|r| !r.is_empty());
    let patterns: Vec<String> = match raw {
        None => STREAM_SUBJECTS.iter().map(|s| (*s).to_owned()).collect(),
        Some(raw) => raw.split(',').map(|p| p.trim().to_owned()).collect(),
    };
    if patterns.len() > MAX_PATTERNS {
        return Err(Error::invalid_request(format!(
            "at most {MAX_PATTERNS} subject patterns"
        )));
    }
    for pattern in &patterns {
        let tokens: Vec<&str> = pattern.split('.').collect();
        let well_formed = pattern.len() <= 256
            && tokens.iter().enumerate().all(|(i, t)| {
                (*t == ">" && i == tokens.len() - 1)
                    || *t == "*"
                    || (!t.is_empty()
                        && t.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
            });
        let inside = well_formed
            && STREAM_SUBJECTS.iter().any(|stream| {
                let prefix = stream.trim_end_matches(".>");
                pattern == prefix || pattern.starts_with(&format!("{prefix}."))
            });
        if !inside {
            return Err(Error::invalid_request(format!(
                "subject pattern {pattern:?} is not a pattern under events.> or config.changed.>"
            ))
            .with_detail("pattern", pattern.as_str()));
        }
    }
    Ok(patterns)
}

fn credential(headers: &HeaderMap, query: &StreamQuery) -> Option<String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(key) = header("x-api-key").filter(|k| !k.is_empty()) {
        return Some(key.to_owned());
    }
    if let Some(auth) = header("authorization").filter(|a| !a.is_empty()) {
        return Some(auth.to_owned());
    }
    query
        .token
        .clone()
        .or_else(|| query.api_key.clone())
        .filter(|t| !t.is_empty())
}

/// What a connection may see.
struct Subscription {
    patterns: Vec<String>,
    allowed: BTreeSet<&'static str>,
    since: Option<u64>,
}

impl Subscription {
    fn admits(&self, event: &StoredEvent) -> bool {
        self.patterns
            .iter()
            .any(|p| subject_matches(p, &event.subject))
            && self.allowed.contains(permission_for(&event.subject))
    }
}

async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    query: &StreamQuery,
) -> Result<Subscription, Error> {
    let patterns = parse_patterns(query.subjects.as_deref())?;
    let since = match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        Some(text) => Some(text.trim().parse::<u64>().map_err(|_| {
            Error::invalid_request("Last-Event-ID must be an event sequence number")
        })?),
        None => query.since,
    };
    let wanted: BTreeSet<&'static str> = patterns
        .iter()
        .flat_map(|p| permissions_of_pattern(p))
        .collect();
    let allowed = if state.config.auth == AuthMode::Off {
        wanted
    } else {
        let credential = credential(headers, query).ok_or_else(|| {
            Error::unauthenticated(
                "a credential is required (X-API-Key, Authorization: Bearer, or ?token=)",
            )
        })?;
        let checks = wanted.iter().map(|permission| {
            let body = json!({"credential": credential, "permission": permission});
            let client = ymera_core::client::ServiceClient::new(state.nats.clone())
                .with_timeout(state.settings.request_timeout);
            async move {
                let reply: Result<Value, Error> = client.request("security.authorize", &body).await;
                (*permission, reply)
            }
        });
        let mut allowed = BTreeSet::new();
        let mut authenticated = false;
        for (permission, reply) in futures::future::join_all(checks).await {
            let reply = reply?;
            if reply["principal"].is_object() {
                authenticated = true;
            }
            if reply["allowed"] == true {
                allowed.insert(permission);
            }
        }
        if !authenticated && allowed.is_empty() {
            return Err(Error::unauthenticated("the credential is not valid"));
        }
        allowed
    };
    if allowed.is_empty() {
        return Err(
            Error::forbidden("the credential may see no event of these subjects")
                .with_detail("subjects", patterns.join(",")),
        );
    }
    Ok(Subscription {
        patterns,
        allowed,
        since,
    })
}

/// What the producer task hands the writer.
enum Frame {
    Batch(Vec<Arc<StoredEvent>>),
}

/// Why a stream ended early.
type Ending = Arc<Mutex<Option<Error>>>;

fn slow_consumer() -> Error {
    Error::new(
        ErrorKind::RateLimited,
        "the client did not keep up with the event stream; reconnect with Last-Event-ID",
    )
    .with_detail("reason", "slow_consumer")
    .with_detail("retry_after_ms", 1000)
}

/// Starts the producer for `sub`: batches admitted events into a bounded queue.
async fn produce(
    state: &AppState,
    sub: Subscription,
) -> Result<(mpsc::Receiver<Frame>, Ending, u64), Error> {
    let hub = state
        .events
        .clone()
        .ok_or_else(|| Error::new(ErrorKind::Unavailable, "event streams are starting"))?;
    let batch_size = state.settings.events_batch_size;
    let flush = state.settings.events_flush_interval;
    let capacity = state.settings.events_queue.div_ceil(batch_size).max(1);
    let (tx, rx) = mpsc::channel(capacity);
    let ending: Ending = Arc::new(Mutex::new(None));
    let last = hub.last_seq().await;
    let end = ending.clone();
    metrics::gauge!("ymera_gateway_event_subscribers").increment(1.0);
    match sub.since {
        Some(since) => {
            let mut source = Box::pin(hub.consumer(Some(since + 1), &sub.patterns).await.map_err(
                |e| Error::new(ErrorKind::Unavailable, format!("cannot read {STREAM}: {e}")),
            )?);
            tokio::spawn(async move {
                let mut batch = Vec::new();
                loop {
                    let next = if batch.is_empty() {
                        source.next().await.map(Some)
                    } else {
                        match tokio::time::timeout(flush, source.next()).await {
                            Ok(next) => next.map(Some),
                            Err(_) => Some(None),
                        }
                    };
                    match next {
                        Some(Some(Ok(event))) => {
                            if sub.admits(&event) {
                                batch.push(Arc::new(event));
                            }
                            if batch.len() < batch_size {
                                continue;
                            }
                        }
                        Some(None) => {}
                        Some(Some(Err(err))) => {
                            set(
                                &end,
                                Error::new(ErrorKind::Unavailable, format!("{STREAM}: {err}")),
                            );
                            break;
                        }
                        None => break,
                    }
                    if batch.is_empty() {
                        continue;
                    }
                    let frame = Frame::Batch(std::mem::take(&mut batch));
                    match tokio::time::timeout(STALL, tx.send(frame)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break,
                        Err(_) => {
                            set(&end, slow_consumer());
                            break;
                        }
                    }
                }
                metrics::gauge!("ymera_gateway_event_subscribers").decrement(1.0);
            });
        }
        None => {
            let mut live = hub.live.subscribe();
            tokio::spawn(async move {
                let mut batch: Vec<Arc<StoredEvent>> = Vec::new();
                loop {
                    let next = if batch.is_empty() {
                        Ok(live.recv().await)
                    } else {
                        tokio::time::timeout(flush, live.recv()).await
                    };
                    match next {
                        Ok(Ok(event)) => {
                            if sub.admits(&event) {
                                batch.push(event);
                            }
                            if batch.len() < batch_size {
                                continue;
                            }
                        }
                        Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                            set(&end, slow_consumer());
                            break;
                        }
                        Ok(Err(broadcast::error::RecvError::Closed)) => break,
                        Err(_) => {}
                    }
                    if batch.is_empty() {
                        continue;
                    }
                    match tx.try_send(Frame::Batch(std::mem::take(&mut batch))) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            set(&end, slow_consumer());
                            break;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                    }
                }
                metrics::gauge!("ymera_gateway_event_subscribers").decrement(1.0);
            });
        }
    }
    Ok((rx, ending, last))
}

fn set(ending: &Ending, err: Error) {
    if err.details.get("reason").and_then(Value::as_str) == Some("slow_consumer") {
        metrics::counter!("ymera_gateway_slow_consumers_total").increment(1);
    }
    match ending.lock() {
        Ok(mut slot) => *slot = Some(err),
        Err(poisoned) => *poisoned.into_inner() = Some(err),
    }
}

fn take(ending: &Ending) -> Option<Error> {
    match ending.lock() {
        Ok(mut slot) => slot.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    }
}

fn error_json(err: &Error) -> String {
    String::from_utf8_lossy(&err.to_body()).into_owned()
}

/// `GET /v1/events`: Server-Sent Events.
pub async fn sse(
    State(state): State<AppState>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
) -> Response {
    let sub = match authorize(&state, &headers, &query).await {
        Ok(sub) => sub,
        Err(err) => return error_response(&err),
    };
    let patterns = sub.patterns.join(",");
    let (rx, ending, last) = match produce(&state, sub).await {
        Ok(parts) => parts,
        Err(err) => return error_response(&err),
    };
    let ready = Event::default()
        .event("ready")
        .data(json!({"subjects": patterns, "last_seq": last}).to_string());
    let batches =
        futures::stream::unfold((rx, ending, false), |(mut rx, ending, done)| async move {
            if done {
                return None;
            }
            match rx.recv().await {
                Some(Frame::Batch(events)) => {
                    let last = events.last().map(|e| e.seq).unwrap_or(0);
                    let data = serde_json::to_string(&events).unwrap_or_else(|_| "[]".to_owned());
                    let event = Event::default()
                        .event("events")
                        .id(last.to_string())
                        .data(data);
                    Some((Ok::<_, Infallible>(event), (rx, ending, false)))
                }
                None => {
                    let err = take(&ending)?;
                    let event = Event::default().event("error").data(error_json(&err));
                    Some((Ok(event), (rx, ending, true)))
                }
            }
        });
    let stream = futures::stream::once(async move { Ok::<_, Infallible>(ready) }).chain(batches);
    Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(state.settings.events_heartbeat)
                .text("heartbeat"),
        )
        .into_response()
}

/// `GET /v1/events/ws`: the same over a WebSocket.
pub async fn websocket(
    State(state): State<AppState>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let sub = match authorize(&state, &headers, &query).await {
        Ok(sub) => sub,
        Err(err) => return error_response(&err),
    };
    let patterns = sub.patterns.join(",");
    let (rx, ending, last) = match produce(&state, sub).await {
        Ok(parts) => parts,
        Err(err) => return error_response(&err),
    };
    let heartbeat = state.settings.events_heartbeat;
    upgrade
        .on_upgrade(move |socket| serve_socket(socket, rx, ending, patterns, last, heartbeat))
        .into_response()
}

async fn serve_socket(
    mut socket: WebSocket,
    mut rx: mpsc::Receiver<Frame>,
    ending: Ending,
    patterns: String,
    last: u64,
    heartbeat: Duration,
) {
    let ready = json!({"type": "ready", "subjects": patterns, "last_seq": last}).to_string();
    if send(&mut socket, Message::Text(ready.into()))
        .await
        .is_err()
    {
        return;
    }
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.tick().await;
    loop {
        tokio::select! {
            frame = rx.recv() => match frame {
                Some(Frame::Batch(events)) => {
                    let last_seq = events.last().map(|e| e.seq).unwrap_or(0);
                    let text = json!({"type": "events", "events": events, "last_seq": last_seq}).to_string();
                    if send(&mut socket, Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                None => {
                    let err = take(&ending).unwrap_or_else(|| Error::new(ErrorKind::Unavailable, "the event stream ended"));
                    let reason = err.details.get("reason").and_then(Value::as_str).unwrap_or(err.kind.slug()).to_owned();
                    let _ = send(&mut socket, Message::Text(json!({"type": "error", "error": {"code": err.kind.slug(), "message": err.message, "details": err.details}}).to_string().into())).await;
                    let code = if reason == "slow_consumer" { 4429 } else { 4503 };
                    let _ = send(&mut socket, Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                    return;
                }
            },
            _ = ticker.tick() => {
                if send(&mut socket, Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn send(socket: &mut WebSocket, message: Message) -> Result<(), ()> {
    match tokio::time::timeout(STALL, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_like_nats() {
        assert!(subject_matches(
            "events.>",
            "events.security.invalid_api_key"
        ));
        assert!(subject_matches(
            "config.changed.*.production",
            "config.changed.billing.production"
        ));
        assert!(!subject_matches(
            "config.changed.*.production",
            "config.changed.billing.staging"
        ));
        assert!(!subject_matches(
            "events.communication.*",
            "events.security.x"
        ));
    }

    #[test]
    fn only_stream_subjects_are_accepted() {
        assert!(parse_patterns(Some("events.>,config.changed.>")).is_ok());
        assert!(parse_patterns(Some("events.security.*")).is_ok());
        assert!(parse_patterns(Some("agent.x.inbox")).is_err());
        assert!(parse_patterns(Some(">")).is_err());
        assert!(parse_patterns(Some("events.>.x")).is_err());
        assert_eq!(parse_patterns(None).unwrap().len(), 2);
    }

    #[test]
    fn areas_need_their_permission() {
        assert_eq!(permission_for("config.changed.a.base"), "config:read");
        assert_eq!(
            permission_for("events.communication.delivered"),
            "comm:read"
        );
        assert_eq!(
            permission_for("events.security.invalid_api_key"),
            "security:admin"
        );
        assert_eq!(
            permissions_of_pattern("config.changed.>"),
            BTreeSet::from(["config:read"])
        );
        assert_eq!(permissions_of_pattern("events.>").len(), 5);
    }
}
