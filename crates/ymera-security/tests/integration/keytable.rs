//! The in-memory API key table of each replica: a key created on one
//! replica works on another at once, a revocation on one replica is refused
//! by the other immediately after the revoke call returns (keys and
//! tokens), and a replica
//! whose notification connection is cut stops trusting its table, reloads
//! it, and sees a revocation made meanwhile by plain SQL.

use std::future::ready;
use std::time::Duration;

use serde_json::{Value, json};
use ymera_security::keycache::TokenStatus;
use ymera_testkit::{NatsServer, Servers, eventually};

use crate::common::{authorize_read, service_config, service_config_on, start_security};

/// How long a replica's table may take to follow.
const FOLLOW: Duration = Duration::from_secs(10);

/// Revokes a key behind the service's back.
async fn revoke_by_sql(pool: &sqlx::PgPool, key_id: &str) {
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE key_id = $1")
        .bind(key_id)
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn key_table_follows_creations_and_revocations_on_every_replica() {
    let servers = Servers::start();
    let nats_b = NatsServer::start().unwrap();
    let a = start_security(service_config(&servers)).await;
    let b = start_security(service_config_on(&servers, &nats_b)).await;
    eventually(FOLLOW, "both key tables are live", || {
        ready(a.state.key_table().is_live() && b.state.key_table().is_live())
    })
    .await;

    for round in 0..10 {
        let (key, key_id) = a
            .create_key(&format!("user{round}"), "acme", &["config:read"])
            .await;
        // Created on A, used on B at once: granted (from B's table, or from
        // PostgreSQL if B's notification is still on its way).
        let answer = authorize_read(&b, &key).await;
        assert_eq!(answer["allowed"], true, "round {round}: {answer}");
        assert_eq!(answer["principal"]["key_id"], key_id.as_str());
        // The creation notification reaches B's table.
        eventually(FOLLOW, "B's table holds the new key", || {
            ready(b.state.key_table().get(&key_id).is_some())
        })
        .await;
        assert_eq!(authorize_read(&b, &key).await["allowed"], true);

        let revoked: Value = a
            .admin()
            .request("security.keys.revoke", &json!({"key_id": key_id}))
            .await
            .unwrap();
        assert_eq!(revoked["status"], "revoked");
        // Immediately after the revoke call returns, on both replicas.
        for (name, svc) in [("a", &a), ("b", &b)] {
            let answer = authorize_read(svc, &key).await;
            assert_eq!(answer["allowed"], false, "round {round} on {name}");
            assert_eq!(answer["reason"], "revoked_key", "round {round} on {name}");
        }
    }

    // A revoked token (its jti) is refused by the other replica at once,
    // from that replica's memory.
    let (key, key_id) = a.create_key("dora", "acme", &["config:read"]).await;
    eventually(FOLLOW, "B's table holds dora's key", || {
        ready(b.state.key_table().get(&key_id).is_some())
    })
    .await;
    for round in 0..5 {
        let issued: Value = a
            .with_key(&key)
            .request("security.tokens.issue", &json!({"ttl_seconds": 600}))
            .await
            .unwrap();
        let token = issued["token"].as_str().unwrap().to_owned();
        let jti = issued["jti"].as_str().unwrap().to_owned();
        assert_eq!(
            b.state.key_table().token_status(&jti, &key_id),
            Some(TokenStatus::Valid)
        );
        assert_eq!(
            authorize_read(&b, &format!("Bearer {token}")).await["allowed"],
            true
        );
        let revoked: Value = a
            .client
            .request("security.tokens.revoke", &json!({"token": token}))
            .await
            .unwrap();
        assert_eq!(revoked["revoked"], true);
        let answer = authorize_read(&b, &format!("Bearer {token}")).await;
        assert_eq!(answer["reason"], "revoked_token", "round {round}: {answer}");
        assert_eq!(
            b.state.key_table().token_status(&jti, &key_id),
            Some(TokenStatus::TokenRevoked)
        );
    }

    // Cut every notification connection: the replicas stop trusting their
    // tables (keys are checked in PostgreSQL meanwhile), reconnect and reload.
    let (key, key_id) = a.create_key("erin", "acme", &["config:read"]).await;
    eventually(FOLLOW, "B's table holds erin's key", || {
        ready(b.state.key_table().get(&key_id).is_some())
    })
    .await;
    let terminated: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_all(&a.pool)
    .await
    .unwrap();
    assert_eq!(terminated.len(), 2, "one listener per replica");
    eventually(FOLLOW, "B notices the lost listener", || {
        ready(!b.state.key_table().is_live())
    })
    .await;
    // A revocation by plain SQL (no notification) while B is reconnecting.
    revoke_by_sql(&a.pool, &key_id).await;
    let answer = authorize_read(&b, &key).await;
    assert_eq!(answer["reason"], "revoked_key", "{answer}");
    eventually(FOLLOW, "B's table is live again", || {
        ready(b.state.key_table().is_live())
    })
    .await;
    let answer = authorize_read(&b, &key).await;
    assert_eq!(answer["reason"], "revoked_key", "{answer}");
    // And notifications flow again after the reconnect.
    let (key, key_id) = a.create_key("frank", "acme", &["config:read"]).await;
    eventually(FOLLOW, "B's table holds frank's key", || {
        ready(b.state.key_table().get(&key_id).is_some())
    })
    .await;
    a.admin()
        .request::<_, Value>("security.keys.revoke", &json!({"key_id": key_id}))
        .await
        .unwrap();
    assert_eq!(authorize_read(&b, &key).await["reason"], "revoked_key");

    // With the listener live, a revocation by plain SQL reaches B's table
    // at commit (the migration's trigger), not at the next 60 s reload.
    let (key, key_id) = a.create_key("george", "acme", &["config:read"]).await;
    eventually(FOLLOW, "B's table holds george's key", || {
        ready(b.state.key_table().get(&key_id).is_some())
    })
    .await;
    revoke_by_sql(&a.pool, &key_id).await;
    eventually(FOLLOW, "B's table sees the plain-SQL revocation", || {
        ready(
            b.state
                .key_table()
                .get(&key_id)
                .is_none_or(|k| k.revoked_at.is_some()),
        )
    })
    .await;
    assert_eq!(authorize_read(&b, &key).await["reason"], "revoked_key");
    // So does a token id put on the deny-list by plain SQL.
    let (_, harry_id) = a.create_key("harry", "acme", &["config:read"]).await;
    eventually(FOLLOW, "B's table holds harry's key", || {
        ready(b.state.key_table().get(&harry_id).is_some())
    })
    .await;
    let jti = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, now() + interval '10 minutes')",
    )
    .bind(&jti)
    .execute(&a.pool)
    .await
    .unwrap();
    eventually(FOLLOW, "B's table holds the plain-SQL jti", || {
        ready({
            b.state.key_table().token_status(&jti, &harry_id) == Some(TokenStatus::TokenRevoked)
        })
    })
    .await;

    b.stop().await;
    a.stop().await;
}
