//! The one error type of the platform and its wire mapping (DESIGN §4).
//!
//! Every endpoint answers failures with the headers `Nats-Service-Error`
//! (human message) and `Nats-Service-Error-Code` (number) and the body
//! `{"error":{"code":"<slug>","message":"…","details":{…}}}`.
//! [`Error::from_reply`] decodes such a reply back into the typed error.

use std::fmt;

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Header carrying the human-readable error message.
pub const ERROR_HEADER: &str = "Nats-Service-Error";
/// Header carrying the numeric error code.
pub const ERROR_CODE_HEADER: &str = "Nats-Service-Error-Code";

/// The kinds of failure a client can observe, with their numeric codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// 400: the request cannot be parsed or is structurally wrong.
    InvalidRequest,
    /// 401: no valid credential.
    Unauthenticated,
    /// 403: the credential lacks the permission.
    Forbidden,
    /// 404: the named thing does not exist.
    NotFound,
    /// 409: a version or state conflict.
    Conflict,
    /// 413: the request exceeds a size limit.
    PayloadTooLarge,
    /// 422: well-formed but violates a rule or schema.
    ValidationFailed,
    /// 429: over a rate limit; `details.retry_after_ms` says when to retry.
    RateLimited,
    /// 500: a fault of the service; the message never carries internals.
    Internal,
    /// 503: a dependency is down or a circuit is open.
    Unavailable,
}

impl ErrorKind {
    /// Every kind, in code order.
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::InvalidRequest,
        ErrorKind::Unauthenticated,
        ErrorKind::Forbidden,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::PayloadTooLarge,
        ErrorKind::ValidationFailed,
        ErrorKind::RateLimited,
        ErrorKind::Internal,
        ErrorKind::Unavailable,
    ];

    /// The numeric code sent in `Nats-Service-Error-Code`.
    pub fn code(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::ValidationFailed => 422,
            ErrorKind::RateLimited => 429,
            ErrorKind::Internal => 500,
            ErrorKind::Unavailable => 503,
        }
    }

    /// The slug sent in the body's `error.code`.
    pub fn slug(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::ValidationFailed => "validation_failed",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Internal => "internal",
            ErrorKind::Unavailable => "unavailable",
        }
    }

    /// The kind for a numeric code, if it is one of ours.
    pub fn from_code(code: u16) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The kind for a slug, if it is one of ours.
    pub fn from_slug(slug: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.slug() == slug)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.slug())
    }
}

/// A failure as a client sees it: kind, message and structured details.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Error {
    /// What went wrong, as a code.
    pub kind: ErrorKind,
    /// A human message, safe to show to the caller.
    pub message: String,
    /// Structured details (an object; empty when there are none).
    pub details: Map<String, Value>,
}

/// Result with the platform error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with a message and no details.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            details: Map::new(),
        }
    }

    /// Adds one detail field.
    pub fn with_detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// 400 invalid_request.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidRequest, message)
    }

    /// 401 unauthenticated.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unauthenticated, message)
    }

    /// 403 forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Forbidden, message)
    }

    /// 404 not_found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, message)
    }

    /// 409 conflict.
    pub fn conflict(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Conflict, message)
    }

    /// 413 payload_too_large, with the limit and the actual size.
    pub fn payload_too_large(what: &str, size: usize, limit: usize) -> Self {
        Error::new(
            ErrorKind::PayloadTooLarge,
            format!("{what} is {size} bytes, over the limit of {limit} bytes"),
        )
        .with_detail("size", size)
        .with_detail("limit", limit)
    }

    /// 422 validation_failed with one entry per failing path.
    pub fn validation(violations: Vec<Violation>) -> Self {
        let message = match violations.as_slice() {
            [] => "validation failed".to_owned(),
            [one] => format!("{}: {}", one.path, one.message),
            [first, rest @ ..] => format!(
                "{}: {} (and {} more)",
                first.path,
                first.message,
                rest.len()
            ),
        };
        let list: Vec<Value> = violations
            .into_iter()
            .map(|v| json!({"path": v.path, "message": v.message}))
            .collect();
        Error::new(ErrorKind::ValidationFailed, message).with_detail("violations", list)
    }

    /// 429 rate_limited with `details.retry_after_ms`.
    pub fn rate_limited(retry_after_ms: u64) -> Self {
        Error::new(
            ErrorKind::RateLimited,
            format!("rate limit exceeded, retry after {retry_after_ms} ms"),
        )
        .with_detail("retry_after_ms", retry_after_ms)
    }

    /// 503 unavailable because a circuit breaker is open.
    pub fn circuit_open(key: &str, retry_after_ms: u64) -> Self {
        Error::new(
            ErrorKind::Unavailable,
            format!("circuit for {key} is open, retry after {retry_after_ms} ms"),
        )
        .with_detail("reason", "circuit_open")
        .with_detail("retry_after_ms", retry_after_ms)
    }

    /// 503 unavailable because a dependency is down.
    pub fn dependency_down(dependency: &str) -> Self {
        Error::new(
            ErrorKind::Unavailable,
            format!("{dependency} is unavailable"),
        )
        .with_detail("reason", "dependency_down")
        .with_detail("dependency", dependency)
    }

    /// 500 internal. `cause` is logged, never sent: the caller sees a fixed message.
    pub fn internal(cause: impl fmt::Display) -> Self {
        tracing::error!(cause = %cause, "internal error");
        Error::new(ErrorKind::Internal, "internal error")
    }

    /// The numeric code.
    pub fn code(&self) -> u16 {
        self.kind.code()
    }

    /// True when the reason detail says a circuit is open.
    pub fn is_circuit_open(&self) -> bool {
        self.details.get("reason").and_then(Value::as_str) == Some("circuit_open")
    }

    /// The JSON body `{"error":{"code","message","details"}}`.
    pub fn to_body(&self) -> Bytes {
        let body = json!({
            "error": {
                "code": self.kind.slug(),
                "message": self.message,
                "details": Value::Object(self.details.clone()),
            }
        });
        Bytes::from(body.to_string())
    }

    /// The two error headers.
    pub fn to_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        // Header values must be a single line.
        let message: String = self
            .message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        headers.insert(ERROR_HEADER, message.as_str());
        headers.insert(ERROR_CODE_HEADER, self.code().to_string().as_str());
        headers
    }

    /// Decodes a reply: the payload on success, the typed error when the
    /// reply carries the error headers.
    pub fn from_reply(headers: Option<&HeaderMap>, payload: &Bytes) -> Result<Bytes> {
        let Some(headers) = headers else {
            return Ok(payload.clone());
        };
        let Some(code) = headers.get(ERROR_CODE_HEADER) else {
            return Ok(payload.clone());
        };
        let code: u16 = code.as_str().trim().parse().unwrap_or(500);
        let header_message = headers
            .get(ERROR_HEADER)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        Err(Error::from_body(code, &header_message, payload))
    }

    fn from_body(code: u16, header_message: &str, payload: &Bytes) -> Error {
        let kind = ErrorKind::from_code(code).unwrap_or(if code >= 500 {
            ErrorKind::Internal
        } else {
            ErrorKind::InvalidRequest
        });
        let parsed: Option<ErrorBody> = serde_json::from_slice(payload).ok();
        match parsed {
            Some(body) => Error {
                kind: ErrorKind::from_slug(&body.error.code).unwrap_or(kind),
                message: body.error.message,
                details: body.error.details,
            },
            None => Error::new(kind, header_message),
        }
    }
}

/// One failing path of a validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    /// JSON Pointer or field name of the failing value.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl Violation {
    /// A violation at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Violation {
            path: path.into(),
            message: message.into(),
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorBodyInner,
}

#[derive(Deserialize)]
struct ErrorBodyInner {
    code: String,
    message: String,
    #[serde(default)]
    details: Map<String, Value>,
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::invalid_request(format!("malformed JSON: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_a_reply() {
        for kind in ErrorKind::ALL {
            let err = Error::new(kind, "boom").with_detail("x", 1);
            let headers = err.to_headers();
            assert_eq!(
                headers.get(ERROR_CODE_HEADER).map(|v| v.as_str()),
                Some(kind.code().to_string().as_str())
            );
            let decoded = Error::from_reply(Some(&headers), &err.to_body()).unwrap_err();
            assert_eq!(decoded, err);
        }
    }

    #[test]
    fn reply_without_error_headers_is_success() {
        let body = Bytes::from_static(b"{\"ok\":true}");
        assert_eq!(Error::from_reply(None, &body).unwrap(), body);
        assert_eq!(
            Error::from_reply(Some(&HeaderMap::new()), &body).unwrap(),
            body
        );
    }

    #[test]
    fn empty_body_falls_back_to_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(ERROR_HEADER, "no such thing");
        headers.insert(ERROR_CODE_HEADER, "404");
        let err = Error::from_reply(Some(&headers), &Bytes::new()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert_eq!(err.message, "no such thing");
    }

    #[test]
    fn internal_errors_hide_the_cause() {
        let err = Error::internal("password=hunter2 in connection string");
        assert_eq!(err.message, "internal error");
        assert!(!String::from_utf8_lossy(&err.to_body()).contains("hunter2"));
    }

    #[test]
    fn header_message_is_single_line() {
        let err = Error::invalid_request("line one\nline two");
        let headers = err.to_headers();
        assert_eq!(
            headers.get(ERROR_HEADER).map(|v| v.as_str()),
            Some("line one line two")
        );
    }
}
