//! Logging, traces and W3C trace context carried in NATS headers.
//!
//! Logs go to stderr (pretty or JSON; a JSON line inside a recorded span
//! carries its `trace_id` and `span_id`). When `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set, spans and log records are also exported over OTLP/gRPC (logs
//! through `opentelemetry-appender-tracing`, with the trace context of the
//! span they were written in); [`Telemetry::shutdown`] flushes both. Trace
//! context travels in the `traceparent`/`tracestate` headers of NATS messages.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, ServiceConfig};

/// Handle on the installed telemetry; call [`Telemetry::shutdown`] before exit.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    logs: Option<SdkLoggerProvider>,
}

/// Errors setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built.
    #[error("OTEL_EXPORTER_OTLP_ENDPOINT: cannot build the OTLP exporter: {0}")]
    Exporter(String),
}

impl Telemetry {
    /// Installs the global subscriber for `service`. A second call in the same
    /// process (tests running several services) keeps the first subscriber.
    pub fn init(service: &str, config: &ServiceConfig) -> Result<Telemetry, TelemetryError> {
        let filter =
            || EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
        let fmt_layer = match config.log_format {
            LogFormat::Pretty => tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter())
                .boxed(),
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .event_format(WithTraceIds(
                    tracing_subscriber::fmt::format()
                        .json()
                        .with_current_span(true),
                ))
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .with_writer(std::io::stderr)
                .with_filter(filter())
                .boxed(),
        };
        let (provider, logs) = match &config.otlp_endpoint {
            Some(endpoint) => (
                Some(otlp_provider(service, endpoint)?),
                Some(otlp_logs(service, endpoint)?),
            ),
            None => (None, None),
        };
        // The exporter's own crates are left out: their records would be
        // exported by the exporter they describe.
        let logs_layer = logs.as_ref().map(|p| {
            let filter =
                EnvFilter::try_new(format!("{},{QUIET_EXPORTER_TARGETS}", config.log_filter))
                    .unwrap_or_else(|_| EnvFilter::new(format!("info,{QUIET_EXPORTER_TARGETS}")));
            opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(p)
                .with_filter(filter)
        });
        let otel_layer = provider.as_ref().map(|p| {
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer(service.to_owned()))
                .with_filter(filter())
        });
        let installed = tracing_subscriber::registry()
            .with(fmt_layer)
            .with(otel_layer)
            .with(logs_layer)
            .try_init()
            .is_ok();
        if installed && let Some(p) = &provider {
            opentelemetry::global::set_tracer_provider(p.clone());
            EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(Telemetry { provider, logs })
    }

    /// Flushes and stops span and log export.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(error = %err, "flushing traces failed");
        }
        if let Some(logs) = self.logs
            && let Err(err) = logs.shutdown()
        {
            eprintln!("flushing logs failed: {err}");
        }
    }
}

/// Targets never exported as OTLP logs (the exporter's transport).
const QUIET_EXPORTER_TARGETS: &str = "h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";

fn otlp_logs(service: &str, endpoint: &str) -> Result<SdkLoggerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::LogExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    Ok(SdkLoggerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// A JSON event format that adds `"trace_id"` and `"span_id"` (W3C hex) of
/// the OpenTelemetry span the event was written in, when one is recorded.
struct WithTraceIds<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        if let Some((trace_id, span_id)) = current_ids() {
            add_ids(&mut line, &trace_id, &span_id);
        }
        writer.write_str(&line)
    }
}

/// The trace and span id of the active OpenTelemetry context (entering a
/// recorded span activates it), if valid.
fn current_ids() -> Option<(String, String)> {
    use opentelemetry::trace::TraceContextExt;
    let context = opentelemetry::Context::current();
    let span = context.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// Inserts the ids as the last members of the JSON object on `line`
/// (`{…}` followed by a newline).
fn add_ids(line: &mut String, trace_id: &str, span_id: &str) {
    let body = line.trim_end_matches('\n');
    if !body.ends_with('}') {
        return;
    }
    let end = body.len() - 1;
    let sep = if body[..end].trim_end().ends_with('{') {
        ""
    } else {
        ","
    };
    line.insert_str(
        end,
        &format!("{sep}\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\""),
    );
}

fn otlp_provider(service: &str, endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Set once this process exports spans over OTLP.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans are exported (`OTEL_EXPORTER_OTLP_ENDPOINT` set): the
/// runtime records a span per request only then, or when debug logging
/// wants the request context on every line.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

/// Makes `span` a child of the trace context found in `headers`, if any.
pub fn set_parent_from_headers(span: &tracing::Span, headers: Option<&HeaderMap>) {
    let Some(headers) = headers else { return };
    if headers.get("traceparent").is_none() {
        return;
    }
    let context = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    // Fails only when the span is disabled; nothing to propagate then.
    let _ = span.set_parent(context);
}

/// Writes the current span's trace context into `headers`.
pub fn inject_current_context(headers: &mut HeaderMap) {
    if !exporting() {
        // No span records a trace context to pass on.
        return;
    }
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

/// The W3C trace id of the current span, when one is being recorded.
pub fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let context = tracing::Span::current().context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn ids_are_added_as_the_last_json_members() {
        let mut line = "{\"a\":1}\n".to_owned();
        add_ids(&mut line, "t", "s");
        assert_eq!(line, "{\"a\":1,\"trace_id\":\"t\",\"span_id\":\"s\"}\n");
        let mut empty = "{}\n".to_owned();
        add_ids(&mut empty, "t", "s");
        assert_eq!(empty, "{\"trace_id\":\"t\",\"span_id\":\"s\"}\n");
        let mut not_json = "plain text\n".to_owned();
        add_ids(&mut not_json, "t", "s");
        assert_eq!(not_json, "plain text\n");
    }

    #[test]
    fn json_lines_carry_the_trace_and_span_id_of_the_current_span() {
        let provider = SdkTracerProvider::builder().build();
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(WithTraceIds(
                        tracing_subscriber::fmt::format()
                            .json()
                            .with_current_span(true),
                    ))
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .with_writer(move || writer.clone()),
            )
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let (trace_id, span_id) = tracing::subscriber::with_default(subscriber, || {
            tracing::info!("before any span");
            let span = tracing::info_span!("request", endpoint = "x.y");
            let _entered = span.enter();
            tracing::info!(answer = 42, "inside");
            current_ids().unwrap()
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].get("trace_id").is_none(), "{}", lines[0]);
        assert_eq!(lines[1]["trace_id"], trace_id.as_str());
        assert_eq!(lines[1]["span_id"], span_id.as_str());
        assert_eq!(lines[1]["fields"]["answer"], 42);
        assert_eq!(lines[1]["span"]["name"], "request");
        assert_eq!(trace_id.len(), 32);
        assert_eq!(span_id.len(), 16);
    }
}
