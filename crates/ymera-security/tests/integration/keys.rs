//! API keys, authorize, bootstrap, events and the report.

use std::os::unix::fs::PermissionsExt;

use serde_json::{Value, json};
use ymera_security::BootstrapOutcome;
use ymera_testkit::{Servers, http_get};

use crate::common::{
    authorize, code_and_reason, service_config, start_security, subscribe_events, test_pepper,
};

#[tokio::test]
async fn keys_authorize_events_and_report() {
    let servers = Servers::start();
    let mut config = service_config(&servers);
    let http_port = ymera_testkit::free_port().unwrap();
    config.http_addr = std::net::SocketAddr::from(([127, 0, 0, 1], http_port));
    let svc = start_security(config).await;
    let mut published = subscribe_events(&svc.client).await;

    // Bootstrap: mode 0600, idempotent while the key is valid.
    let mode = std::fs::metadata(&svc.admin_key_path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let again =
        ymera_security::bootstrap_admin_key(svc.state.pool(), &test_pepper(), &svc.admin_key_path)
            .await
            .unwrap();
    assert!(matches!(again, BootstrapOutcome::Existing { .. }));
    assert!(ymera_security::apikey::looks_like_key(&svc.admin_key));

    // Create a tenant key; the secret is shown once and never stored.
    let (key, key_id) = svc
        .create_key("alice", "acme", &["config:read", "comm:send"])
        .await;
    assert!(key.starts_with(&format!("ymk_{key_id}_")));
    let leaked: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys a WHERE a::text LIKE $1")
        .bind(format!("%{}%", &key[17..49]))
        .fetch_one(&svc.pool)
        .await
        .unwrap();
    assert_eq!(leaked, 0, "the secret must not be stored");
    let stored_events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM security_events e WHERE e::text LIKE $1")
            .bind(format!("%{}%", &key[17..49]))
            .fetch_one(&svc.pool)
            .await
            .unwrap();
    assert_eq!(stored_events, 0);

    // list never returns secrets or hashes.
    let list: Value = svc
        .admin()
        .request("security.keys.list", &json!({"tenant": "acme"}))
        .await
        .unwrap();
    let text = list.to_string();
    assert!(text.contains(&key_id));
    assert!(!text.contains("secret") && !text.contains(&key[17..]));
    assert_eq!(list["keys"][0]["status"], "active");

    // authorize: granted, missing permission, other tenant.
    let ok = authorize(&svc, &key, "config:read", Some("acme")).await;
    assert_eq!(ok["allowed"], true, "{ok}");
    assert_eq!(ok["principal"]["owner"], "alice");
    assert_eq!(ok["reason"], "granted");
    let no = authorize(&svc, &key, "config:write", Some("acme")).await;
    assert_eq!(no["allowed"], false);
    assert_eq!(no["reason"], "insufficient_permissions");
    let other = authorize(&svc, &key, "config:read", Some("globex")).await;
    assert_eq!(other["allowed"], false);
    assert_eq!(other["reason"], "tenant_mismatch");
    let event = svc.wait_for_event("insufficient_permissions").await;
    assert_eq!(event["principal"], "alice");

    // Unknown id, bad checksum, truncated key and wrong secret: one answer.
    let pepper = test_pepper();
    let unknown = ymera_security::apikey::generate(&pepper).full;
    let mut bad_sum = key.clone();
    bad_sum.replace_range(key.len() - 1.., if key.ends_with('A') { "B" } else { "A" });
    let truncated = key[..key.len() - 5].to_owned();
    let wrong_secret = {
        // Same id, different secret, valid checksum.
        let other = ymera_security::apikey::generate(&pepper).full;
        forge_with_checksum(&format!("ymk_{key_id}_{}", &other[17..49]))
    };
    assert!(ymera_security::apikey::looks_like_key(&wrong_secret));
    for bad in [&unknown, &bad_sum, &truncated, &wrong_secret] {
        let reply = authorize(&svc, bad, "config:read", None).await;
        assert_eq!(
            reply,
            json!({"allowed": false, "principal": null, "permissions": [], "reason": "invalid_api_key"}),
            "{bad}"
        );
        let err = svc
            .with_key(bad)
            .request::<_, Value>("security.keys.list", &json!({}))
            .await
            .unwrap_err();
        assert_eq!(code_and_reason(&err), (401, Some("invalid_api_key".into())));
    }
    svc.wait_for_events("invalid_api_key", 8).await;

    // An unscoped key on an admin endpoint: 403 and an event.
    let err = svc
        .with_key(&key)
        .request::<_, Value>("security.keys.list", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 403);
    // No escalation: an admin of tenant acme cannot mint keys beyond its own permissions or tenant.
    let (acme_admin, _) = svc
        .create_key("root-acme", "acme", &["security:admin", "config:read"])
        .await;
    let err = svc
        .with_key(&acme_admin)
        .request::<_, Value>(
            "security.keys.create",
            &json!({"owner": "bob", "permissions": ["config:write"]}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), 403);
    let err = svc
        .with_key(&acme_admin)
        .request::<_, Value>(
            "security.keys.create",
            &json!({"owner": "bob", "tenant": "globex", "permissions": ["config:read"]}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), 403);
    let bob: Value = svc
        .with_key(&acme_admin)
        .request(
            "security.keys.create",
            &json!({"owner": "bob", "permissions": ["config:read"], "expires_in_days": 7}),
        )
        .await
        .unwrap();
    assert_eq!(bob["tenant"], "acme");
    // Bad input is 422 with paths.
    let err = svc
        .admin()
        .request::<_, Value>(
            "security.keys.create",
            &json!({"owner": "bad\nowner", "permissions": ["nope"], "expires_in_days": 0}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), 422);

    // Expired and revoked keys.
    let (old, old_id) = svc.create_key("carol", "acme", &["config:read"]).await;
    // An out-of-band edit notifies the key tables like the service's own
    // statements do (see keycache.rs; without it the periodic reload picks
    // it up); wait until this replica's table has it.
    sqlx::query(
        "WITH e AS (UPDATE api_keys SET expires_at = now() - interval '1 second' \
         WHERE key_id = $1 RETURNING key_id) SELECT pg_notify($2, key_id) FROM e",
    )
    .bind(&old_id)
    .bind(ymera_security::keycache::CHANNEL)
    .execute(&svc.pool)
    .await
    .unwrap();
    for _ in 0..200 {
        if svc
            .state
            .key_table()
            .get(&old_id)
            .is_some_and(|k| k.expires_at <= chrono::Utc::now())
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(
        authorize(&svc, &old, "config:read", None).await["reason"],
        "expired_key"
    );
    let revoked: Value = svc
        .admin()
        .request("security.keys.revoke", &json!({"key_id": key_id}))
        .await
        .unwrap();
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(
        authorize(&svc, &key, "config:read", None).await["reason"],
        "revoked_key"
    );
    let err = svc
        .admin()
        .request::<_, Value>("security.keys.revoke", &json!({"key_id": "000000000000"}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 404);
    svc.wait_for_event("expired_key").await;
    svc.wait_for_event("revoked_key").await;
    let revoked_event = svc.wait_for_event("key_revoked").await;
    assert_eq!(revoked_event["key_id"], json!(key_id));

    // Oversized credential: refused before any crypto, with an event.
    let huge = "ymk_".to_owned() + &"a".repeat(9000);
    assert_eq!(
        authorize(&svc, &huge, "config:read", None).await["reason"],
        "credential_too_long"
    );
    let err = svc
        .with_key(&huge)
        .request::<_, Value>("security.keys.list", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 401);
    svc.wait_for_events("invalid_credential", 2).await;

    // Events are published on events.security.<type>, scrubbed.
    let mut seen = Vec::new();
    while let Ok(Some(msg)) =
        tokio::time::timeout(std::time::Duration::from_millis(500), published.recv()).await
    {
        assert!(!msg.to_string().contains(&key[17..49]));
        seen.push(msg["subject"].as_str().unwrap().to_owned());
    }
    for t in [
        "key_created",
        "invalid_api_key",
        "insufficient_permissions",
        "key_revoked",
        "expired_key",
        "revoked_key",
    ] {
        assert!(
            seen.iter().any(|s| s == &format!("events.security.{t}")),
            "{t} not published: {seen:?}"
        );
    }

    // Usage is counted (in batches) and the report follows the seed.
    let (dave, _) = svc.create_key("dave", "acme", &["analysis:run"]).await;
    for _ in 0..3 {
        assert_eq!(
            authorize(&svc, &dave, "analysis:run", None).await["allowed"],
            true
        );
    }
    let report: Value = svc
        .admin()
        .request("security.events.report", &json!({}))
        .await
        .unwrap();
    assert!(report["total_api_keys"].as_i64().unwrap() >= 6, "{report}");
    assert!(report["active_api_keys"].as_i64().unwrap() >= 2, "{report}");
    assert!(
        report["security_events_24h"].as_i64().unwrap() >= 10,
        "{report}"
    );
    assert!(
        report["event_breakdown"]["invalid_api_key"]
            .as_i64()
            .unwrap()
            >= 8
    );
    let users = report["most_active_users"].as_array().unwrap();
    assert!(
        users
            .iter()
            .any(|u| u["user"] == "dave" && u["usage_count"].as_i64().unwrap() >= 3),
        "{report}"
    );
    let err = svc
        .with_key(&dave)
        .request::<_, Value>("security.events.report", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 403);

    // Metrics on /metrics.
    let (_, metrics) = http_get(http_port, "/metrics").await;
    assert!(
        metrics.contains("ymera_security_events_total{type=\"invalid_api_key\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("ymera_auth_failures_total{reason=\"invalid_api_key\"}"));
    assert!(metrics.contains("ymera_auth_failures_total{reason=\"tenant_mismatch\"}"));

    // Without Redis the token deny-list lives in PostgreSQL: revocation still holds at once.
    let issued: Value = svc
        .with_key(&dave)
        .request("security.tokens.issue", &json!({}))
        .await
        .unwrap();
    let token = issued["token"].as_str().unwrap();
    assert_eq!(
        authorize(&svc, token, "analysis:run", None).await["allowed"],
        true
    );
    svc.client
        .request::<_, Value>("security.tokens.revoke", &json!({"token": token}))
        .await
        .unwrap();
    assert_eq!(
        authorize(&svc, token, "analysis:run", None).await["reason"],
        "revoked_token"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM revoked_tokens WHERE jti = $1")
        .bind(issued["jti"].as_str().unwrap())
        .fetch_one(&svc.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);

    // An admin key from before a platform permission existed is replaced
    // at the next bootstrap (else the platform's agents, answering with it,
    // would lack e.g. comm:send_as).
    let BootstrapOutcome::Existing { key_id: old_id } = again else {
        unreachable!()
    };
    sqlx::query(
        "UPDATE api_keys SET permissions = array_remove(permissions, 'comm:send_as') WHERE key_id = $1",
    )
    .bind(&old_id)
    .execute(&svc.pool)
    .await
    .unwrap();
    let renewed =
        ymera_security::bootstrap_admin_key(svc.state.pool(), &test_pepper(), &svc.admin_key_path)
            .await
            .unwrap();
    let BootstrapOutcome::Created { key_id: new_id } = renewed else {
        panic!("an admin key lacking a permission must be replaced: {renewed:?}")
    };
    assert_ne!(new_id, old_id);
    let new_key = std::fs::read_to_string(&svc.admin_key_path).unwrap();
    assert!(new_key.contains(&new_id));

    svc.stop().await;
}

/// `ymk_<id>_<secret>` plus a valid checksum (a forged key a scanner accepts).
fn forge_with_checksum(body: &str) -> String {
    const B62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut n = u64::from(crc32fast::hash(body.as_bytes()));
    let mut sum = [b'0'; 6];
    for slot in sum.iter_mut().rev() {
        *slot = B62[(n % 62) as usize];
        n /= 62;
    }
    format!("{body}{}", String::from_utf8(sum.to_vec()).unwrap())
}

#[tokio::test]
async fn production_refuses_missing_secrets_and_development_generates_them() {
    let servers = Servers::start();
    let pool = ymera_core::store::connect_postgres(&servers.database_url, 2)
        .await
        .unwrap();
    ymera_core::store::migrate(&pool).await.unwrap();
    let err =
        ymera_security::resolve_pepper(&pool, ymera_core::config::Environment::Production, None)
            .await
            .unwrap_err();
    assert_eq!(err.exit_code(), 64);
    assert!(err.to_string().contains("YMERA_API_KEY_PEPPER"));
    let err =
        ymera_security::resolve_master_key(&pool, ymera_core::config::Environment::Staging, None)
            .await
            .unwrap_err();
    assert!(err.to_string().contains("YMERA_MASTER_KEY"));
    // Development: a generated pepper, stable across restarts.
    let a =
        ymera_security::resolve_pepper(&pool, ymera_core::config::Environment::Development, None)
            .await
            .unwrap();
    let b =
        ymera_security::resolve_pepper(&pool, ymera_core::config::Environment::Development, None)
            .await
            .unwrap();
    assert_eq!(a.hash("x"), b.hash("x"));
    // Bad settings name the variable.
    let err = ymera_security::SecuritySettings::from_lookup(|n| {
        (n == "YMERA_MASTER_KEY").then(|| "short".to_owned())
    })
    .unwrap_err();
    assert_eq!(err.exit_code(), 64);
    assert!(err.to_string().starts_with("YMERA_MASTER_KEY"));
}
