//! Logging, traces and W3C trace context carried in NATS headers.
//!
//! Logs go to stderr (pretty or JSON). When `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set, spans are also exported over OTLP/gRPC; [`Telemetry::shutdown`]
//! flushes them. Trace context travels in the `traceparent`/`tracestate`
//! headers of NATS messages.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
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
                .json()
                .with_current_span(true)
                .with_writer(std::io::stderr)
                .with_filter(filter())
                .boxed(),
        };
        let provider = match &config.otlp_endpoint {
            Some(endpoint) => Some(otlp_provider(service, endpoint)?),
            None => None,
        };
        let otel_layer = provider.as_ref().map(|p| {
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer(service.to_owned()))
                .with_filter(filter())
        });
        let installed = tracing_subscriber::registry()
            .with(fmt_layer)
            .with(otel_layer)
            .try_init()
            .is_ok();
        if installed && let Some(p) = &provider {
            opentelemetry::global::set_tracer_provider(p.clone());
            EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(Telemetry { provider })
    }

    /// Flushes and stops span export.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(error = %err, "flushing traces failed");
        }
    }
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
