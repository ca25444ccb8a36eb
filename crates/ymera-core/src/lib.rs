//! The shared library of the Ymera platform.
//!
//! - [`envelope`]: the agent message envelope and its validation.
//! - [`error`]: the one error type and its wire mapping.
//! - [`resilience`]: circuit breakers and retries.
//! - [`runtime`]: the service runtime (NATS Services API, health, metrics, shutdown).
//! - [`config`]: configuration from the environment.
//! - [`client`]: connecting to NATS and calling endpoints.
//! - [`store`]: PostgreSQL (with migrations, `POSTGRES_POOL_SIZE`) and Redis.
//! - [`jetstream`]: the replica count of every stream and bucket (`YMERA_JS_REPLICAS`).
//! - [`telemetry`], [`metrics`], [`health`], [`limits`].

pub mod agent;
pub mod agent_card;
pub mod auth;
pub mod client;
pub mod config;
pub mod config_watch;
pub mod env;
pub mod envelope;
pub mod error;
pub mod example;
pub mod health;
pub mod http;
pub mod jetstream;
pub mod jwt;
pub mod limits;
pub mod metrics;
pub mod ratelimit;
pub mod resilience;
pub mod retention;
pub mod runtime;
pub mod service;
pub mod store;
pub mod telemetry;

pub use error::{Error, ErrorKind, Result};
