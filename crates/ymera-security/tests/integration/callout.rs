//! NATS login with Ymera credentials: a real nats-server with `auth_callout` pointing at
//! the security service. Each agent connects with its API key (or a token from it) as the
//! NATS token and gets exactly the subjects its key's permissions open.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use ymera_security::SecuritySettings;
use ymera_testkit::{NatsOptions, Servers, ServersOptions};

use crate::common::{SecurityService, service_config, start_security_as};

/// Password of every static user in the test's copy of the deploy files.
const PASSWORD: &str = "test-password";

/// nats-server with the shipped callout configuration (`deploy/nats-callout.conf` and the
/// `deploy/nats-accounts.conf` it includes), the server's environment variables written in:
/// the callout's login in the AUTH account, the services as static users, everyone else
/// through the callout. The authorization timeout is cut to 1 s.
fn callout_servers(issuer: &nkeys::KeyPair) -> (Servers, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    for file in ["nats-callout.conf", "nats-accounts.conf"] {
        let mut text = std::fs::read_to_string(deploy.join(file)).unwrap();
        text = text.replace("$NATS_CALLOUT_ISSUER", &issuer.public_key());
        text = text.replace("timeout: 2", "timeout: 1");
        for var in [
            "SYS",
            "COMM",
            "CONFIG",
            "DRAFTING",
            "CODE_ANALYSIS",
            "SECURITY",
            "GATEWAY",
            "CLI",
            "AGENT_DEMO",
            "CALLOUT",
        ] {
            text = text.replace(&format!("$NATS_{var}_PASSWORD"), &format!("\"{PASSWORD}\""));
        }
        let left = text
            .lines()
            .find(|l| !l.trim_start().starts_with('#') && l.contains("$NATS_"));
        assert!(left.is_none(), "{file}: a variable left: {left:?}");
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let servers = Servers::start_with(ServersOptions {
        nats: NatsOptions {
            config_file: Some(dir.path().join("nats-callout.conf")),
            ..NatsOptions::default()
        },
        redis: false,
    });
    (servers, dir)
}

/// Waits until the server has handled everything `client` sent before (its
/// subscriptions above all): a request answered by the security service goes after them.
/// (async-nats' `flush` may return before a subscription's SUB is on the wire.)
async fn synced(client: &async_nats::Client) {
    client
        .request("security.jwks", "{}".into())
        .await
        .expect("security.jwks answers");
}

/// A static user of the deploy files (`communication`, `config`, …).
async fn static_user(servers: &Servers, user: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), PASSWORD.into())
        .connect(servers.nats_url())
        .await
        .unwrap()
}

async fn start(issuer: &nkeys::KeyPair) -> (Servers, SecurityService, tempfile::TempDir) {
    let (servers, dir) = callout_servers(issuer);
    let mut config = service_config(&servers);
    config.nats.user_password = Some(("security".into(), PASSWORD.into()));
    let seed = issuer.seed().unwrap();
    let settings = SecuritySettings::from_lookup(|name| match name {
        "YMERA_API_KEY_PEPPER" => Some("test-pepper-0123456789abcdef0123456789".into()),
        "YMERA_MASTER_KEY" => Some("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into()),
        "YMERA_NATS_CALLOUT_ISSUER_SEED" => Some(seed.clone()),
        "YMERA_NATS_CALLOUT_USER" => Some("auth-callout".into()),
        "YMERA_NATS_CALLOUT_PASSWORD" => Some(PASSWORD.into()),
        _ => None,
    })
    .unwrap();
    let svc = start_security_as(config, settings, Some(("cli".into(), PASSWORD.into()))).await;
    (servers, svc, dir)
}

/// Connects agent `name` with `credential` as its NATS token.
async fn agent(
    servers: &Servers,
    name: &str,
    credential: &str,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::with_token(credential.to_owned())
        .custom_inbox_prefix(format!("_INBOX.{name}"))
        .connection_timeout(Duration::from_secs(5))
        .connect(servers.nats_url())
        .await
}

fn refused(result: Result<async_nats::Client, async_nats::ConnectError>) -> bool {
    matches!(result, Err(e) if e.kind() == async_nats::ConnectErrorKind::AuthorizationViolation)
}

/// Asserts that `allowed` receives the next message within 5 s and `denied` nothing: the
/// agent published to the denied subject first, and a connection's messages are handled
/// in order, so a delivery to `denied` would have arrived before the allowed one.
async fn only_allowed_arrives(
    allowed: &mut async_nats::Subscriber,
    denied: &mut async_nats::Subscriber,
) {
    tokio::time::timeout(Duration::from_secs(5), allowed.next())
        .await
        .expect("the allowed publish arrives")
        .expect("subscription open");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), denied.next())
            .await
            .is_err(),
        "a publish outside the key's permissions arrived"
    );
}

#[tokio::test]
async fn callout_grants_what_each_key_allows() {
    let issuer = nkeys::KeyPair::new_account();
    let (servers, svc, _dir) = start(&issuer).await;
    // The communication and config services' static users see their endpoint subjects.
    let communication = static_user(&servers, "communication").await;
    let config = static_user(&servers, "config").await;
    let cli = static_user(&servers, "cli").await;
    let mut sends = communication.subscribe("communication.send").await.unwrap();
    let mut gets = config.subscribe("config.get").await.unwrap();
    synced(&communication).await;
    synced(&config).await;

    let (sender_key, sender_id) = svc.create_key("reviewer", "acme", &["comm:send"]).await;
    let (reader_key, _) = svc.create_key("reader", "acme", &["config:read"]).await;

    // Publish: comm:send opens communication.send, not config.get; config:read the reverse.
    let reviewer = agent(&servers, "reviewer", &sender_key)
        .await
        .expect("key logs in");
    reviewer.publish("config.get", "{}".into()).await.unwrap();
    reviewer
        .publish("communication.send", "{}".into())
        .await
        .unwrap();
    reviewer.flush().await.unwrap();
    only_allowed_arrives(&mut sends, &mut gets).await;

    let reader = agent(&servers, "reader", &reader_key)
        .await
        .expect("key logs in");
    reader
        .publish("communication.send", "{}".into())
        .await
        .unwrap();
    reader.publish("config.get", "{}".into()).await.unwrap();
    reader.flush().await.unwrap();
    only_allowed_arrives(&mut gets, &mut sends).await;

    // Subscribe: its own inbox, not another agent's. The CLI user (which may publish to
    // every inbox) sends to the other inbox first.
    let mut own = reviewer.subscribe("agent.reviewer.inbox").await.unwrap();
    let mut other = reviewer.subscribe("agent.reader.inbox").await.unwrap();
    synced(&reviewer).await;
    cli.publish("agent.reader.inbox", "x".into()).await.unwrap();
    let reply = cli.request("agent.reviewer.inbox", "ping".into());
    let answered = async {
        let msg = tokio::time::timeout(Duration::from_secs(10), own.next())
            .await
            .expect("the agent's own inbox receives within 10 s")
            .unwrap();
        assert_eq!(msg.payload.as_ref(), b"ping");
        // Answering a delivery (one reply to the request's reply subject) is allowed.
        reviewer
            .publish(msg.reply.unwrap(), "pong".into())
            .await
            .unwrap();
        reviewer.flush().await.unwrap();
    };
    let (reply, ()) = tokio::join!(reply, answered);
    assert_eq!(reply.unwrap().payload.as_ref(), b"pong");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), other.next())
            .await
            .is_err(),
        "another agent's inbox must not be readable"
    );

    // Requests to the platform: replies come back on the agent's own inbox prefix.
    let jwks = reviewer
        .request("security.jwks", "{}".into())
        .await
        .expect("security.jwks answers the agent");
    assert!(serde_json::from_slice::<Value>(&jwks.payload).unwrap()["keys"].is_array());
    // A bearer token issued from the key logs in too.
    let issued: Value = svc
        .with_key(&sender_key)
        .request("security.tokens.issue", &json!({"ttl_seconds": 600}))
        .await
        .unwrap();
    let token = issued["token"].as_str().unwrap();
    assert!(agent(&servers, "reviewer", token).await.is_ok());

    // Wrong, missing and revoked credentials are refused.
    assert!(refused(
        agent(&servers, "reviewer", "ymk_bogus_credential").await
    ));
    assert!(refused(
        async_nats::ConnectOptions::new()
            .connect(servers.nats_url())
            .await
    ));
    let revoked: Value = svc
        .admin()
        .request("security.keys.revoke", &json!({"key_id": sender_id}))
        .await
        .unwrap();
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    assert!(refused(agent(&servers, "reviewer", &sender_key).await));
    assert!(refused(agent(&servers, "reviewer", token).await));
    svc.wait_for_event("revoked_key").await;
    drop(reviewer);
    svc.stop().await;
}

#[tokio::test]
async fn security_down_refuses_new_logins_and_keeps_existing_ones() {
    let issuer = nkeys::KeyPair::new_account();
    let (servers, svc, _dir) = start(&issuer).await;
    let observer = static_user(&servers, "communication").await;
    let mut sends = observer.subscribe("communication.send").await.unwrap();
    synced(&observer).await;
    let (key, _) = svc.create_key("worker", "acme", &["comm:send"]).await;
    let worker = agent(&servers, "worker", &key).await.expect("logs in");

    svc.stop().await;
    assert!(refused(agent(&servers, "worker", &key).await));

    worker
        .publish("communication.send", "still here".into())
        .await
        .unwrap();
    worker.flush().await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), sends.next())
        .await
        .expect("the existing connection still publishes")
        .unwrap();
    assert_eq!(msg.payload.as_ref(), b"still here");
}
