//! YMERA_AUTH=required: permissions come from `security.authorize` through
//! the shared `ymera_core::auth::Authorizer`.

use serde_json::{Value, json};
use ymera_core::ErrorKind;
use ymera_core::client::{Credential, ServiceClient};
use ymera_core::config::AuthMode;
use ymera_testkit::FakeAuthorizer;

use crate::common::{Drafting, service_config, start_servers};

async fn kind(client: &ServiceClient, subject: &str, body: Value) -> Option<ErrorKind> {
    client
        .request::<_, Value>(subject, &body)
        .await
        .err()
        .map(|e| e.kind)
}

#[tokio::test]
async fn permissions_come_from_the_security_service() {
    let servers = start_servers(false);
    let mut config = service_config(&servers);
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
    // A stand-in security service: key `writer` holds drafting:read and
    // drafting:write, `reader` only drafting:read, `admin` all three.
    let _security = FakeAuthorizer::start(
        svc.client.nats(),
        &[
            ("writer", "alice", &["drafting:read", "drafting:write"]),
            ("reader", "bob", &["drafting:read"]),
            (
                "admin",
                "root",
                &["drafting:read", "drafting:write", "drafting:admin"],
            ),
        ],
    )
    .await;
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
