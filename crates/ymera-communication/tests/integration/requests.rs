//! Bad requests get the documented error codes and change nothing; the rate
//! limit, the backlog bound and expiry.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use ymera_communication::settings::CommSettings;
use ymera_core::error::ErrorKind;
use ymera_testkit::Redis;

use ymera_testkit::eventually;

use crate::common::{
    Agent, Recipient, client, config, database, envelope, fast_settings, nats, pool, states,
};

/// Messages in history, and delivery rows of any message but `except`
/// (whose copy may gain a row from its own delivery attempts meanwhile).
async fn history_rows(pool: &sqlx::PgPool, except: &str) -> (i64, i64) {
    let messages: i64 = sqlx::query_scalar("SELECT count(*) FROM message_history")
        .fetch_one(pool)
        .await
        .unwrap();
    let copies: i64 =
        sqlx::query_scalar("SELECT count(*) FROM message_deliveries WHERE message_id <> $1")
            .bind(except)
            .fetch_one(pool)
            .await
            .unwrap();
    (messages, copies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_documented_codes_and_store_nothing() {
    let nats = nats();
    let db = database();
    let _agent = Agent::start(config(&nats, &db), fast_settings()).await;
    let client = client(&nats.url()).await;
    let pool = pool(&db).await;
    let ok: Value = client
        .request(
            "communication.send",
            &envelope("tester", &["someone"], "fine"),
        )
        .await
        .unwrap();
    assert_eq!(ok["status"], "accepted");
    let ok_id = ok["id"].as_str().unwrap().to_owned();
    // Its status is readable at once (the agent writes its own pending row first).
    let status: Value = client
        .request("communication.status", &json!({"id": ok_id}))
        .await
        .unwrap();
    assert_eq!(status["recipients"][0]["recipient"], "someone");
    let before = history_rows(&pool, &ok_id).await;
    assert_eq!(before.0, 1, "the accepted message is in history");

    let mut oversized = envelope("tester", &["someone"], "big");
    oversized["payload"] = json!("x".repeat(1_200_000));
    let mut expired = envelope("tester", &["someone"], "old");
    expired["expires_at"] = json!("2020-01-01T00:00:00Z");
    let mut unknown = envelope("tester", &["someone"], "odd");
    unknown["colour"] = json!("blue");
    let mut bad_name = envelope("Tester!", &["someone"], "who");
    bad_name["recipients"] = json!([]);
    let deep = format!(
        r#"{{"type":"event","sender":"a","recipients":["b"],"subject":"s","payload":{}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let nul = r#"{"type":"event","sender":"a","recipients":["b"],"subject":"s\u0000","payload":1}"#;
    let cases: Vec<(&str, Bytes, ErrorKind)> = vec![
        (
            "oversized",
            Bytes::from(serde_json::to_vec(&oversized).unwrap()),
            ErrorKind::PayloadTooLarge,
        ),
        (
            "malformed",
            Bytes::from_static(b"{\"type\": "),
            ErrorKind::InvalidRequest,
        ),
        (
            "bad utf-8",
            Bytes::from_static(b"{\"type\":\"event\",\"sender\":\"\xff\xfe\"}"),
            ErrorKind::InvalidRequest,
        ),
        ("too deep", Bytes::from(deep), ErrorKind::InvalidRequest),
        (
            "raw NUL byte",
            Bytes::from_static(b"{\"type\":\"event\",\"sender\":\"a\x00\"}"),
            ErrorKind::InvalidRequest,
        ),
        ("escaped NUL", Bytes::from(nul), ErrorKind::ValidationFailed),
        (
            "unknown field",
            Bytes::from(serde_json::to_vec(&unknown).unwrap()),
            ErrorKind::InvalidRequest,
        ),
        (
            "expired",
            Bytes::from(serde_json::to_vec(&expired).unwrap()),
            ErrorKind::ValidationFailed,
        ),
        (
            "bad names",
            Bytes::from(serde_json::to_vec(&bad_name).unwrap()),
            ErrorKind::ValidationFailed,
        ),
        ("empty", Bytes::new(), ErrorKind::InvalidRequest),
    ];
    for (what, body, kind) in cases {
        let err = client
            .request_bytes("communication.send", body)
            .await
            .expect_err(what);
        assert_eq!(err.kind, kind, "{what}: {err}");
    }
    let err = client
        .request::<_, Value>("communication.status", &json!({"id": uuid::Uuid::now_v7()}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    let err = client
        .request::<_, Value>("communication.history", &json!({"limit": 1001}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::ValidationFailed);
    assert_eq!(
        history_rows(&pool, &ok_id).await,
        before,
        "bad requests stored nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_rate_sends_get_429_shared_through_redis() {
    let nats = nats();
    let db = database();
    let redis = Redis::start().unwrap();
    let mut cfg = config(&nats, &db);
    cfg.redis_url = Some(redis.url());
    let settings = CommSettings {
        rate_limit: 3,
        rate_period: Duration::from_secs(60),
        ..fast_settings()
    };
    let _agent = Agent::start(cfg, settings).await;
    let client = client(&nats.url()).await;
    let pool = pool(&db).await;
    for i in 0..3 {
        let _: Value = client
            .request(
                "communication.send",
                &envelope("chatty", &["someone"], &format!("{i}")),
            )
            .await
            .unwrap();
    }
    let err = client
        .request::<_, Value>(
            "communication.send",
            &envelope("chatty", &["someone"], "one too many"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::RateLimited);
    assert!(err.details["retry_after_ms"].as_u64().unwrap() > 0);
    // Another sender has its own budget.
    let _: Value = client
        .request(
            "communication.send",
            &envelope("quiet", &["someone"], "hello"),
        )
        .await
        .unwrap();
    // History reads the agent's own writes: all four accepted sends, no more.
    let page: Value = client
        .request("communication.history", &json!({}))
        .await
        .unwrap();
    assert_eq!(page["messages"].as_array().unwrap().len(), 4);
    assert_eq!(history_rows(&pool, "").await.0, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_backlog_answers_503() {
    let nats = nats();
    let db = database();
    let settings = CommSettings {
        backlog_limit: 5,
        retry_base: Duration::from_secs(30),
        retry_cap: Duration::from_secs(60),
        ..fast_settings()
    };
    let _agent = Agent::start(config(&nats, &db), settings).await;
    let client = client(&nats.url()).await;
    for i in 0..5 {
        let _: Value = client
            .request(
                "communication.send",
                &envelope("tester", &["absent"], &format!("{i}")),
            )
            .await
            .unwrap();
    }
    let err = client
        .request::<_, Value>(
            "communication.send",
            &envelope("tester", &["absent"], "sixth"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert_eq!(err.details["reason"], "backlog_full");
    assert_eq!(err.details["recipient"], "absent");
    // Other recipients are not affected.
    let _: Value = client
        .request(
            "communication.send",
            &envelope("tester", &["present"], "fine"),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_never_delivered() {
    let nats = nats();
    let db = database();
    let _agent = Agent::start(config(&nats, &db), fast_settings()).await;
    let client = client(&nats.url()).await;
    let mut env = envelope("tester", &["late"], "short-lived");
    env["expires_at"] =
        json!((chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339());
    let reply: Value = client.request("communication.send", &env).await.unwrap();
    let id = reply["id"].as_str().unwrap().to_owned();
    let pool = pool(&db).await;
    eventually(Duration::from_secs(30), "copy expired", || async {
        states(&pool, "late").await.get("expired") == Some(&1)
    })
    .await;
    let recipient = Recipient::start(&nats.url(), "late", false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(recipient.count(), 0);
    let status: Value = client
        .request("communication.status", &json!({"id": id}))
        .await
        .unwrap();
    assert_eq!(status["recipients"][0]["state"], "expired");
    assert_eq!(status["status"], "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_required_refuses_anonymous_callers() {
    let nats = nats();
    let db = database();
    let mut cfg = config(&nats, &db);
    cfg.auth = ymera_core::config::AuthMode::Required;
    let _agent = Agent::start(cfg, fast_settings()).await;
    let anonymous = client(&nats.url()).await;
    let env = envelope("tester", &["someone"], "who am i");
    let err = anonymous
        .request::<_, Value>("communication.send", &env)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthenticated);
    let err = anonymous
        .request::<_, Value>("communication.history", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthenticated);
    // With a credential but no security service to check it: 503, never a pass.
    let keyed = anonymous
        .clone()
        .with_credential(Some(ymera_core::client::Credential::ApiKey(
            "ymk_test".into(),
        )));
    let err = keyed
        .request::<_, Value>("communication.send", &env)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    let pool = pool(&db).await;
    assert_eq!(history_rows(&pool, "").await, (0, 0));
}
