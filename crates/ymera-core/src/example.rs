//! A small example service built on the runtime. It proves the runtime in
//! tests and serves as the "example endpoint" of `ymera bench health`.
//!
//! Endpoints of service `example`:
//! - `example.echo`: replies with the request body.
//! - `example.slow` `{"ms": N}`: sleeps N ms (≤ 60 000), then replies `{"slept_ms": N}`.
//! - `example.fail` `{"code": 404}`: fails with that error code.
//! - `example.panic`: the handler panics (the caller gets 500; the service lives on).
//! - `example.trace`: replies `{"trace_id": …}`, the W3C trace id of the request's
//!   span (null unless traces are exported), to check context propagation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};
use crate::runtime::{Call, Open, Raw, ServiceBuilder};

/// The example service's name.
pub const NAME: &str = "example";

/// `example.slow` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowRequest {
    /// How long to sleep (≤ 60 000 ms).
    pub ms: u64,
}

/// `example.slow` reply.
#[derive(Debug, Serialize)]
pub struct SlowReply {
    /// How long it slept.
    pub slept_ms: u64,
}

/// `example.fail` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    /// The error code to answer with.
    pub code: u16,
}

/// `example.trace` reply.
#[derive(Debug, Serialize)]
pub struct TraceReply {
    /// The W3C trace id of the request's span, when traces are exported.
    pub trace_id: Option<String>,
}

/// The example service with its five endpoints.
pub fn service() -> ServiceBuilder {
    ServiceBuilder::new(
        NAME,
        env!("CARGO_PKG_VERSION"),
        "Example service of the Ymera runtime",
    )
    .route("example.echo", &(), echo)
    .route("example.slow", &(), slow)
    .route("example.fail", &(), fail)
    .route("example.trace", &(), trace)
    .route("example.panic", &(), panic)
}

/// Replies with the request body.
pub async fn echo(_: (), _: Call<Open>, body: Raw) -> Result<Raw, Error> {
    Ok(body)
}

async fn slow(_: (), _: Call<Open>, req: SlowRequest) -> Result<SlowReply, Error> {
    if req.ms > 60_000 {
        return Err(Error::validation(vec![crate::error::Violation::new(
            "/ms",
            "at most 60000",
        )]));
    }
    tokio::time::sleep(Duration::from_millis(req.ms)).await;
    Ok(SlowReply { slept_ms: req.ms })
}

async fn fail(_: (), _: Call<Open>, req: FailRequest) -> Result<(), Error> {
    let kind = ErrorKind::from_code(req.code).ok_or_else(|| {
        Error::invalid_request(format!("{} is not an error code of the platform", req.code))
    })?;
    Err(Error::new(
        kind,
        format!("failing with {} as asked", req.code),
    ))
}

async fn trace(_: (), _: Call<Open>, _: Raw) -> Result<TraceReply, Error> {
    Ok(TraceReply {
        trace_id: crate::telemetry::current_trace_id(),
    })
}

async fn panic(_: (), _: Call<Open>, _: Raw) -> Result<u8, Error> {
    let items: Vec<u8> = Vec::new();
    // Deliberate out-of-bounds access: the runtime must survive it.
    Ok(items[usize::from(items.is_empty())])
}
