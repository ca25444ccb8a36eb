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
