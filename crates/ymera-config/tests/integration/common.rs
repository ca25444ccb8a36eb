//! Shared helpers: real servers and config-manager replicas in-process.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use ymera_config::Settings;
use ymera_config::manager::ConfigManager;
use ymera_core::client::ServiceClient;
use ymera_core::config::ServiceConfig;
use ymera_core::runtime::{Runtime, RuntimeError};
use ymera_core::{Error, ErrorKind};
use ymera_testkit::{NatsServer, shared_postgres, wait_until_serving};

pub fn config(nats: &NatsServer, postgres_url: &str, redis_url: Option<String>) -> ServiceConfig {
    let mut config = ServiceConfig::default();
    config.nats.url = nats.url();
    config.postgres_url = Some(postgres_url.to_owned());
    config.redis_url = redis_url;
    config.auth = ymera_core::config::AuthMode::Off;
    config
}

/// A running config-manager replica.
pub struct Replica {
    pub manager: Arc<ConfigManager>,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), RuntimeError>>,
}

impl Replica {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

pub async fn start_replica(config: ServiceConfig, settings: Settings) -> Replica {
    let runtime = Runtime::start(ymera_config::NAME, config)
        .await
        .expect("runtime starts");
    let manager = ymera_config::start_manager(&runtime, settings)
        .await
        .unwrap();
    let builder = ymera_config::builder(&manager);
    let shutdown = runtime.shutdown_token();
    let task = tokio::spawn(builder.serve(runtime));
    Replica {
        manager,
        shutdown,
        task,
    }
}

pub async fn client(nats: &NatsServer) -> ServiceClient {
    let conn = async_nats::connect(nats.url())
        .await
        .expect("client connects");
    let client = ServiceClient::new(conn).with_timeout(Duration::from_secs(10));
    wait_until_serving(client.nats(), "config.health").await;
    client
}

/// A fresh database, a NATS server and one replica (no Redis).
pub struct Stack {
    pub nats: NatsServer,
    pub db: String,
    pub replica: Replica,
    pub client: ServiceClient,
}

pub async fn stack() -> Stack {
    let nats = NatsServer::start().unwrap();
    let db = shared_postgres().create_database().unwrap();
    let replica = start_replica(config(&nats, &db, None), Settings::default()).await;
    let client = client(&nats).await;
    Stack {
        nats,
        db,
        replica,
        client,
    }
}

pub async fn call(client: &ServiceClient, subject: &str, body: Value) -> Result<Value, Error> {
    client.request(subject, &body).await
}

pub async fn ok(client: &ServiceClient, subject: &str, body: Value) -> Value {
    call(client, subject, body.clone())
        .await
        .unwrap_or_else(|e| panic!("{subject} {body} failed: {e}"))
}

pub async fn fails(client: &ServiceClient, subject: &str, body: Value, kind: ErrorKind) -> Error {
    let err = call(client, subject, body.clone())
        .await
        .expect_err(&format!("{subject} {body} should fail"));
    assert_eq!(err.kind, kind, "{subject}: {err}");
    err
}

pub fn violation_paths(err: &Error) -> Vec<String> {
    let mut paths: Vec<String> = err.details["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["path"].as_str().unwrap().to_owned())
        .collect();
    paths.sort();
    paths
}

pub async fn set(client: &ServiceClient, agent: &str, env: &str, config: Value) -> Value {
    ok(
        client,
        "config.set",
        json!({"agent": agent, "environment": env, "config": config}),
    )
    .await
}

pub async fn get(client: &ServiceClient, agent: &str, env: &str) -> Value {
    ok(
        client,
        "config.get",
        json!({"agent": agent, "environment": env}),
    )
    .await
}
