//! Event streams: `GET /v1/events` (Server-Sent Events) and
//! `GET /v1/events/ws` (WebSocket, permessage-deflate), both with
//! `subjects=<pattern>[,…]`.
//!
//! Every event the platform publishes on `events.>` and `config.changed.>`
//! is stored in the JetStream stream `YMERA_EVENTS` (S2-compressed, at the
//! platform's replica count, kept `GATEWAY_EVENTS_MAX_AGE`); an event's id
//! is its stream sequence. A client that gives `Last-Event-ID` (SSE) or
//! `since=<seq>` gets its own ordered consumer from the next sequence, so it
//! resumes with no gap; a live client shares the process's one consumer
//! ([`hub`]): each batch is encoded once and its bytes shared by every
//! subscriber, so 5,000 subscribers cost one consumer and one encoding.
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
//! whose `id` is the batch's last sequence and whose data is the JSON array
//! ([`sse`]); one WebSocket text frame `{"type":"events","events":[…],"last_seq"}`
//! ([`ws`]). Idle streams get heartbeats (an SSE comment, a WebSocket ping).
//! A client more than `GATEWAY_EVENTS_QUEUE` events behind is ended with
//! the reason `slow_consumer` (a final SSE `event: error`, or WebSocket
//! close 4429); a socket that takes nothing for [`STALL`] is closed (the
//! WebSocket writer's timeout; for SSE the kernel's `TCP_USER_TIMEOUT`, set
//! on every accepted connection by [`tune_connection`]), so a stalled client
//! never slows the others nor grows memory.

pub mod hub;
pub mod sse;
pub mod ws;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use ymera_core::config::AuthMode;
use ymera_core::{Error, ErrorKind};

use crate::AppState;

pub use hub::EventHub;
pub use sse::sse;
pub use ws::websocket;

/// The stream.
pub const STREAM: &str = "YMERA_EVENTS";
/// What it stores.
pub const STREAM_SUBJECTS: [&str; 2] = ["events.>", "config.changed.>"];
/// Most patterns per client.
pub const MAX_PATTERNS: usize = 16;
/// A client whose socket takes nothing for this long is dropped.
pub const STALL: Duration = Duration::from_secs(10);

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
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    patterns: Vec<String>,
    allowed: BTreeSet<&'static str>,
    since: Option<u64>,
}

impl Subscription {
    fn admits(&self, subject: &str) -> bool {
        self.patterns.iter().any(|p| subject_matches(p, subject))
            && self.allowed.contains(permission_for(subject))
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

fn slow_consumer() -> Error {
    Error::new(
        ErrorKind::RateLimited,
        "the client did not keep up with the event stream; reconnect with Last-Event-ID",
    )
    .with_detail("reason", "slow_consumer")
    .with_detail("retry_after_ms", 1000)
}

/// Counts an ending: slow consumers by name.
fn record_ending(err: &Error) {
    if err.details.get("reason").and_then(Value::as_str) == Some("slow_consumer") {
        metrics::counter!("ymera_gateway_slow_consumers_total").increment(1);
    }
}

/// The DESIGN §4 error body.
fn error_json(err: &Error) -> String {
    String::from_utf8_lossy(&err.to_body()).into_owned()
}

/// An authorized subscription and its source, subscribed before the
/// response starts (so `last_seq` of the ready message has no gap after it).
pub(crate) struct Stream {
    hub: Arc<EventHub>,
    sub: Subscription,
    source: hub::Source,
    ready: Value,
    _gauge: SubscriberGauge,
}

impl Stream {
    /// Authorizes the caller and subscribes.
    async fn open(
        state: &AppState,
        headers: &HeaderMap,
        query: &StreamQuery,
    ) -> Result<Stream, Error> {
        let sub = authorize(state, headers, query).await?;
        let hub = state
            .events
            .clone()
            .ok_or_else(|| Error::new(ErrorKind::Unavailable, "event streams are starting"))?;
        let source = hub.source(&sub).await?;
        let last = hub.last_seq().await;
        let ready = json!({"subjects": sub.patterns.join(","), "last_seq": last});
        Ok(Stream {
            hub,
            sub,
            source,
            ready,
            _gauge: SubscriberGauge::new(),
        })
    }

    async fn next(&mut self) -> Result<hub::Delivery, Error> {
        self.source.next(&self.hub, &self.sub).await
    }
}

/// `ymera_gateway_event_subscribers` while a stream is open.
struct SubscriberGauge;

impl SubscriberGauge {
    fn new() -> SubscriberGauge {
        metrics::gauge!("ymera_gateway_event_subscribers").increment(1.0);
        SubscriberGauge
    }
}

impl Drop for SubscriberGauge {
    fn drop(&mut self) {
        metrics::gauge!("ymera_gateway_event_subscribers").decrement(1.0);
    }
}

/// Applied to every accepted connection (`axum::serve::ListenerExt::tap_io`):
/// no Nagle delay (a batch goes out when it is written), and
/// `TCP_USER_TIMEOUT` = [`STALL`], so the kernel ends a connection whose
/// peer took none of its data for that long (a stalled event-stream client:
/// hyper stops polling a body whose socket is full, so only the socket can
/// time the write out).
pub fn tune_connection(tcp: &mut tokio::net::TcpStream) {
    let _ = tcp.set_nodelay(true);
    if let Err(err) = socket2::SockRef::from(&*tcp).set_tcp_user_timeout(Some(STALL)) {
        tracing::debug!(error = %err, "TCP_USER_TIMEOUT not set");
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
