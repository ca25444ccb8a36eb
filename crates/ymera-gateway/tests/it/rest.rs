//! `POST /v1/<subject>` against the real services.

use std::time::Duration;

use async_nats::service::ServiceExt;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::common::{ALL, Stack};

fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_gzip()
        .no_brotli()
        .build()
        .unwrap()
}

async fn post(url: &str, key: Option<&str>, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(url).body(body);
    if let Some(key) = key {
        request = request.header("X-API-Key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn every_endpoint_is_served_over_http_with_the_services_errors() {
    let mut stack = Stack::start(ALL, 1, &[("GATEWAY_CORS_ORIGINS", "https://app.example")]).await;
    let url = stack.url().to_owned();
    let admin = stack.admin.clone();
    stack.wait_routed("config.set").await;

    // A write and a read through the gateway, with the admin key.
    let (status, body) = post(
        &format!("{url}/v1/config/set"),
        Some(&admin),
        json!({"agent": "gw-test", "environment": "base", "config": {"greeting": "grüß dich"}})
            .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        &format!("{url}/v1/config/get"),
        Some(&admin),
        json!({"agent": "gw-test"}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["config"]["greeting"], "grüß dich", "{body}");

    // Other services are routed too.
    for subject in [
        "communication.agents.list",
        "drafting.list",
        "code-analysis.rules",
        "security.keys.list",
    ] {
        stack.wait_routed(subject).await;
        let (status, body) = post(
            &format!("{url}/v1/{}", subject.replace('.', "/")),
            Some(&admin),
            "{}",
        )
        .await;
        assert!(
            status == 200 || status == 400 || status == 422,
            "{subject}: {status} {body}"
        );
    }

    // No credential: the service's 401 with the DESIGN §4 body.
    let (status, body) = post(
        &format!("{url}/v1/config/get"),
        None,
        json!({"agent": "gw-test"}).to_string(),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(error_code(&body), "unauthenticated");
    // A bad key: 401 too.
    let (status, _) = post(&format!("{url}/v1/config/get"), Some("ymk_nope"), "{}").await;
    assert_eq!(status, 401);
    // Malformed JSON: 400.
    let (status, body) = post(&format!("{url}/v1/config/get"), Some(&admin), "{not json").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "invalid_request");
    // Unknown subject: 404 in the same format.
    let (status, body) = post(&format!("{url}/v1/config/nope"), Some(&admin), "{}").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_code(&body), "not_found");
    let (status, body) = post(&format!("{url}/v1/a/*/b"), Some(&admin), "{}").await;
    assert_eq!(status, 404, "{body}");
    // Oversized body: 413 before anything is sent.
    let big = format!("{{\"agent\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let (status, body) = post(&format!("{url}/v1/config/get"), Some(&admin), big).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(error_code(&body), "payload_too_large");

    // Credentials and trace context arrive as NATS headers.
    let mut tap = stack.client.subscribe("config.get").await.unwrap();
    stack.client.flush().await.unwrap();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/config/get"))
        .header("Authorization", "Bearer not-a-jwt")
        .header("traceparent", traceparent)
        .body(json!({"agent": "gw-test"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    // Other config.get requests (the gateway following its own document) may come first.
    let headers = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let seen = tap.next().await.unwrap();
            if let Some(headers) = seen.headers
                && headers.get("traceparent").is_some()
            {
                return headers;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        headers.get("traceparent").map(|v| v.as_str()),
        Some(traceparent)
    );
    assert_eq!(
        headers.get("Authorization").map(|v| v.as_str()),
        Some("Bearer not-a-jwt")
    );
    drop(tap);

    // gzip and br responses for bodies of at least COMPRESS_MIN_BYTES; a small reply
    // goes out as it is.
    let (status, body) = post(
        &format!("{url}/v1/config/set"),
        Some(&admin),
        json!({"agent": "gw-test-large", "environment": "base",
               "config": {"notes": "compressible ".repeat(200)}})
        .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for (agent, encoding, expected) in [
        ("gw-test-large", "gzip", Some("gzip")),
        ("gw-test-large", "br", Some("br")),
        ("gw-test", "gzip", None),
    ] {
        let response = raw_client()
            .post(format!("{url}/v1/config/get"))
            .header("X-API-Key", &admin)
            .header("Accept-Encoding", encoding)
            .body(json!({ "agent": agent }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            response
                .headers()
                .get("content-encoding")
                .map(|v| v.to_str().unwrap()),
            expected,
            "{agent} with Accept-Encoding: {encoding}"
        );
    }

    // CORS: the configured origin only.
    let preflight = |origin: &'static str| {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, format!("{url}/v1/config/get"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "x-api-key,content-type")
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some("https://app.example")
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    // A new endpoint appears without gateway code.
    let service = stack
        .client
        .service_builder()
        .description("test service")
        .start("gwprobe", "1.0.0")
        .await
        .unwrap();
    let mut echo = service
        .endpoint_builder()
        .name("echo")
        .add("gwprobe.echo")
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Some(request) = echo.next().await {
            let body = request.message.payload.clone();
            let _ = request.respond(Ok(body)).await;
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = post(&format!("{url}/v1/gwprobe/echo"), None, "{\"hi\":1}").await;
        if status == 200 {
            assert_eq!(body, json!({"hi": 1}));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "new endpoint never routed: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A per-client rate limit (a second gateway with a small one).
    stack
        .add_gateway(&[("GATEWAY_RATE_LIMIT", "3"), ("GATEWAY_RATE_PERIOD", "60s")])
        .await;
    let limited = stack.urls[1].clone();
    stack_wait(&limited, &admin).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = reqwest::Client::new()
            .post(format!("{limited}/v1/config/get"))
            .header("X-API-Key", "ymk_rate_limited_client")
            .body("{}")
            .send()
            .await
            .unwrap();
        if response.status().as_u16() == 429 {
            assert!(response.headers().get("retry-after").is_some());
            let body: Value = response.json().await.unwrap();
            assert_eq!(error_code(&body), "rate_limited");
            assert!(body["error"]["details"]["retry_after_ms"].as_u64().unwrap() > 0);
            statuses.push(429);
        } else {
            statuses.push(response.status().as_u16());
        }
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
}

/// Waits until a fresh gateway has its routes (without spending a client's limit).
async fn stack_wait(url: &str, _admin: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let response = reqwest::Client::new()
            .get(format!("{url}/openapi.json"))
            .send()
            .await;
        if let Ok(r) = response
            && r.status().is_success()
            && let Ok(doc) = r.json::<Value>().await
            && doc["paths"].get("/v1/config/get").is_some()
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gateway at {url} has no routes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
