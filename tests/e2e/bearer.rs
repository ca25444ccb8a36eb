//! Platform-wide authentication across processes (issue: the runtime checks
//! each endpoint's declared permission; bearer tokens are verified locally
//! against the cached JWKS): the config manager and the code-analysis agent
//! as processes with `YMERA_AUTH=required` accept a token issued by the
//! security service, refuse a revoked one on the next request, refuse a
//! token without the declared permission, and keep accepting valid tokens
//! while the security service is down (API keys then get 503).

use std::time::Duration;

use serde_json::{Value, json};
use ymera_testkit::{Servers, free_port, try_http_get};

use crate::services::{spawn, spawn_security, wait_healthy};

/// Calls `subject` with a credential header; (error code or None, body).
async fn call(
    client: &async_nats::Client,
    header: (&str, &str),
    subject: &str,
    body: Value,
) -> (Option<String>, Value) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(header.0, header.1);
    ymera_testkit::proto::request_raw(client, subject, headers, &body).await
}

fn bearer(token: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {token}"))
}

async fn issue(client: &async_nats::Client, key: &str, permissions: &[&str]) -> String {
    let (code, reply) = call(
        client,
        ("X-API-Key", key),
        "security.tokens.issue",
        json!({"permissions": permissions}),
    )
    .await;
    assert_eq!(code, None, "{reply}");
    reply["token"].as_str().unwrap().to_owned()
}

/// The config process's own count of bearer tokens it checked locally.
async fn local_checks(http_port: u16) -> u64 {
    let Some((_, text)) = try_http_get(http_port, "/metrics").await else {
        return 0;
    };
    text.lines()
        .find(|l| l.starts_with("ymera_auth_token_checks_total{path=\"local\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn services_verify_bearer_tokens_locally_and_follow_revocations() {
    let servers = Servers::start();
    let client = &servers.client().await;
    let (url, base) = (servers.nats_url(), servers.env());
    let (mut security, admin) = spawn_security(client, &base).await;
    let http_port = free_port().unwrap().to_string();
    let http_addr = format!("127.0.0.1:{http_port}");
    let mut config_env = base.clone();
    config_env.push(("YMERA_HTTP_ADDR", &http_addr));
    let _config = spawn("config", &config_env);
    let _analysis = spawn("code-analysis", &[("NATS_URL", url)]);
    wait_healthy(client, "config").await;
    wait_healthy(client, "code-analysis").await;

    let (code, created) = call(
        client,
        ("X-API-Key", &admin),
        "security.keys.create",
        json!({"owner": "alice", "tenant": "acme", "permissions": ["config:read", "config:write"]}),
    )
    .await;
    assert_eq!(code, None, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let token = issue(client, &key, &["config:read", "config:write"]).await;
    let (name, value) = bearer(&token);
    let set = json!({"agent": "billing", "environment": "base", "config": {"retries": 3}});
    let (code, reply) = call(client, (name, &value), "config.set", set).await;
    assert_eq!(code, None, "{reply}");
    // The writer recorded is the token's verified owner.
    let get = json!({"agent": "billing"});
    let (code, reply) = call(client, (name, &value), "config.get", get.clone()).await;
    assert_eq!(code, None, "{reply}");
    assert_eq!(reply["config"]["retries"], 3, "{reply}");
    assert_eq!(reply["updated_by"], "alice", "{reply}");

    // The declared permission is enforced before the handler runs.
    let analyze = json!({"files": [{"path": "a.py", "content": "x = 1\n"}]});
    let (code, _) = call(client, (name, &value), "code-analysis.analyze", analyze).await;
    assert_eq!(code.as_deref(), Some("403"));
    let (code, _) = call(client, ("X-Other", "x"), "config.get", get.clone()).await;
    assert_eq!(code.as_deref(), Some("401"));

    // A revoked token is refused by the next request.
    let doomed = issue(client, &key, &["config:read"]).await;
    let (n, v) = bearer(&doomed);
    assert_eq!(
        call(client, (n, &v), "config.get", get.clone()).await.0,
        None
    );
    let (code, _) = call(
        client,
        (n, &v),
        "security.tokens.revoke",
        json!({"token": doomed}),
    )
    .await;
    assert_eq!(code, None);
    let (code, reply) = call(client, (n, &v), "config.get", get.clone()).await;
    assert_eq!(code.as_deref(), Some("401"), "{reply}");
    assert_eq!(
        reply["error"]["details"]["reason"], "revoked_token",
        "{reply}"
    );

    // The config process checked those tokens itself...
    assert!(local_checks(http_port.parse().unwrap()).await >= 3);
    // ...so with the security service gone it still accepts a valid token,
    // while an API key (which only the security service can check) gets 503.
    security.kill().unwrap();
    let (code, reply) = call(client, (name, &value), "config.get", get.clone()).await;
    assert_eq!(code, None, "{reply}");
    assert_eq!(reply["config"]["retries"], 3);
    let mut unavailable = false;
    for _ in 0..50 {
        let (code, _) = call(client, ("X-API-Key", &key), "config.get", get.clone()).await;
        // A grant cached in the last 10 s may still answer; then 503.
        if code.as_deref() == Some("503") {
            unavailable = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(unavailable, "an API key must need the security service");
}
