//! The service runtime: the only place that connects to NATS, registers
//! endpoints with the NATS Services API, maps errors to replies and serves
//! `/health`, `/ready` and `/metrics`. Services write handlers, not plumbing.
//!
//! ```no_run
//! # async fn example() -> Result<(), ymera_core::runtime::RuntimeError> {
//! use serde::{Deserialize, Serialize};
//! use ymera_core::config::ServiceConfig;
//! use ymera_core::runtime::{Call, Open, Raw, Runtime, ServiceBuilder};
//!
//! ymera_core::permission!(
//!     /// Resetting the counter.
//!     pub Admin = "echo:admin"
//! );
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct ResetRequest { to: u64 }
//!
//! #[derive(Serialize)]
//! struct ResetReply { reset_by: Option<String>, to: u64 }
//!
//! async fn say(_: (), _: Call<Open>, body: Raw) -> ymera_core::Result<Raw> {
//!     Ok(body)
//! }
//!
//! // With YMERA_AUTH=required the runtime checks `echo:admin` before the body is parsed.
//! async fn reset(_: (), call: Call<Admin>, req: ResetRequest) -> ymera_core::Result<ResetReply> {
//!     Ok(ResetReply { reset_by: call.owner().map(str::to_owned), to: req.to })
//! }
//!
//! let runtime = Runtime::start("echo", ServiceConfig::default()).await?;
//! ServiceBuilder::new("echo", "0.1.0", "Echoes requests")
//!     .route("echo.say", &(), say)
//!     .route("echo.reset", &(), reset)
//!     .serve(runtime)
//!     .await
//! # }
//! ```
//!
//! Files: [`request`] (what a handler is given), [`endpoint`] (the typed
//! handler shape and the endpoint registry), `builder` ([`ServiceBuilder`]),
//! `dispatch` (the request path), `health` ([`HealthProbe`]).

mod builder;
mod dispatch;
pub mod endpoint;
mod health;
pub mod request;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_nats::Client;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use builder::ServiceBuilder;
pub use dispatch::is_failure;
pub use endpoint::{
    Call, EndpointInfo, Open, OrEmpty, Permission, Raw, ReplyBody, RequestBody, Serialized,
};
pub use health::HealthProbe;
pub use request::{Reply, ServiceRequest};

use crate::auth::Authorizer;
use crate::client::{ConnectError, connect_nats};
use crate::config::ServiceConfig;
use crate::store::{self, StoreError};
use crate::telemetry::{Telemetry, TelemetryError};

/// Errors that stop a service from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// NATS could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// PostgreSQL or Redis could not be reached or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Telemetry could not be set up.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// The configuration conflicts with the server (e.g. MAX_MESSAGE_SIZE).
    #[error("{variable}: {reason}")]
    Config {
        /// The variable at fault.
        variable: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Registering with the NATS Services API failed.
    #[error("cannot register the service with NATS: {0}")]
    Register(String),
    /// The HTTP side port could not be bound.
    #[error("YMERA_HTTP_ADDR: cannot listen on {addr}: {source}")]
    Http {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// The process exit code for this error: 64 for configuration, 69
    /// (EX_UNAVAILABLE) for unreachable dependencies, 70 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            RuntimeError::Config { .. }
            | RuntimeError::Http { .. }
            | RuntimeError::Telemetry(_) => crate::config::EXIT_CONFIG,
            RuntimeError::Connect(_) | RuntimeError::Store(_) => 69,
            RuntimeError::Register(_) => 70,
        }
    }
}

/// Process-level resources: configuration, telemetry, the NATS connection
/// and the optional PostgreSQL pool and Redis connection.
pub struct Runtime {
    config: ServiceConfig,
    telemetry: Telemetry,
    client: Client,
    postgres: Option<PgPool>,
    redis: Option<redis::aio::ConnectionManager>,
    shutdown: CancellationToken,
    started: Instant,
    authorizer: OnceLock<Arc<Authorizer>>,
    service: String,
    /// The Ymera services this process calls (`ymera_dependency_up`).
    called: CalledServices,
}

/// The names of the services a process calls, shared with its health probe.
pub(crate) type CalledServices = Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>;

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Sets up telemetry and metrics, connects to NATS (retrying until it
    /// answers), and to PostgreSQL (applying migrations) and Redis when their
    /// URLs are configured.
    pub async fn start(service: &str, config: ServiceConfig) -> Result<Runtime, RuntimeError> {
        let telemetry = Telemetry::init(service, &config)?;
        crate::metrics::install();
        let client = connect_nats(&config.nats, &format!("ymera-{service}")).await?;
        wait_until_connected(&client, &config.nats.url).await;
        let max_payload = client.server_info().max_payload;
        if max_payload > 0 && config.max_message_size > max_payload {
            return Err(RuntimeError::Config {
                variable: "MAX_MESSAGE_SIZE",
                reason: format!(
                    "{} bytes is more than the NATS server's max_payload of {max_payload} bytes",
                    config.max_message_size
                ),
            });
        }
        let postgres = match &config.postgres_url {
            Some(url) => {
                let size = store::pool_size(&crate::env::Env::from_process()).map_err(|err| {
                    RuntimeError::Config {
                        variable: err.variable,
                        reason: err.reason,
                    }
                })?;
                let pool = store::connect_postgres(url, size).await?;
                store::migrate(&pool).await?;
                Some(pool)
            }
            None => None,
        };
        let redis = match &config.redis_url {
            Some(url) => Some(store::connect_redis(url).await?),
            None => None,
        };
        metrics::gauge!("ymera_up", "service" => service.to_owned()).set(1.0);
        let version = version_override().unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned());
        metrics::gauge!("ymera_build_info", "service" => service.to_owned(), "version" => version)
            .set(1.0);
        Ok(Runtime {
            config,
            telemetry,
            client,
            postgres,
            redis,
            shutdown: CancellationToken::new(),
            started: Instant::now(),
            authorizer: OnceLock::new(),
            service: service.to_owned(),
            called: CalledServices::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The NATS connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The PostgreSQL pool, when `POSTGRES_URL` is set.
    pub fn postgres(&self) -> Option<&PgPool> {
        self.postgres.as_ref()
    }

    /// The Redis connection, when `REDIS_URL` is set.
    pub fn redis(&self) -> Option<&redis::aio::ConnectionManager> {
        self.redis.as_ref()
    }

    /// The one [`Authorizer`] of this process (made on first use, following
    /// `YMERA_AUTH`): the runtime checks the permission of every
    /// [`ServiceBuilder::route`] endpoint with it, and handlers use it for checks that depend on the
    /// request's content.
    pub fn authorizer(&self) -> Arc<Authorizer> {
        self.authorizer
            .get_or_init(|| {
                if self.config.auth == crate::config::AuthMode::Required {
                    self.calls("security");
                }
                Arc::new(Authorizer::new(self.config.auth, self.client.clone()))
            })
            .clone()
    }

    /// Records that this process calls the Ymera service `service`: the
    /// runtime then probes `<service>.health` every
    /// [`DEPENDENCY_PROBE_INTERVAL`](crate::metrics::DEPENDENCY_PROBE_INTERVAL)
    /// and reports it as `ymera_dependency_up{dependency="<service>"}`. The
    /// authorizer (with `YMERA_AUTH=required`), `follow_settings` and
    /// `AgentInbox` record theirs; a process's own name is ignored.
    pub fn calls(&self, service: &str) {
        if service == self.service {
            return;
        }
        self.called
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(service.to_owned());
    }

    /// Cancelled when the process is asked to stop; background tasks of a
    /// service watch it. Cancelling it stops the service.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// `YMERA_VERSION_OVERRIDE`, when set and not empty: the version a service
/// registers with the NATS Services API (`$SRV.INFO`, `ymera rollout`),
/// reports in `<service>.health` and labels `ymera_build_info` with, instead
/// of the crate version. For telling two builds of the same version apart
/// (a canary of a patched image, tests running two "versions" of one
/// binary); it must be a semantic version (`0.1.0-canary.1`), which the
/// Services API requires.
pub fn version_override() -> Option<String> {
    std::env::var("YMERA_VERSION_OVERRIDE")
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Waits for the first connection (the client retries in the background),
/// logging every 5 s, so start-up checks see the server's INFO.
async fn wait_until_connected(client: &Client, url: &str) {
    let started = Instant::now();
    let mut next_log = Duration::from_secs(5);
    while client.connection_state() != async_nats::connection::State::Connected {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if started.elapsed() >= next_log {
            tracing::warn!(url = %url, waited_s = next_log.as_secs(), "waiting for NATS");
            next_log += Duration::from_secs(5);
        }
    }
}
