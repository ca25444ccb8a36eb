//! YMERA_AUTH=required: permissions come from `security.authorize` through
//! the shared `ymera_core::auth::Authorizer`.

use futures::StreamExt;
use serde_json::{Value, json};
use ymera_core::ErrorKind;
use ymera_core::client::{Credential, ServiceClient};
use ymera_core::config::AuthMode;

use crate::common::{Drafting, Servers};

/// A stand-in security service on real NATS: key `writer` holds
/// drafting:read and drafting:write, `reader` only drafting:read, `admin`
/// all three.
async fn security_service(url: &str) {
    let conn = async_nats::connect(url).await.unwrap();
    let mut requests = conn.subscribe("security.authorize").await.unwrap();
    conn.flush().await.unwrap();
    tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            let body: Value = serde_json::from_slice(&msg.payload).unwrap();
            let (owner, perms): (&str, &[&str]) = match body["credential"].as_str() {
                Some("writer") => ("alice", &["drafting:read", "drafting:write"]),
                Some("reader") => ("bob", &["drafting:read"]),
                Some("admin") => (
                    "root",
                    &["drafting:read", "drafting:write", "drafting:admin"],
                ),
                _ => ("", &[]),
            };
            let permission = body["permission"].as_str().unwrap_or("");
            let reply = if owner.is_empty() {
                json!({"allowed": false, "reason": "unknown_key", "permissions": []})
            } else if perms.contains(&permission) {
                json!({"allowed": true, "reason": "granted", "permissions": perms, "principal": {"owner": owner}})
            } else {
                json!({"allowed": false, "reason": "insufficient_permissions", "permissions": perms, "principal": {"owner": owner}})
            };
            if let Some(reply_to) = msg.reply {
                conn.publish(reply_to, reply.to_string().into())
                    .await
                    .unwrap();
            }
        }
    });
}

async fn kind(client: &ServiceClient, subject: &str, body: Value) -> Option<ErrorKind> {
    client
        .request::<_, Value>(subject, &body)
        .await
        .err()
        .map(|e| e.kind)
}

#[tokio::test]
async fn permissions_come_from_the_security_service() {
    let servers = Servers::start(false);
    let mut config = servers.config();
    config.auth = AuthMode::Required;
    let svc = Drafting::start(config).await;
    let with = |key: &str| {
        ServiceClient::new(svc.client.nats().clone())
            .with_credential(Some(Credential::ApiKey(key.into())))
    };
    let create =
        json!({"draft_id": "secure", "title": "Secure", "author_id": "alice", "content": "Hello."});

    assert_eq!(
        kind(&svc.client, "drafting.create", create.clone()).await,
        Some(ErrorKind::Unauthenticated)
    );
    // No security service yet: 503, never a silent pass.
    assert_eq!(
        kind(&with("writer"), "drafting.create", create.clone()).await,
        Some(ErrorKind::Unavailable)
    );
    security_service(&servers.nats.url()).await;
    assert_eq!(
        kind(&with("nobody"), "drafting.create", create.clone()).await,
        Some(ErrorKind::Unauthenticated)
    );
    assert_eq!(
        kind(&with("reader"), "drafting.create", create.clone()).await,
        Some(ErrorKind::Forbidden)
    );
    // The author is the verified owner, whatever the request claims.
    let mut forged = create.clone();
    forged["author_id"] = json!("mallory");
    assert_eq!(kind(&with("writer"), "drafting.create", forged).await, None);
    let draft: Value = with("reader")
        .request("drafting.get", &json!({"draft_id": "secure"}))
        .await
        .unwrap();
    assert_eq!(draft["author_id"], "alice", "{draft}");
    let comment =
        json!({"draft_id": "secure", "action": "add", "body": "Nice.", "author_id": "mallory"});
    let added: Value = with("writer")
        .request("drafting.comment", &comment)
        .await
        .unwrap();
    assert_eq!(added["author_id"], "alice", "{added}");
    // Raw-text analysis needs no draft and no permission.
    assert_eq!(
        kind(
            &svc.client,
            "drafting.analyze",
            json!({"text": "Short text here."})
        )
        .await,
        None
    );
    assert_eq!(
        kind(
            &with("writer"),
            "drafting.delete",
            json!({"draft_id": "secure", "hard": true})
        )
        .await,
        Some(ErrorKind::Forbidden)
    );
    assert_eq!(
        kind(
            &with("admin"),
            "drafting.delete",
            json!({"draft_id": "secure", "hard": true})
        )
        .await,
        None
    );
    assert_eq!(
        kind(
            &with("reader"),
            "drafting.get",
            json!({"draft_id": "secure"})
        )
        .await,
        Some(ErrorKind::NotFound)
    );
    svc.stop().await;
}
