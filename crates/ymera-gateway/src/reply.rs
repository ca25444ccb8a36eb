//! HTTP responses in the platform's wire format: a NATS reply becomes a
//! 200 with its body, an error reply (or a gateway-side refusal) becomes
//! the DESIGN §4 body with the error's code as the HTTP status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ymera_core::{Error, ErrorKind};

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A platform error as an HTTP response (429 also carries `Retry-After`).
pub fn error_response(err: &Error) -> Response {
    let status = StatusCode::from_u16(err.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, [(header::CONTENT_TYPE, JSON)], err.to_body()).into_response();
    if err.kind == ErrorKind::RateLimited {
        let ms = err
            .details
            .get("retry_after_ms")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(1000);
        if let Ok(value) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

/// A NATS reply as an HTTP response: 200 with the body, or — when the
/// reply carries `Nats-Service-Error-Code` — that code as the status with
/// the service's JSON error body passed on unchanged.
pub fn nats_reply(message: &async_nats::Message) -> Response {
    match Error::from_reply(message.headers.as_ref(), &message.payload) {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, JSON)], body).into_response(),
        Err(err) => {
            let mut response = error_response(&err);
            if is_error_body(&message.payload) {
                *response.body_mut() = axum::body::Body::from(message.payload.clone());
            }
            response
        }
    }
}

fn is_error_body(payload: &Bytes) -> bool {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("error").map(serde_json::Value::is_object))
        .unwrap_or(false)
}
