//! Shared helpers: start real servers and the example service in-process.

use std::time::Duration;

use ymera_core::client::ServiceClient;
use ymera_core::config::ServiceConfig;
use ymera_core::runtime::Runtime;
use ymera_testkit::NatsServer;

/// A running example service and a client to reach it.
pub struct ExampleService {
    pub client: ServiceClient,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), ymera_core::runtime::RuntimeError>>,
}

/// nats-server with an 8 MiB max_payload, so a 2 MiB request reaches the
/// service and the service's own 1 MiB limit is what refuses it.
pub use ymera_testkit::nats_large_payload as nats;

pub fn config_for(nats: &NatsServer) -> ServiceConfig {
    let mut config = ServiceConfig::default();
    config.nats.url = nats.url();
    config
}

pub async fn start_example(config: ServiceConfig) -> ExampleService {
    let url = config.nats.url.clone();
    let runtime = Runtime::start(ymera_core::example::NAME, config)
        .await
        .expect("runtime starts");
    let shutdown = runtime.shutdown_token();
    let task = tokio::spawn(ymera_core::example::service().serve(runtime));
    let nats = async_nats::connect(url).await.expect("client connects");
    let client = ServiceClient::new(nats).with_timeout(Duration::from_secs(5));
    ymera_testkit::wait_until_serving(client.nats(), "example.health").await;
    ExampleService {
        client,
        shutdown,
        task,
    }
}
