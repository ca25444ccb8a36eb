//! Shared helpers: real servers and the drafting service in-process.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use ymera_core::client::ServiceClient;
use ymera_core::config::{AuthMode, ServiceConfig};
use ymera_core::runtime::Runtime;
use ymera_core::{Error, ErrorKind};
use ymera_testkit::{NatsOptions, NatsServer, Postgres, Redis};

pub struct Servers {
    pub nats: NatsServer,
    pub _postgres: Postgres,
    pub db_url: String,
    pub redis: Option<Redis>,
}

impl Servers {
    pub fn start(with_redis: bool) -> Servers {
        // Room for a request over the service's 10 MB draft limit.
        let nats = NatsServer::start_with(NatsOptions {
            max_payload: Some(16 * 1024 * 1024),
            ..Default::default()
        })
        .expect("nats-server");
        let postgres = Postgres::start().expect("postgres");
        let db_url = postgres.create_database().expect("database");
        let redis = with_redis.then(|| Redis::start().expect("redis"));
        Servers {
            nats,
            _postgres: postgres,
            db_url,
            redis,
        }
    }

    pub fn config(&self) -> ServiceConfig {
        let mut config = ServiceConfig::default();
        config.nats.url = self.nats.url();
        config.postgres_url = Some(self.db_url.clone());
        config.redis_url = self.redis.as_ref().map(Redis::url);
        config.auth = AuthMode::Off;
        config.max_message_size = 12 * 1024 * 1024;
        config
    }
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
        for _ in 0..200 {
            if client
                .request_bytes("drafting.health", bytes::Bytes::new())
                .await
                .is_ok()
            {
                return Drafting {
                    client,
                    shutdown,
                    task,
                };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("drafting never answered");
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
