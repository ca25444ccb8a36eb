//! The service runtime against a real nats-server.

use std::time::Duration;

use async_nats::service::{Info, PingResponse, Stats};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use ymera_core::error::{ERROR_CODE_HEADER, ERROR_HEADER, ErrorKind};
use ymera_core::health::{HealthReport, HealthStatus};
use ymera_testkit::{http_get, wait_until_serving};

use crate::common::{config_for, nats, start_example};

/// Collects every reply to a discovery request until `timeout` passes quietly.
async fn discover(client: &async_nats::Client, subject: &str) -> Vec<async_nats::Message> {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    client
        .publish_with_reply(subject.to_owned(), inbox, Bytes::new())
        .await
        .unwrap();
    let mut replies = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
        replies.push(msg);
    }
    replies
}

#[tokio::test]
async fn answers_services_api_and_health() {
    let nats = nats();
    let svc = start_example(config_for(&nats)).await;
    let client = svc.client.nats().clone();

    for subject in ["$SRV.PING", "$SRV.PING.example"] {
        let replies = discover(&client, subject).await;
        assert_eq!(replies.len(), 1, "{subject}");
        let ping: PingResponse = serde_json::from_slice(&replies[0].payload).unwrap();
        assert_eq!(ping.name, "example");
        assert_eq!(ping.kind, "io.nats.micro.v1.ping_response");
    }
    let info: Info =
        serde_json::from_slice(&discover(&client, "$SRV.INFO.example").await[0].payload).unwrap();
    let mut subjects: Vec<String> = info.endpoints.iter().map(|e| e.subject.clone()).collect();
    subjects.sort();
    let instance_health = format!("example.health.{}", info.id);
    let expected = [
        "example.echo",
        "example.fail",
        "example.health",
        &instance_health,
        "example.panic",
        "example.slow",
        "example.trace",
    ];
    assert_eq!(subjects, expected);
    let by_instance: HealthReport = svc
        .client
        .request(&instance_health, &json!({}))
        .await
        .unwrap();
    assert_eq!(by_instance.instance_id, info.id);
    assert!(info.endpoints.iter().all(|e| e.queue_group == "q"));

    let _ = svc
        .client
        .request_bytes("example.echo", Bytes::from_static(b"hi"))
        .await
        .unwrap();
    // A failure (5xx) counts as an error; a refusal (4xx, e.g. a 404 for a
    // document that does not exist yet) as rejected.
    for code in [500, 404] {
        let _ = svc
            .client
            .request::<_, Value>("example.fail", &json!({"code": code}))
            .await
            .unwrap_err();
    }
    let stats_reply = discover(&client, &format!("$SRV.STATS.example.{}", info.id)).await;
    let stats: Stats = serde_json::from_slice(&stats_reply[0].payload).unwrap();
    let echo = stats
        .endpoints
        .iter()
        .find(|e| e.subject == "example.echo")
        .unwrap();
    assert!(echo.requests >= 1);
    let fail = stats
        .endpoints
        .iter()
        .find(|e| e.subject == "example.fail")
        .unwrap();
    assert_eq!(fail.data.as_ref().unwrap()["errors"], 1);
    assert_eq!(fail.data.as_ref().unwrap()["rejected"], 1);
    assert!(
        fail.data.as_ref().unwrap()["last_rejection"]
            .as_str()
            .unwrap()
            .starts_with("404 ")
    );

    let health: HealthReport = svc
        .client
        .request("example.health", &json!({}))
        .await
        .unwrap();
    assert_eq!(health.service, "example");
    assert_eq!(health.instance_id, info.id);
    assert_eq!(health.status, HealthStatus::Healthy);
    assert_eq!(health.checks["nats"].status, HealthStatus::Healthy);
    let raw = serde_json::to_value(&health).unwrap();
    assert!(crate::schema::health_validator().is_valid(&raw), "{raw}");
}

#[tokio::test]
async fn oversized_request_gets_413_with_both_headers() {
    let nats = nats();
    let svc = start_example(config_for(&nats)).await;
    let big = Bytes::from(vec![b'x'; 2 * 1024 * 1024]);
    let reply = svc
        .client
        .nats()
        .request("example.echo", big)
        .await
        .unwrap();
    let headers = reply.headers.as_ref().expect("error headers");
    assert_eq!(headers.get(ERROR_CODE_HEADER).unwrap().as_str(), "413");
    assert!(
        headers
            .get(ERROR_HEADER)
            .unwrap()
            .as_str()
            .contains("over the limit of 1048576 bytes")
    );
    let body: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_eq!(body["error"]["details"]["limit"], 1048576);
    // Still serving.
    let ok = svc
        .client
        .request_bytes("example.echo", Bytes::from_static(b"small"))
        .await
        .unwrap();
    assert_eq!(&ok[..], b"small");
}

#[tokio::test]
async fn handler_errors_and_panics_never_kill_the_service() {
    let nats = nats();
    let svc = start_example(config_for(&nats)).await;
    for code in [400u16, 401, 403, 404, 409, 413, 422, 429, 500, 503] {
        let err = svc
            .client
            .request::<_, Value>("example.fail", &json!({"code": code}))
            .await
            .unwrap_err();
        assert_eq!(err.code(), code);
    }
    for _ in 0..3 {
        let err = svc
            .client
            .request::<_, Value>("example.panic", &json!({}))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Internal);
        assert_eq!(err.message, "internal error");
    }
    let err = svc
        .client
        .request::<_, Value>("example.slow", &json!({"ms": "soon"}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    let err = svc
        .client
        .request_bytes("example.slow", Bytes::from_static(b"{\"ms\":"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    let ok: Value = svc
        .client
        .request("example.slow", &json!({"ms": 1}))
        .await
        .unwrap();
    assert_eq!(ok["slept_ms"], 1);
}

#[tokio::test]
async fn reconnects_after_nats_server_is_killed_and_restarted() {
    let mut nats = nats();
    let svc = start_example(config_for(&nats)).await;
    nats.kill().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.restart().unwrap();
    // A fresh client on the restarted server reaches the same service
    // instance, which reconnected by itself.
    let client =
        ymera_core::client::ServiceClient::new(async_nats::connect(nats.url()).await.unwrap());
    wait_until_serving(client.nats(), "example.echo").await;
    let ok = client
        .request_bytes("example.echo", Bytes::from_static(b"back"))
        .await
        .unwrap();
    assert_eq!(&ok[..], b"back");
    assert!(!svc.task.is_finished());
}

#[tokio::test]
async fn shutdown_answers_in_flight_requests() {
    let nats = nats();
    let svc = start_example(config_for(&nats)).await;
    let mut pending = Vec::new();
    for _ in 0..10 {
        let client = svc.client.clone();
        pending.push(tokio::spawn(async move {
            client
                .request::<_, Value>("example.slow", &json!({"ms": 500}))
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    svc.shutdown.cancel();
    for p in pending {
        assert_eq!(p.await.unwrap().unwrap()["slept_ms"], 500);
    }
    svc.task.await.unwrap().unwrap();
    let err = svc
        .client
        .request_bytes("example.echo", Bytes::new())
        .await
        .unwrap_err();
    assert_eq!(err.details["reason"], "no_responders");
}

#[tokio::test]
async fn http_side_port_serves_health_ready_and_metrics() {
    let nats = nats();
    let port = ymera_testkit::free_port().unwrap();
    let mut config = config_for(&nats);
    config.http_addr = format!("127.0.0.1:{port}").parse().unwrap();
    let svc = start_example(config).await;
    let _ = svc
        .client
        .request_bytes("example.echo", Bytes::from_static(b"x"))
        .await
        .unwrap();
    let (status, body) = http_get(port, "/health").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(port, "/ready").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"healthy\""), "{body}");
    let (status, body) = http_get(port, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("ymera_requests_total{service=\"example\",endpoint=\"example.echo\"}"),
        "{body}"
    );
    assert!(
        body.contains("ymera_request_duration_seconds_bucket"),
        "{body}"
    );
}

/// The endpoint registry is enumerable from outside the process: each
/// endpoint's `$SRV.INFO` metadata names its permission, request and reply
/// types and their schema files.
#[tokio::test]
async fn services_api_info_lists_the_typed_registry() {
    let nats = nats();
    let svc = start_example(config_for(&nats)).await;
    let client = svc.client.nats().clone();
    let info: Info =
        serde_json::from_slice(&discover(&client, "$SRV.INFO.example").await[0].payload).unwrap();
    let slow = info
        .endpoints
        .iter()
        .find(|e| e.subject == "example.slow")
        .unwrap();
    let metadata = &slow.metadata;
    assert_eq!(metadata["request"], "SlowRequest");
    assert_eq!(metadata["reply"], "SlowReply");
    assert_eq!(
        metadata["request_schema"],
        "example/slow.request.schema.json"
    );
    assert!(!metadata.contains_key("permission"), "example.slow is open");
    let echo = info
        .endpoints
        .iter()
        .find(|e| e.subject == "example.echo")
        .unwrap();
    assert_eq!(echo.metadata["request"], "bytes");
    let health = info
        .endpoints
        .iter()
        .find(|e| e.subject == "example.health")
        .unwrap();
    assert_eq!(health.metadata["reply_schema"], "health.schema.json");
    assert_eq!(health.metadata["reply"], "HealthReport");
    // The same registry in-process, before serving.
    let subjects: Vec<String> = ymera_core::example::service()
        .endpoints()
        .into_iter()
        .map(|e| e.subject)
        .collect();
    assert_eq!(
        subjects,
        [
            "example.echo",
            "example.slow",
            "example.fail",
            "example.trace",
            "example.panic"
        ]
    );
}
