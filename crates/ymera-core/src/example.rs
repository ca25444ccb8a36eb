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

use serde::Deserialize;

use crate::error::{Error, ErrorKind};
use crate::runtime::{Reply, ServiceBuilder, ServiceRequest};

/// The example service's name.
pub const NAME: &str = "example";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlowRequest {
    ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailRequest {
    code: u16,
}

/// The example service with its four endpoints.
pub fn service() -> ServiceBuilder {
    ServiceBuilder::new(
        NAME,
        env!("CARGO_PKG_VERSION"),
        "Example service of the Ymera runtime",
    )
    .endpoint("example.echo", |req: ServiceRequest| async move {
        Ok(Reply::bytes(req.payload))
    })
    .endpoint("example.slow", |req: ServiceRequest| async move {
        let slow: SlowRequest = req.json()?;
        if slow.ms > 60_000 {
            return Err(Error::validation(vec![crate::error::Violation::new(
                "/ms",
                "at most 60000",
            )]));
        }
        tokio::time::sleep(Duration::from_millis(slow.ms)).await;
        Reply::json(&serde_json::json!({"slept_ms": slow.ms}))
    })
    .endpoint("example.fail", |req: ServiceRequest| async move {
        let fail: FailRequest = req.json()?;
        let kind = ErrorKind::from_code(fail.code).ok_or_else(|| {
            Error::invalid_request(format!(
                "{} is not an error code of the platform",
                fail.code
            ))
        })?;
        Err(Error::new(
            kind,
            format!("failing with {} as asked", fail.code),
        ))
    })
    .endpoint("example.trace", |_req: ServiceRequest| async move {
        Reply::json(&serde_json::json!({"trace_id": crate::telemetry::current_trace_id()}))
    })
    .endpoint("example.panic", |_req: ServiceRequest| async move {
        let items: Vec<u8> = Vec::new();
        // Deliberate out-of-bounds access: the runtime must survive it.
        let value = items[usize::from(items.is_empty())];
        Reply::json(&value)
    })
}
