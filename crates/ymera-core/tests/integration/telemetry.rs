//! Logs and spans exported over OTLP/gRPC to a real receiver: an in-test
//! HTTP/2 (h2c) server answering the OTLP LogsService and TraceService
//! `Export` calls and decoding their protobuf requests.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use http_body::Frame;
use http_body_util::StreamBody;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use ymera_core::config::LogFormat;

use crate::common::{config_for, nats};

#[derive(Default)]
struct Received {
    logs: Vec<ExportLogsServiceRequest>,
    traces: Vec<ExportTraceServiceRequest>,
}

type Shared = Arc<Mutex<Received>>;

/// The protobuf message inside one gRPC frame (uncompressed).
fn unframe(body: &[u8]) -> &[u8] {
    assert!(body.len() >= 5, "short gRPC frame");
    assert_eq!(body[0], 0, "compressed gRPC frame");
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    &body[5..5 + len]
}

/// A gRPC OK reply carrying an empty Export*ServiceResponse.
fn grpc_ok() -> Response {
    let mut trailers = axum::http::HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    let frames = futures::stream::iter([
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
        Ok(Frame::trailers(trailers)),
    ]);
    Response::builder()
        .header("content-type", "application/grpc")
        .body(Body::new(StreamBody::new(frames)))
        .unwrap()
}

async fn logs(State(shared): State<Shared>, body: Bytes) -> Response {
    let request = ExportLogsServiceRequest::decode(unframe(&body)).unwrap();
    shared.lock().unwrap().logs.push(request);
    grpc_ok()
}

async fn traces(State(shared): State<Shared>, body: Bytes) -> Response {
    let request = ExportTraceServiceRequest::decode(unframe(&body)).unwrap();
    shared.lock().unwrap().traces.push(request);
    grpc_ok()
}

/// Starts the receiver on a loopback port; returns its endpoint.
async fn receiver(shared: Shared) -> String {
    let app = axum::Router::new()
        .route(
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            post(logs),
        )
        .route(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            post(traces),
        )
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn text(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_spans_reach_a_real_otlp_receiver_with_the_trace_context() {
    let shared = Shared::default();
    let endpoint = receiver(shared.clone()).await;
    let nats = nats();
    let mut config = config_for(&nats);
    config.otlp_endpoint = Some(endpoint);
    config.log_format = LogFormat::Json;
    config.log_filter = "info".into();
    let runtime = ymera_core::runtime::Runtime::start(ymera_core::example::NAME, config)
        .await
        .unwrap();
    let stop = runtime.shutdown_token();
    let task = tokio::spawn(ymera_core::example::service().serve(runtime));

    // A log line inside a recorded span, and one outside any span.
    let trace_id = {
        let span = tracing::info_span!("otlp-test-span");
        let _entered = span.enter();
        tracing::info!(order = 42, "inside the otlp test span");
        ymera_core::telemetry::current_trace_id().expect("span recorded")
    };
    tracing::warn!("outside any span");
    // Flushed at shutdown.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let received = shared.lock().unwrap();
    let records: Vec<_> = received
        .logs
        .iter()
        .flat_map(|r| &r.resource_logs)
        .flat_map(|rl| {
            let service = rl
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(&kv.value))
                .unwrap_or_default();
            rl.scope_logs
                .iter()
                .flat_map(|sl| &sl.log_records)
                .map(move |rec| (service.clone(), rec))
        })
        .collect();
    let inside = records
        .iter()
        .find(|(_, rec)| text(&rec.body) == "inside the otlp test span")
        .unwrap_or_else(|| panic!("log record not exported; got {} records", records.len()));
    assert_eq!(inside.0, "example");
    assert_eq!(inside.1.severity_text, "INFO");
    assert_eq!(
        hex(&inside.1.trace_id),
        trace_id,
        "log carries the span's trace id"
    );
    assert_eq!(inside.1.span_id.len(), 8);
    assert!(
        inside.1.attributes.iter().any(|kv| kv.key == "order"),
        "{:?}",
        inside.1.attributes
    );
    let outside = records
        .iter()
        .find(|(_, rec)| text(&rec.body) == "outside any span")
        .expect("a log outside spans is exported too");
    assert!(outside.1.trace_id.iter().all(|b| *b == 0));
    // The service's own start-up lines went the same way.
    assert!(
        records
            .iter()
            .any(|(_, rec)| text(&rec.body) == "service started"),
        "{:?}",
        records
            .iter()
            .map(|(_, r)| text(&r.body))
            .collect::<Vec<_>>()
    );
    // The span itself reached the trace pipeline with the same trace id.
    let spans: Vec<_> = received
        .traces
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect();
    let span = spans
        .iter()
        .find(|s| s.name == "otlp-test-span")
        .expect("span exported");
    assert_eq!(hex(&span.trace_id), trace_id);
    assert_eq!(span.span_id, inside.1.span_id);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
