//! Shared helpers: real servers and the drafting service in-process.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use ymera_core::client::ServiceClient;
use ymera_core::config::{AuthMode, ServiceConfig};
use ymera_core::runtime::Runtime;
use ymera_core::{Error, ErrorKind};
use ymera_testkit::{NatsOptions, Servers, ServersOptions, wait_until_serving};

/// testkit's servers for drafting: nats-server with room for a request over the
/// service's 10 MB draft limit, PostgreSQL, and Redis when asked for.
pub fn start_servers(with_redis: bool) -> Servers {
    Servers::start_with(ServersOptions {
        nats: NatsOptions {
            max_payload: Some(16 * 1024 * 1024),
            ..Default::default()
        },
        redis: with_redis,
    })
}

/// The drafting service's configuration on `servers` (authentication off).
pub fn service_config(servers: &Servers) -> ServiceConfig {
    let mut config = ServiceConfig::default();
    config.nats.url = servers.nats.url();
    config.postgres_url = Some(servers.database_url.clone());
    config.redis_url = servers.redis_url().map(str::to_owned);
    config.auth = AuthMode::Off;
    config.max_message_size = 12 * 1024 * 1024;
    config
}

pub struct Drafting {
    pub client: ServiceClient,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), ymera_core::runtime::RuntimeError>>,
}

impl Drafting {
    /// Starts the service with a 200 ms auto-save interval.
    pub async fn start(config: ServiceConfig) -> Drafting {
        let settings = ymera_drafting::Settings {
            auto_save_interval: Duration::from_millis(200),
            ..ymera_drafting::Settings::default()
        };
        Drafting::start_with(config, settings).await
    }

    pub async fn start_with(config: ServiceConfig, settings: ymera_drafting::Settings) -> Drafting {
        let url = config.nats.url.clone();
        let runtime = Runtime::start("drafting", config).await.expect("runtime");
        let shutdown = runtime.shutdown_token();
        let task = tokio::spawn(ymera_drafting::service::serve(runtime, settings));
        let nats = async_nats::connect(url).await.expect("client connects");
        let client = ServiceClient::new(nats).with_timeout(Duration::from_secs(10));
        wait_until_serving(client.nats(), "drafting.health").await;
        Drafting {
            client,
            shutdown,
            task,
        }
    }

    pub async fn call<R: DeserializeOwned>(&self, subject: &str, body: Value) -> Result<R, Error> {
        self.client.request(subject, &body).await
    }

    pub async fn ok(&self, subject: &str, body: Value) -> Value {
        match self.call(subject, body).await {
            Ok(v) => v,
            Err(e) => panic!("{subject}: {e}"),
        }
    }

    pub async fn err(&self, subject: &str, body: Value) -> ErrorKind {
        match self.call::<Value>(subject, body).await {
            Ok(v) => panic!("{subject} succeeded: {v}"),
            Err(e) => e.kind,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("serve");
    }
}
