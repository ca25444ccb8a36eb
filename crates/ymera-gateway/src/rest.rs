//! `POST /v1/<subject with dots as slashes>`: one NATS request per HTTP
//! request, for every endpoint in the [`Registry`](crate::registry::Registry).
//!
//! Order of checks: the subject must be routable (404), the client within
//! its rate limit (429), the body within `GATEWAY_MAX_BODY` (413); then the
//! request goes to NATS with the caller's `X-API-Key` / `Authorization`
//! and `traceparent` / `tracestate` headers, and the reply comes back as is
//! (the service's error code as the HTTP status). No reply within
//! `GATEWAY_REQUEST_TIMEOUT` is 503 `unavailable` with `reason: timeout`.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use async_nats::HeaderMap as NatsHeaders;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use sha2::{Digest, Sha256};
use ymera_core::client::transport_error;
use ymera_core::ratelimit::RateLimit;
use ymera_core::{Error, ErrorKind};

use crate::AppState;
use crate::registry::is_plain_subject;
use crate::reply::{error_response, nats_reply};

/// Headers passed on to NATS unchanged.
pub const FORWARDED_HEADERS: [&str; 4] =
    ["x-api-key", "authorization", "traceparent", "tracestate"];

/// The handler of `POST /v1/{*path}`.
pub async fn call(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> Response {
    let started = Instant::now();
    // The request's own parts: no copy of its headers.
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().strip_prefix("/v1/").unwrap_or("");
    let result = forward(&state, peer, path, &parts.headers, body).await;
    let response = match result {
        Ok(response) => response,
        Err(err) => error_response(&err),
    };
    record(response.status(), started);
    response
}

/// The request metrics; the handles of the common case (200) are looked up once.
fn record(status: axum::http::StatusCode, started: Instant) {
    static DURATION: OnceLock<metrics::Histogram> = OnceLock::new();
    static OK: OnceLock<metrics::Counter> = OnceLock::new();
    DURATION
        .get_or_init(
            || metrics::histogram!("ymera_gateway_request_duration_seconds", "route" => "rest"),
        )
        .record(started.elapsed().as_secs_f64());
    if status == axum::http::StatusCode::OK {
        OK.get_or_init(|| metrics::counter!("ymera_gateway_requests_total", "route" => "rest", "status" => "200"))
            .increment(1);
    } else {
        metrics::counter!("ymera_gateway_requests_total", "route" => "rest", "status" => status.as_u16().to_string())
            .increment(1);
    }
}

async fn forward(
    state: &AppState,
    peer: SocketAddr,
    path: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let subject = path.trim_matches('/').replace('/', ".");
    if !is_plain_subject(&subject) {
        return Err(unknown(&subject));
    }
    if !state.registry.contains(&subject) {
        state.registry.refresh_on_demand().await;
        if !state.registry.contains(&subject) {
            return Err(unknown(&subject));
        }
    }
    check_rate(state, peer, headers).await?;
    let limit = state.settings.max_body;
    let payload = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(limit))?;
    let mut request = async_nats::Request::new()
        .payload(payload)
        .timeout(Some(state.settings.request_timeout));
    let forwarded = nats_headers(headers);
    if !forwarded.is_empty() {
        request = request.headers(forwarded);
    }
    let message = state
        .nats
        .send_request(subject.clone(), request)
        .await
        .map_err(|e| transport_error(&subject, e))?;
    Ok(nats_reply(&message))
}

fn unknown(subject: &str) -> Error {
    Error::not_found(format!(
        "no endpoint {subject:?}: see GET /openapi.json for the API"
    ))
    .with_detail("subject", subject)
}

fn too_large(limit: usize) -> Error {
    Error::new(
        ErrorKind::PayloadTooLarge,
        format!("request body exceeds the limit of {limit} bytes"),
    )
    .with_detail("limit", limit)
}

/// The caller's credential and trace headers as NATS headers.
pub fn nats_headers(headers: &HeaderMap) -> NatsHeaders {
    let mut out = NatsHeaders::new();
    for name in FORWARDED_HEADERS {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            let canonical = match name {
                "x-api-key" => "X-API-Key",
                "authorization" => "Authorization",
                other => other,
            };
            out.insert(canonical, value);
        }
    }
    out
}

/// The rate-limit key of a request: a hash of its credential, else the
/// peer address.
pub fn client_key(peer: SocketAddr, headers: &HeaderMap) -> String {
    let credential = headers
        .get("x-api-key")
        .or_else(|| headers.get("authorization"))
        .map(|v| v.as_bytes());
    match credential {
        Some(secret) => {
            let digest = Sha256::digest(secret);
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            format!("c:{hex}")
        }
        None => format!("ip:{}", peer.ip()),
    }
}

async fn check_rate(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Result<(), Error> {
    let limit = RateLimit::new(state.settings.rate_limit, state.settings.rate_period);
    let key = client_key(peer, headers);
    state.limiter.check(&key, limit, 1).await.into_result()?;
    Ok(())
}
