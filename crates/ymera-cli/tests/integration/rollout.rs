//! `ymera rollout status` / `check` with two versions of one service
//! serving the same queue group at once: a stable 1.0.0 and a canary 1.1.0
//! that fails a third of its requests (in-process services), then two real
//! `ymera-code-analysis` binaries told apart by `YMERA_VERSION_OVERRIDE`.

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ymera_core::config::{AuthMode, ServiceConfig};
use ymera_core::error::Error;
use ymera_core::runtime::{Call, Open, Raw, Runtime, ServiceBuilder};

const YMERA: &str = env!("CARGO_BIN_EXE_ymera");

fn ymera(nats_url: &str, args: &[&str]) -> Output {
    Command::new(YMERA)
        .arg("--nats-url")
        .arg(nats_url)
        .args(args)
        .env_remove("NATS_URL")
        .output()
        .unwrap()
}

fn config(url: &str) -> ServiceConfig {
    let mut config = ServiceConfig::default();
    config.nats.url = url.to_owned();
    config.auth = AuthMode::Off;
    config
}

/// `shop` at `version`; every `fail_every`-th request (0: none) answers 500.
async fn shop(url: &str, version: &str, fail_every: u64) -> tokio_util::sync::CancellationToken {
    let runtime = Runtime::start("shop", config(url)).await.unwrap();
    let stop = runtime.shutdown_token();
    let seen = Arc::new(AtomicU64::new(0));
    let builder = ServiceBuilder::new("shop", version, "rollout test").route(
        "shop.buy",
        &seen,
        move |seen: Arc<AtomicU64>, _call: Call<Open>, body: Raw| async move {
            let n = seen.fetch_add(1, Ordering::Relaxed) + 1;
            if fail_every > 0 && n.is_multiple_of(fail_every) {
                Err(Error::internal("canary bug"))
            } else {
                Ok(body)
            }
        },
    );
    tokio::spawn(builder.serve(runtime));
    stop
}

/// How many instances answer `subject` within 300 ms of quiet.
async fn count_replies(client: &async_nats::Client, subject: &str) -> usize {
    use futures::StreamExt;
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    client
        .publish_with_reply(subject.to_owned(), inbox, "".into())
        .await
        .unwrap();
    let mut n = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        n += 1;
    }
    n
}

#[test]
fn the_gate_fails_a_failing_canary_beside_the_stable_version() {
    let nats = ymera_testkit::NatsServer::start().unwrap();
    let url = nats.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stops = rt.block_on(async {
        let stops = vec![
            shop(&url, "1.0.0", 0).await,
            shop(&url, "1.0.0", 0).await,
            shop(&url, "1.1.0", 3).await,
        ];
        let client = async_nats::connect(url.clone()).await.unwrap();
        ymera_testkit::wait_until_serving(&client, "shop.health").await;
        // Every instance registered before traffic starts.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let pings = count_replies(&client, "$SRV.PING.shop").await;
            if pings >= 3 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{pings} of 3 instances"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // 600 requests spread by the queue group over the three instances.
        for _ in 0..600 {
            let _ = client.request("shop.buy", "x".into()).await.unwrap();
        }
        stops
    });

    let out = ymera(&url, &["--json", "rollout", "status", "--service", "shop"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (stable, canary) = (&rows[0], &rows[1]);
    assert_eq!(
        (stable["version"].as_str(), stable["instances"].as_u64()),
        (Some("1.0.0"), Some(2))
    );
    assert_eq!(
        (canary["version"].as_str(), canary["instances"].as_u64()),
        (Some("1.1.0"), Some(1))
    );
    // Health probes of the test are not counted; every shop.buy is.
    assert_eq!(
        stable["requests"].as_u64().unwrap() + canary["requests"].as_u64().unwrap(),
        600,
        "{rows:?}"
    );
    assert_eq!(stable["errors"], 0);
    assert!(canary["requests"].as_u64().unwrap() >= 60, "{rows:?}");
    let rate = canary["error_rate"].as_f64().unwrap();
    assert!(
        (0.3..0.37).contains(&rate),
        "a third of the canary's requests fail: {rate}"
    );

    let check = ymera(
        &url,
        &[
            "rollout",
            "check",
            "--service",
            "shop",
            "--stable",
            "1.0.0",
            "--canary",
            "1.1.0",
            "--max-latency-ratio",
            "1000",
        ],
    );
    let text = String::from_utf8_lossy(&check.stdout);
    assert_eq!(
        check.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        text.contains(": fail") && text.contains("canary error rate"),
        "{text}"
    );

    // Reversed (1.1.0 as stable), 1.0.0 is no worse: the gate passes.
    let check = ymera(
        &url,
        &[
            "--json",
            "rollout",
            "check",
            "--service",
            "shop",
            "--stable",
            "1.1.0",
            "--canary",
            "1.0.0",
            "--max-latency-ratio",
            "1000",
        ],
    );
    let verdict: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(check.status.code(), Some(0), "{verdict}");
    assert_eq!(verdict["verdict"], "pass");

    // A version nobody runs: inconclusive, exit 2.
    let check = ymera(
        &url,
        &["rollout", "check", "--stable", "1.0.0", "--canary", "9.9.9"],
    );
    assert_eq!(check.status.code(), Some(2));
    for stop in stops {
        stop.cancel();
    }
}

/// Two real service binaries at once, the canary's version set with
/// `YMERA_VERSION_OVERRIDE`: `ymera rollout status` shows both versions.
#[test]
fn version_override_tells_two_real_binaries_apart() {
    let binary = std::path::Path::new(YMERA).with_file_name("ymera-code-analysis");
    if !binary.is_file() {
        eprintln!(
            "skipped: {} not built (cargo build --bins)",
            binary.display()
        );
        return;
    }
    let nats = ymera_testkit::NatsServer::start().unwrap();
    let url = nats.url();
    let mut children = Vec::new();
    for version in [None, Some("0.1.0-canary.1")] {
        let mut cmd = Command::new(&binary);
        cmd.env_clear()
            .env("NATS_URL", &url)
            .env("YMERA_AUTH", "off")
            .env("YMERA_HTTP_ADDR", "127.0.0.1:0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(v) = version {
            cmd.env("YMERA_VERSION_OVERRIDE", v);
        }
        children.push(cmd.spawn().unwrap());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let out = ymera(
            &url,
            &["--json", "rollout", "status", "--service", "code-analysis"],
        );
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if rows.len() == 2 || std::time::Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let versions: Vec<&str> = rows.iter().filter_map(|r| r["version"].as_str()).collect();
    assert_eq!(
        versions,
        vec![env!("CARGO_PKG_VERSION"), "0.1.0-canary.1"],
        "{rows:?}"
    );
}
