//! NATS login with Ymera credentials: a real nats-server with `auth_callout` pointing at
//! the security service. Each agent connects with its API key (or a token from it) as the
//! NATS token and gets exactly the subjects its key's permissions open.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use ymera_security::SecuritySettings;
use ymera_testkit::{NatsOptions, Servers, ServersOptions};

use crate::common::{SecurityService, service_config, start_security_with};

const SECURITY_PASSWORD: &str = "security-password";
const CALLOUT_PASSWORD: &str = "callout-password";

/// nats-server with the callout: the callout login in its own account, the security
/// service (and this test's observer) as a static user of YMERA, everyone else through
/// the callout.
fn callout_servers(issuer: &nkeys::KeyPair) -> (Servers, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            r#"
system_account: SYS
accounts {{
  AUTH {{ users: [ {{ user: callout, password: "{CALLOUT_PASSWORD}" }} ] }}
  YMERA {{ jetstream: enabled, users: [ {{ user: security, password: "{SECURITY_PASSWORD}" }} ] }}
  SYS {{ }}
}}
authorization {{
  timeout: 1
  auth_callout {{
    issuer: {issuer}
    auth_users: [ callout, security ]
    account: AUTH
  }}
}}
"#,
            issuer = issuer.public_key()
        ),
    )
    .unwrap();
    let servers = Servers::start_with(ServersOptions {
        nats: NatsOptions {
            config_file: Some(conf),
            ..NatsOptions::default()
        },
        redis: false,
    });
    (servers, dir)
}

async fn start(issuer: &nkeys::KeyPair) -> (Servers, SecurityService, tempfile::TempDir) {
    let (servers, dir) = callout_servers(issuer);
    let mut config = service_config(&servers);
    config.nats.user_password = Some(("security".into(), SECURITY_PASSWORD.into()));
    let seed = issuer.seed().unwrap();
    let settings = SecuritySettings::from_lookup(|name| match name {
        "YMERA_API_KEY_PEPPER" => Some("test-pepper-0123456789abcdef0123456789".into()),
        "YMERA_MASTER_KEY" => Some("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into()),
        "YMERA_NATS_CALLOUT_ISSUER_SEED" => Some(seed.clone()),
        "YMERA_NATS_CALLOUT_USER" => Some("callout".into()),
        "YMERA_NATS_CALLOUT_PASSWORD" => Some(CALLOUT_PASSWORD.into()),
        _ => None,
    })
    .unwrap();
    let svc = start_security_with(config, settings).await;
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

/// What the observer (a static YMERA user) sees next on `>`, other than its own traffic.
async fn next_subject(sub: &mut async_nats::Subscriber) -> String {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("a message within 5 s")
            .expect("subscription open");
        let subject = msg.subject.to_string();
        if subject.starts_with("agent.")
            || subject.starts_with("communication.")
            || subject.starts_with("config.")
        {
            return subject;
        }
    }
}

#[tokio::test]
async fn callout_grants_what_each_key_allows() {
    let issuer = nkeys::KeyPair::new_account();
    let (servers, svc, _dir) = start(&issuer).await;
    let observer = svc.client.nats().clone();
    let mut everything = observer.subscribe(">").await.unwrap();
    observer.flush().await.unwrap();

    let (sender_key, sender_id) = svc.create_key("reviewer", "acme", &["comm:send"]).await;
    let (reader_key, _) = svc.create_key("reader", "acme", &["config:read"]).await;

    // Publish: a denied subject first, then an allowed one; the observer sees only the
    // allowed one (a connection's messages arrive in order).
    let reviewer = agent(&servers, "reviewer", &sender_key)
        .await
        .expect("key logs in");
    reviewer.publish("config.get", "{}".into()).await.unwrap();
    reviewer
        .publish("communication.send", "{}".into())
        .await
        .unwrap();
    reviewer.flush().await.unwrap();
    assert_eq!(next_subject(&mut everything).await, "communication.send");

    let reader = agent(&servers, "reader", &reader_key)
        .await
        .expect("key logs in");
    reader
        .publish("communication.send", "{}".into())
        .await
        .unwrap();
    reader.publish("config.get", "{}".into()).await.unwrap();
    reader.flush().await.unwrap();
    assert_eq!(next_subject(&mut everything).await, "config.get");

    // Subscribe: its own inbox, not another agent's. The observer publishes to the other
    // inbox first; by the time the own inbox's message arrives, the other would have too.
    let mut own = reviewer.subscribe("agent.reviewer.inbox").await.unwrap();
    let mut other = reviewer.subscribe("agent.reader.inbox").await.unwrap();
    reviewer.flush().await.unwrap();
    observer
        .publish("agent.reader.inbox", "x".into())
        .await
        .unwrap();
    let reply = observer.request("agent.reviewer.inbox", "ping".into());
    let answered = async {
        let msg = own.next().await.unwrap();
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
        tokio::time::timeout(Duration::from_millis(200), other.next())
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
    let observer = async_nats::ConnectOptions::with_user_and_password(
        "security".into(),
        SECURITY_PASSWORD.into(),
    )
    .connect(servers.nats_url())
    .await
    .unwrap();
    let mut sends = observer.subscribe("communication.send").await.unwrap();
    observer.flush().await.unwrap();
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
