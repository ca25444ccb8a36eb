//! Shared helpers: real servers and the security service in-process.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use ymera_core::client::{Credential, ServiceClient};
use ymera_core::config::ServiceConfig;
use ymera_core::runtime::Runtime;
use ymera_security::{SecuritySettings, SharedState};
use ymera_testkit::{NatsServer, Servers, wait_until_serving};

/// The security service's configuration on testkit's `servers`.
pub fn service_config(servers: &Servers) -> ServiceConfig {
    service_config_on(servers, &servers.nats)
}

/// [`service_config`] on another nats-server (a replica of its own).
pub fn service_config_on(servers: &Servers, nats: &NatsServer) -> ServiceConfig {
    let mut config = ServiceConfig::default();
    config.nats.url = nats.url();
    config.postgres_url = Some(servers.database_url.clone());
    config.redis_url = servers.redis_url().map(str::to_owned);
    config
}

pub struct SecurityService {
    pub state: SharedState,
    pub client: ServiceClient,
    pub admin_key: String,
    pub admin_key_path: PathBuf,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), ymera_core::runtime::RuntimeError>>,
    pub pool: sqlx::PgPool,
    _dir: tempfile::TempDir,
}

pub fn settings() -> SecuritySettings {
    SecuritySettings::from_lookup(|name| match name {
        "YMERA_API_KEY_PEPPER" => Some("test-pepper-0123456789abcdef0123456789".into()),
        "YMERA_MASTER_KEY" => Some("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into()),
        _ => None,
    })
    .expect("settings")
}

pub async fn start_security(config: ServiceConfig) -> SecurityService {
    start_security_with(config, settings()).await
}

pub async fn start_security_with(
    config: ServiceConfig,
    settings: SecuritySettings,
) -> SecurityService {
    let login = config.nats.user_password.clone();
    start_security_as(config, settings, login).await
}

/// [`start_security_with`], the test's client logging in to NATS as `login`.
pub async fn start_security_as(
    config: ServiceConfig,
    settings: SecuritySettings,
    login: Option<(String, String)>,
) -> SecurityService {
    let url = config.nats.url.clone();
    let runtime = Runtime::start("security", config)
        .await
        .expect("runtime starts");
    let state = ymera_security::build_state(&runtime, &settings)
        .await
        .expect("state");
    let dir = tempfile::tempdir().unwrap();
    let admin_key_path = dir.path().join(".ymera").join("admin.key");
    ymera_security::bootstrap_admin_key(state.pool(), &test_pepper(), &admin_key_path)
        .await
        .expect("bootstrap");
    let admin_key = std::fs::read_to_string(&admin_key_path)
        .unwrap()
        .trim()
        .to_owned();
    let shutdown = runtime.shutdown_token();
    let pool = state.pool().clone();
    if let Some(callout) = settings.callout.clone() {
        ymera_security::start_callout(&runtime, state.clone(), callout)
            .await
            .expect("auth callout starts");
    }
    let task = tokio::spawn(ymera_security::service::service(state.clone()).serve(runtime));
    let mut options = async_nats::ConnectOptions::new();
    if let Some((user, password)) = login {
        options = options.user_and_password(user, password);
    }
    let nats = options.connect(url).await.expect("client connects");
    let client = ServiceClient::new(nats).with_timeout(Duration::from_secs(10));
    wait_until_serving(client.nats(), "security.health").await;
    SecurityService {
        state,
        client,
        admin_key,
        admin_key_path,
        shutdown,
        task,
        pool,
        _dir: dir,
    }
}

pub fn test_pepper() -> ymera_security::Pepper {
    settings().pepper.unwrap()
}

impl SecurityService {
    pub fn with_key(&self, key: &str) -> ServiceClient {
        self.client
            .clone()
            .with_credential(Some(Credential::ApiKey(key.to_owned())))
    }

    pub fn admin(&self) -> ServiceClient {
        self.with_key(&self.admin_key)
    }

    pub fn with_token(&self, token: &str) -> ServiceClient {
        self.client
            .clone()
            .with_credential(Some(Credential::Bearer(token.to_owned())))
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }

    /// Creates a key and returns (full key, key id).
    pub async fn create_key(
        &self,
        owner: &str,
        tenant: &str,
        permissions: &[&str],
    ) -> (String, String) {
        let reply: Value = self
            .admin()
            .request(
                "security.keys.create",
                &serde_json::json!({"owner": owner, "tenant": tenant, "permissions": permissions}),
            )
            .await
            .expect("key created");
        (
            reply["key"].as_str().unwrap().to_owned(),
            reply["key_id"].as_str().unwrap().to_owned(),
        )
    }

    /// Polls `security_events` until an event of `event_type` exists (the writer is batched).
    pub async fn wait_for_event(&self, event_type: &str) -> Value {
        for _ in 0..200 {
            let row: Option<(String, Option<String>, Option<String>, Value)> = sqlx::query_as(
                "SELECT event_type, principal, key_id, details FROM security_events \
                 WHERE event_type = $1 ORDER BY created_at DESC LIMIT 1",
            )
            .bind(event_type)
            .fetch_optional(&self.pool)
            .await
            .unwrap();
            if let Some((t, principal, key_id, details)) = row {
                return serde_json::json!({"type": t, "principal": principal, "key_id": key_id, "details": details});
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no {event_type} event was stored");
    }

    pub async fn event_count(&self, event_type: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM security_events WHERE event_type = $1")
            .bind(event_type)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Waits until at least `n` events of `event_type` are stored.
    pub async fn wait_for_events(&self, event_type: &str, n: i64) {
        for _ in 0..200 {
            if self.event_count(event_type).await >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "expected {n} {event_type} events, found {}",
            self.event_count(event_type).await
        );
    }
}

/// Collects the types of events published on `events.security.>`.
pub async fn subscribe_events(
    client: &ServiceClient,
) -> tokio::sync::mpsc::UnboundedReceiver<Value> {
    let mut sub = client.nats().subscribe("events.security.>").await.unwrap();
    client.nats().flush().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Ok(v) = serde_json::from_slice::<Value>(&msg.payload) {
                let _ = tx.send(serde_json::json!({"subject": msg.subject.as_str(), "event": v}));
            }
        }
    });
    rx
}

/// The error code and `details.reason` of a failed call.
pub fn code_and_reason(err: &ymera_core::Error) -> (u16, Option<String>) {
    (
        err.code(),
        err.details
            .get("reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
    )
}

/// `security.authorize` through the service's client.
pub async fn authorize(
    svc: &SecurityService,
    credential: &str,
    permission: &str,
    tenant: Option<&str>,
) -> Value {
    let mut body = json!({"credential": credential, "permission": permission});
    if let Some(t) = tenant {
        body["tenant"] = json!(t);
    }
    svc.client
        .request("security.authorize", &body)
        .await
        .unwrap()
}

/// `security.authorize` for `config:read`, no tenant.
pub async fn authorize_read(svc: &SecurityService, credential: &str) -> Value {
    authorize(svc, credential, "config:read", None).await
}
