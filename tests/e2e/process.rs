//! A service as a real process: bad configuration exits 64 with one line
//! naming the variable (an unknown `LOG_LEVEL` too; the seeds' `WARNING` and
//! `CRITICAL` work); SIGTERM during in-flight requests answers them all and
//! exits 0.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ymera_testkit::{NatsServer, wait_until_serving};

const EXAMPLE: &str = env!("CARGO_BIN_EXE_ymera-example");

#[test]
fn malformed_configuration_exits_64_naming_the_variable() {
    for (var, value) in [
        ("MAX_MESSAGE_SIZE", "huge"),
        ("YMERA_HTTP_ADDR", "not-an-address"),
        ("ENVIRONMENT", "moon"),
        ("NATS_URL", "http://wrong"),
    ] {
        let output = Command::new(EXAMPLE)
            .env(var, value)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(64), "{var}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(var), "{stderr}");
    }
}

#[test]
fn max_message_size_over_server_max_payload_exits_64() {
    let nats = NatsServer::start().unwrap();
    let mut child = Command::new(EXAMPLE)
        .env("NATS_URL", nats.url())
        .env("MAX_MESSAGE_SIZE", "4MiB")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the service kept running with MAX_MESSAGE_SIZE over the server's max_payload");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("MAX_MESSAGE_SIZE"), "{stderr}");
}

#[tokio::test]
async fn sigterm_answers_in_flight_requests_and_exits_zero() {
    let nats = NatsServer::start().unwrap();
    let mut child = spawn_example(&nats, &[]);
    let client = async_nats::connect(nats.url()).await.unwrap();
    wait_until_serving(&client, "example.health").await;

    let mut in_flight = Vec::new();
    for _ in 0..20 {
        let client = client.clone();
        in_flight.push(tokio::spawn(async move {
            client
                .request("example.slow", Bytes::from_static(b"{\"ms\":1500}"))
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().unwrap();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let stopped_at = Instant::now();

    for request in in_flight {
        let reply = request
            .await
            .unwrap()
            .expect("every in-flight request is answered");
        assert!(reply.headers.is_none(), "no error reply");
        assert_eq!(&reply.payload[..], b"{\"slept_ms\":1500}");
    }
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits within the deadline")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    // It stopped taking requests: nobody answers now.
    let err = client
        .request("example.echo", Bytes::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);
    assert!(stopped_at.elapsed() < Duration::from_secs(15));
}

/// Starts the example service as a process on `nats`, killed when dropped.
fn spawn_example(nats: &NatsServer, env: &[(&str, &str)]) -> tokio::process::Child {
    tokio::process::Command::new(EXAMPLE)
        .env("NATS_URL", nats.url())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn trace_context_in_nats_headers_becomes_the_request_span_parent() {
    let nats = NatsServer::start().unwrap();
    // Traces are exported only when an OTLP endpoint is set; nothing listens
    // here, so export fails quietly, but the request spans are real.
    let unused = ymera_testkit::free_port().unwrap();
    let endpoint = format!("http://127.0.0.1:{unused}");
    let _child = spawn_example(&nats, &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())]);
    let client = async_nats::connect(nats.url()).await.unwrap();
    wait_until_serving(&client, "example.health").await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01").as_str(),
    );
    let reply = client
        .request_with_headers("example.trace", headers, Bytes::new())
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body["trace_id"], trace_id, "{body}");
    // Without a traceparent the service starts a new trace.
    let reply = client.request("example.trace", Bytes::new()).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    let fresh = body["trace_id"].as_str().unwrap();
    assert_eq!(fresh.len(), 32);
    assert_ne!(fresh, trace_id);
}

/// A service binary the workspace build put beside this test.
fn service_binary(name: &str) -> std::path::PathBuf {
    ymera_devstack::service_binary(name).unwrap_or_else(|err| panic!("{err}"))
}

#[test]
fn an_unknown_log_level_exits_64_naming_log_level() {
    for program in [EXAMPLE.into(), service_binary("code-analysis")] {
        let output = Command::new(&program)
            .env("LOG_LEVEL", "bogus")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(64),
            "{}: {stderr}",
            program.display()
        );
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains("configuration error: LOG_LEVEL: \"bogus\""),
            "{stderr}"
        );
    }
}

#[test]
fn the_seeds_log_levels_start_the_service_and_filter_by_level() {
    // WARNING (the Python name) is warn: the start-up warning shows, the
    // info lines do not. It used to be a filter that hid every line.
    let unused = ymera_testkit::free_port().unwrap();
    let mut child = Command::new(service_binary("code-analysis"))
        .env("NATS_URL", format!("nats://127.0.0.1:{unused}"))
        .env("LOG_LEVEL", "WARNING")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.contains("waiting for NATS") => {
                seen.push(line);
                break;
            }
            Ok(line) => seen.push(line),
            Err(_) => assert!(
                child.try_wait().unwrap().is_none(),
                "exited with LOG_LEVEL=WARNING: {seen:?}"
            ),
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        seen.iter().any(|l| l.contains("waiting for NATS")),
        "the warning was not logged: {seen:?}"
    );
    assert!(
        !seen.iter().any(|l| l.contains("INFO")),
        "info lines pass a warn filter: {seen:?}"
    );
}

#[tokio::test]
async fn a_service_with_log_level_critical_starts_and_serves() {
    let nats = NatsServer::start().unwrap();
    let _child = tokio::process::Command::new(service_binary("code-analysis"))
        .env("NATS_URL", nats.url())
        .env("LOG_LEVEL", "CRITICAL")
        .env("ENVIRONMENT", "development")
        .env("YMERA_AUTH", "off")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    wait_until_serving(&client, "code-analysis.health").await;
}
