//! `security.ratelimit.check`: validation, bursts, and two replicas sharing
//! one limit through Redis.

use serde_json::{Value, json};
use ymera_testkit::NatsServer;
use ymera_testkit::Servers;

use crate::common::{service_config, service_config_on, start_security};

#[tokio::test]
async fn ratelimit_validates_bounds_bursts_and_is_shared_by_replicas() {
    let servers = Servers::with_redis();
    // Two replicas on two separate NATS servers, sharing PostgreSQL and Redis:
    // each client can only reach its own replica, so a shared limit proves Redis.
    let nats_b = NatsServer::start().unwrap();
    let a = start_security(service_config(&servers)).await;
    let b = start_security(service_config_on(&servers, &nats_b)).await;

    // cost 0 or negative, and a cost over the limit, are 422.
    for cost in [0, -1, -100, 11] {
        let err = a
            .client
            .request::<_, Value>(
                "security.ratelimit.check",
                &json!({"key": "k", "limit": 10, "period_ms": 1000, "cost": cost}),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), 422, "cost {cost}");
    }
    let err = a
        .client
        .request::<_, Value>(
            "security.ratelimit.check",
            &json!({"key": "", "limit": 0, "period_ms": 0}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), 422);

    // A burst across a window boundary never exceeds limit + refill.
    let started = std::time::Instant::now();
    let mut allowed = 0u64;
    for _ in 0..40 {
        let d: Value = a
            .client
            .request(
                "security.ratelimit.check",
                &json!({"key": "burst", "limit": 10, "period_ms": 1000}),
            )
            .await
            .unwrap();
        if d["allowed"] == true {
            allowed += 1;
        } else {
            assert!(d["retry_after_ms"].as_u64().unwrap() >= 1);
            assert_eq!(d["remaining"], 0);
        }
    }
    let elapsed_ms = started.elapsed().as_millis() as u64;
    assert!(allowed >= 10);
    assert!(
        allowed <= 10 + elapsed_ms / 100 + 1,
        "{allowed} allowed in {elapsed_ms} ms"
    );
    a.wait_for_event("rate_limit_exceeded").await;

    // The classic fixed-window attack: a full burst just before a second
    // boundary and another just after. GCRA allows the first burst and
    // then only what has refilled since.
    let ms = chrono::Utc::now().timestamp_subsec_millis();
    tokio::time::sleep(std::time::Duration::from_millis(u64::from(
        (1950 - ms) % 1000,
    )))
    .await;
    let started = std::time::Instant::now();
    let mut allowed = 0u64;
    for i in 0..20 {
        if i == 10 {
            tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        }
        let d: Value = a
            .client
            .request(
                "security.ratelimit.check",
                &json!({"key": "boundary", "limit": 10, "period_ms": 1000}),
            )
            .await
            .unwrap();
        if d["allowed"] == true {
            allowed += 1;
        }
    }
    let elapsed_ms = started.elapsed().as_millis() as u64;
    assert!(allowed >= 10);
    assert!(
        allowed <= 10 + elapsed_ms / 100 + 1,
        "{allowed} allowed in {elapsed_ms} ms across a boundary"
    );

    // Two replicas share one limit: 5 per hour, alternating replicas.
    let mut allowed = 0;
    for i in 0..12 {
        let svc = if i % 2 == 0 { &a } else { &b };
        let d: Value = svc
            .client
            .request(
                "security.ratelimit.check",
                &json!({"key": "shared", "limit": 5, "period_ms": 3_600_000}),
            )
            .await
            .unwrap();
        assert_eq!(d["shared"], true);
        if d["allowed"] == true {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 5);

    // Token issuance is limited per key (60 per minute).
    let (key, _) = a.create_key("spammer", "acme", &["config:read"]).await;
    let mut limited = None;
    for _ in 0..70 {
        match a
            .with_key(&key)
            .request::<_, Value>("security.tokens.issue", &json!({}))
            .await
        {
            Ok(_) => {}
            Err(err) => {
                limited = Some(err);
                break;
            }
        }
    }
    let err = limited.expect("the 61st token in a minute is refused");
    assert_eq!(err.code(), 429);
    assert!(err.details["retry_after_ms"].as_u64().unwrap() >= 1);

    a.stop().await;
    b.stop().await;
}
