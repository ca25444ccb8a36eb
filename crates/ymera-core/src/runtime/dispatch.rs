//! The request path: one loop per endpoint takes requests from its NATS
//! subscription, and each request runs in its own task through
//! [`handle_request`]: size bound, permission check, handler (panic and
//! timeout caught), reply, metrics.
//!
//! Per request the path allocates the task, the [`ServiceRequest`] and the
//! handler's future (and a span only when traces are exported or debug
//! logging is on); metric handles are made once per endpoint, the body and
//! headers are moved out of the NATS message, not copied, and a panic is
//! caught in place rather than by a second task.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::builder::EndpointSpec;
use super::endpoint::{EndpointInfo, ErasedHandler};
use super::request::{Reply, ServiceRequest};
use crate::auth::Authorizer;
use crate::error::{Error, ErrorKind};
use crate::telemetry;

/// Per-service state shared by the endpoint loops.
pub(crate) struct RequestContext {
    /// Present when an endpoint declares a permission.
    pub(crate) authorizer: Option<Arc<Authorizer>>,
    pub(crate) service: String,
    pub(crate) max_size: usize,
    pub(crate) timeout: Duration,
    pub(crate) in_flight: Arc<Semaphore>,
    pub(crate) tracker: TaskTracker,
    pub(crate) error_counts: Arc<ErrorCounts>,
}

/// One endpoint as the dispatcher serves it.
pub(crate) struct Route {
    pub(crate) subject: String,
    /// The Services API endpoint name.
    pub(crate) name: String,
    /// What `$SRV.INFO` lists for the endpoint (see [`Route::metadata`]).
    info: EndpointInfo,
    handler: ErasedHandler,
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

impl Route {
    pub(crate) fn new(service: &str, spec: EndpointSpec) -> Self {
        let subject = spec.info.subject.clone();
        let labels = [
            ("service", service.to_owned()),
            ("endpoint", subject.clone()),
        ];
        Route {
            name: endpoint_name(service, &subject),
            info: spec.info,
            handler: spec.handler,
            requests: metrics::counter!("ymera_requests_total", &labels),
            duration: metrics::histogram!("ymera_request_duration_seconds", &labels),
            subject,
        }
    }
}

impl Route {
    /// The endpoint's registry entry as `$SRV.INFO` metadata, so a process
    /// outside the service (the gateway, `ymera services`) can enumerate
    /// every typed endpoint at run time: `permission` (absent when open),
    /// `request` and `reply` (type names), `request_schema` and
    /// `reply_schema` (files under `proto/schemas/`).
    pub(crate) fn metadata(&self) -> HashMap<String, String> {
        let info = &self.info;
        let mut metadata = HashMap::from([
            ("request".to_owned(), info.request.clone()),
            ("reply".to_owned(), info.reply.clone()),
        ]);
        if let Some(permission) = info.permission {
            metadata.insert("permission".to_owned(), permission.to_owned());
        }
        if let Some(schema) = info.request_schema() {
            metadata.insert("request_schema".to_owned(), schema);
        }
        if let Some(schema) = info.reply_schema() {
            metadata.insert("reply_schema".to_owned(), schema);
        }
        metadata
    }
}

/// The Services API endpoint name for a subject: the part after the service
/// prefix, dots as underscores (`config.schema.set` → `schema_set`).
pub(crate) fn endpoint_name(service: &str, subject: &str) -> String {
    let rest = subject
        .strip_prefix(service)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(subject);
    // Every instance's own health subject gets one stable endpoint name.
    if rest.starts_with("health.") {
        return "health_instance".to_owned();
    }
    rest.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Serves one endpoint until shutdown, then unsubscribes and answers the
/// requests NATS had already delivered to this process (for up to 2 s).
pub(crate) async fn endpoint_loop(
    mut endpoint: async_nats::service::endpoint::Endpoint,
    route: Arc<Route>,
    ctx: Arc<RequestContext>,
    shutdown: CancellationToken,
) {
    loop {
        let request = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            request = endpoint.next() => request,
        };
        let Some(request) = request else { return };
        dispatch(request, &route, &ctx).await;
    }
    // Stop taking requests, then answer what was already delivered to us.
    if let Err(err) = endpoint.stop().await {
        tracing::warn!(error = %err, subject = %route.subject, "unsubscribe failed");
    }
    let drain = async {
        while let Some(request) = endpoint.next().await {
            dispatch(request, &route, &ctx).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

/// Bodies up to this size are handled in the endpoint loop until their first
/// await point: a handler that answers at once (echo, health, a cached
/// read) costs no task. Larger bodies go straight to their own task, so
/// parsing one does not hold up the endpoint's next request.
pub const INLINE_BODY_MAX: usize = 16 * 1024;

async fn dispatch(
    request: async_nats::service::Request,
    route: &Arc<Route>,
    ctx: &Arc<RequestContext>,
) {
    let Ok(permit) = ctx.in_flight.clone().acquire_owned().await else {
        return;
    };
    let inline = request.message.payload.len() <= INLINE_BODY_MAX;
    let (route2, ctx2) = (route.clone(), ctx.clone());
    let mut task = Box::pin(async move {
        handle_request(request, &route2, &ctx2).await;
        drop(permit);
    });
    // Handlers that wait (I/O, `spawn_blocking`) continue in their own
    // task from where the first poll left them.
    if inline && futures::poll!(task.as_mut()).is_ready() {
        return;
    }
    ctx.tracker.spawn(task);
}

async fn handle_request(
    mut request: async_nats::service::Request,
    route: &Route,
    ctx: &RequestContext,
) {
    let started = Instant::now();
    let headers = request.message.headers.take();
    let payload = std::mem::take(&mut request.message.payload);
    // A span per request costs an allocation and its formatted fields: made
    // when it is exported, or when debug logs want the context on each line.
    let span = if telemetry::exporting() || tracing::enabled!(tracing::Level::DEBUG) {
        let span = tracing::info_span!("request", service = %ctx.service, subject = %route.subject, otel.kind = "server");
        telemetry::set_parent_from_headers(&span, headers.as_ref());
        span
    } else {
        tracing::Span::none()
    };
    let outcome = async {
        if payload.len() > ctx.max_size {
            return Err(Error::payload_too_large(
                "request",
                payload.len(),
                ctx.max_size,
            ));
        }
        let mut req = ServiceRequest::new(route.subject.clone(), headers, payload, ctx.max_size);
        if let (Some(permission), Some(authorizer)) = (route.info.permission, &ctx.authorizer) {
            req.principal = authorizer.check(&req, permission).await?;
        }
        run_handler(&route.handler, req, ctx.timeout).await
    }
    .instrument(span.clone())
    .await;
    route.requests.increment(1);
    let (payload, headers) = match outcome {
        Ok(reply) => (reply.body, reply.headers),
        Err(err) => {
            metrics::counter!("ymera_request_errors_total", "service" => ctx.service.clone(), "endpoint" => route.subject.clone(), "code" => err.code().to_string())
                .increment(1);
            record_stats_error(&ctx.error_counts, &route.name, &err);
            span.in_scope(|| {
                tracing::info!(service = %ctx.service, subject = %route.subject, code = err.code(), error = %err.message, "request failed")
            });
            (err.to_body(), err.to_headers())
        }
    };
    if let Err(err) = request.respond_with_headers(Ok(payload), headers).await {
        tracing::warn!(error = %err, subject = %route.subject, "could not send reply");
    }
    route.duration.record(started.elapsed().as_secs_f64());
}

/// Runs a handler so that a panic becomes a 500 reply instead of taking the
/// service down, and bounds its time.
async fn run_handler(
    handler: &ErasedHandler,
    request: ServiceRequest,
    timeout: Duration,
) -> Result<Reply, Error> {
    let call = AssertUnwindSafe(handler(request)).catch_unwind();
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => Err(Error::internal(format!(
            "handler panicked: {}",
            panic_message(panic.as_ref())
        ))),
        Err(_) => Err(Error::new(
            ErrorKind::Unavailable,
            format!("request timed out after {} ms", timeout.as_millis()),
        )
        .with_detail("reason", "timeout")),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Per endpoint name: failures (5xx) and rejections (4xx) with the last of each.
pub(crate) type ErrorCounts = std::sync::Mutex<HashMap<String, EndpointErrors>>;

/// What `$SRV.STATS` reports in an endpoint's `data`.
#[derive(Debug, Default, Clone)]
pub(crate) struct EndpointErrors {
    errors: u64,
    last_error: Option<String>,
    rejected: u64,
    last_rejection: Option<String>,
}

/// Whether an error reply is the endpoint failing (5xx: counted as an
/// error in `$SRV.STATS`) rather than the request being refused (4xx:
/// counted as rejected — a 404 for a document that does not exist yet, a
/// 422 for bad input, a 401 without a credential).
pub fn is_failure(kind: ErrorKind) -> bool {
    kind.code() >= 500
}

fn record_stats_error(counts: &ErrorCounts, endpoint: &str, err: &Error) {
    let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
    let entry = counts.entry(endpoint.to_owned()).or_default();
    let text = format!("{} {}", err.code(), err.message);
    if is_failure(err.kind) {
        entry.errors += 1;
        entry.last_error = Some(text);
    } else {
        entry.rejected += 1;
        entry.last_rejection = Some(text);
    }
}

/// `$SRV.STATS` counts errors only for replies sent through its error path,
/// which carries no body; ours carry the JSON error body, so the counts and
/// last error are reported in each endpoint's `data` instead.
pub(crate) fn stats_data_handler(
    counts: Arc<ErrorCounts>,
) -> impl FnMut(String, async_nats::service::endpoint::Stats) -> serde_json::Value + Send + Sync + 'static
{
    move |endpoint: String, _stats| {
        let counts = counts.lock().unwrap_or_else(|p| p.into_inner());
        let entry = counts.get(&endpoint).cloned().unwrap_or_default();
        let mut data = serde_json::json!({"errors": entry.errors, "rejected": entry.rejected});
        if let Some(last) = entry.last_error {
            data["last_error"] = last.into();
        }
        if let Some(last) = entry.last_rejection {
            data["last_rejection"] = last.into();
        }
        data
    }
}

pub(crate) async fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
        _ = token.cancelled() => return,
    }
    token.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_names() {
        assert_eq!(endpoint_name("config", "config.schema.set"), "schema_set");
        assert_eq!(
            endpoint_name("code-analysis", "code-analysis.analyze"),
            "analyze"
        );
        assert_eq!(endpoint_name("x", "other.subject"), "other_subject");
        assert_eq!(endpoint_name("x", "x.health.AbC123"), "health_instance");
    }

    #[test]
    fn client_errors_are_rejections_not_failures() {
        assert!(!is_failure(ErrorKind::NotFound));
        assert!(!is_failure(ErrorKind::Unauthenticated));
        assert!(is_failure(ErrorKind::Internal));
        assert!(is_failure(ErrorKind::Unavailable));
        let counts = ErrorCounts::default();
        record_stats_error(&counts, "get", &Error::not_found("no such doc"));
        record_stats_error(&counts, "get", &Error::internal("boom"));
        let counts = counts.lock().unwrap_or_else(|p| p.into_inner());
        let get = &counts["get"];
        assert_eq!((get.errors, get.rejected), (1, 1));
    }
}
