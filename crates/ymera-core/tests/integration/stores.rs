//! PostgreSQL (with migrations) and Redis as the runtime sees them.

use serde_json::json;
use ymera_core::health::{HealthReport, HealthStatus};
use ymera_testkit::{Postgres, Redis};

use crate::common::{config_for, nats, start_example};

#[tokio::test]
async fn migrations_run_and_dependencies_show_in_health() {
    let nats = nats();
    let pg = Postgres::start().unwrap();
    let mut redis = Redis::start().unwrap();
    let mut config = config_for(&nats);
    config.postgres_url = Some(pg.create_database().unwrap());
    config.redis_url = Some(redis.url());
    let svc = start_example(config.clone()).await;

    let health: HealthReport = svc
        .client
        .request("example.health", &json!({}))
        .await
        .unwrap();
    assert_eq!(health.status, HealthStatus::Healthy);
    assert_eq!(health.checks["postgres"].status, HealthStatus::Healthy);
    assert_eq!(health.checks["redis"].status, HealthStatus::Healthy);

    let pool = ymera_core::store::connect_postgres(config.postgres_url.as_deref().unwrap(), 2)
        .await
        .unwrap();
    for table in [
        "message_history",
        "conversation_archive",
        "agent_configurations",
        "drafts",
    ] {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(exists, "{table} missing");
    }
    // Running migrations again (another replica starting) is a no-op.
    ymera_core::store::migrate(&pool).await.unwrap();

    // Redis is optional: without it the service is degraded, not unhealthy.
    redis.kill().unwrap();
    let health: HealthReport = svc
        .client
        .request("example.health", &json!({}))
        .await
        .unwrap();
    assert_eq!(health.checks["redis"].status, HealthStatus::Unhealthy);
    assert_eq!(health.status, HealthStatus::Degraded);
}

#[tokio::test]
async fn two_replicas_share_one_rate_limit_through_redis() {
    use std::time::Duration;
    use ymera_core::ratelimit::{RateLimit, RateLimiter};
    let redis = Redis::start().unwrap();
    let a = RateLimiter::new(
        "test:rl:",
        Some(
            ymera_core::store::connect_redis(&redis.url())
                .await
                .unwrap(),
        ),
    );
    let b = RateLimiter::new(
        "test:rl:",
        Some(
            ymera_core::store::connect_redis(&redis.url())
                .await
                .unwrap(),
        ),
    );
    assert!(a.is_shared());
    let limit = RateLimit::new(10, Duration::from_secs(60));
    let mut allowed = 0;
    for i in 0..40 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        let decision = limiter.check("sender-1", limit, 1).await;
        if decision.allowed {
            allowed += 1;
        } else {
            assert!(decision.retry_after_ms > 0);
            let err = decision.into_result().unwrap_err();
            assert_eq!(err.kind, ymera_core::ErrorKind::RateLimited);
            assert!(err.details["retry_after_ms"].as_u64().unwrap() > 0);
        }
    }
    assert_eq!(
        allowed, 10,
        "both replicas together allow exactly the limit"
    );
    // Another key is unaffected.
    assert!(b.check("sender-2", limit, 1).await.allowed);
}

/// The value of the sample `name{labels}` in Prometheus text, if present.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
}

/// `ymera_dependency_up{service="example", dependency}` from `/metrics`,
/// polled until every pair in `want` has its value (one probe round is 15 s plus a
/// 2 s probe; 60 s leaves room for a loaded machine: on one CI run the example
/// service had not started 25 s after its migrations began).
async fn wait_dependencies(port: u16, want: &[(&str, f64)]) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, body) = ymera_testkit::try_http_get(port, "/metrics")
            .await
            .unwrap_or_default();
        let all = want.iter().all(|(dep, value)| {
            sample(
                &body,
                &format!("ymera_dependency_up{{service=\"example\",dependency=\"{dep}\"}}"),
            ) == Some(*value)
        });
        if all {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "want {want:?}, got:\n{body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `ymera_dependency_up` for NATS, PostgreSQL, Redis and two called services
/// (one running, one that never exists), then Redis killed and the called
/// service stopped; the process metrics beside them.
#[tokio::test]
async fn dependency_up_follows_stores_and_called_services() {
    use ymera_core::runtime::{Runtime, ServiceBuilder};
    let nats = nats();
    let pg = Postgres::start().unwrap();
    let mut redis = Redis::start().unwrap();
    let port = ymera_testkit::free_port().unwrap();
    let mut config = config_for(&nats);
    config.postgres_url = Some(pg.create_database().unwrap());
    config.redis_url = Some(redis.url());
    config.http_addr = format!("127.0.0.1:{port}").parse().unwrap();

    let helper = Runtime::start("helper", config_for(&nats)).await.unwrap();
    let helper_stop = helper.shutdown_token();
    let helper_task = tokio::spawn(ServiceBuilder::new("helper", "0.1.0", "helper").serve(helper));
    let runtime = Runtime::start(ymera_core::example::NAME, config)
        .await
        .unwrap();
    runtime.calls("helper");
    runtime.calls("ghost");
    runtime.calls("example"); // its own name: ignored
    let stop = runtime.shutdown_token();
    let task = tokio::spawn(ymera_core::example::service().serve(runtime));

    let body = wait_dependencies(
        port,
        &[
            ("nats", 1.0),
            ("postgres", 1.0),
            ("redis", 1.0),
            ("helper", 1.0),
            ("ghost", 0.0),
        ],
    )
    .await;
    assert!(!body.contains("dependency=\"example\""), "{body}");
    assert!(
        body.contains("# HELP ymera_dependency_up "),
        "catalogued help text:\n{body}"
    );
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        let value = sample(&body, &format!("{name} ")).unwrap_or(-1.0);
        assert!(value >= 0.0, "{name}:\n{body}");
    }
    assert!(sample(&body, "process_open_fds ").unwrap() > 5.0);

    redis.kill().unwrap();
    helper_stop.cancel();
    helper_task.await.unwrap().unwrap();
    wait_dependencies(
        port,
        &[
            ("nats", 1.0),
            ("postgres", 1.0),
            ("redis", 0.0),
            ("helper", 0.0),
        ],
    )
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
}
