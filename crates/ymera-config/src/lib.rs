//! The Ymera config manager: versioned, validated, hot-reloaded agent
//! configuration (service `config`, see README.md for the endpoints).
//!
//! - [`model`]: environments, names and the JSON shapes of every endpoint.
//! - [`document`]: layering (RFC 7396), pointers, diffs (RFC 6902), schema
//!   validation, templates.
//! - [`store`]: PostgreSQL (layers, versions, audit, schemas, templates).
//! - [`cache`]: in-process + Redis cache with version floors.
//! - [`manager`]: the endpoint logic.
//! - [`endpoints`]: the typed handlers and [`builder`].
//!
//! Invariants: a document that fails the agent's schema or the size limit is
//! never committed; every commit is a new version with an audit row and is
//! announced on `config.changed.<agent>.<environment>` after the caches are
//! invalidated; the cached read path never touches PostgreSQL.

pub mod auth;
pub mod cache;
pub mod document;
pub mod endpoints;
pub mod manager;
pub mod model;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ymera_core::config::{ConfigError, ServiceConfig};
use ymera_core::config_watch::DEFAULT_CONFIG_CACHE_TTL;
use ymera_core::env::Env;
use ymera_core::runtime::{Runtime, RuntimeError, ServiceBuilder};

pub use crate::endpoints::builder;

use crate::cache::ConfigCache;
use crate::manager::ConfigManager;
use crate::model::ChangeEvent;

/// The micro-service name.
pub const NAME: &str = "config";

/// Settings of the config manager beyond [`ServiceConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Versions kept per layer (`CONFIG_MAX_VERSIONS`, default 10, 1..=10000).
    pub keep_versions: i64,
    /// Largest layer or effective document in bytes (`CONFIG_MAX_SIZE`,
    /// default 1 MiB).
    pub max_config_size: usize,
    /// Lifetime of cached configuration entries (`CONFIG_CACHE_TTL`, default
    /// 300 s).
    pub cache_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            keep_versions: 10,
            max_config_size: 1024 * 1024,
            cache_ttl: DEFAULT_CONFIG_CACHE_TTL,
        }
    }
}

impl Settings {
    /// Reads the settings from `env`.
    pub fn read(env: &Env<'_>) -> Result<Settings, ConfigError> {
        let d = Settings::default();
        Ok(Settings {
            keep_versions: env.number("CONFIG_MAX_VERSIONS", d.keep_versions, 1..=10_000)?,
            max_config_size: env.number(
                "CONFIG_MAX_SIZE",
                d.max_config_size,
                1..=64 * 1024 * 1024,
            )?,
            cache_ttl: env.duration("CONFIG_CACHE_TTL", d.cache_ttl)?,
        })
    }

    /// Reads the settings through `get` (empty values count as unset).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        Settings::read(&Env::from_lookup(get))
    }

    /// From the process environment.
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::read(&Env::from_process())
    }
}

/// Starts the runtime and serves until shutdown.
pub async fn run(config: ServiceConfig, settings: Settings) -> Result<(), RuntimeError> {
    if config.postgres_url.is_none() {
        // Say so before waiting for NATS.
        return Err(no_postgres());
    }
    let runtime = Runtime::start(NAME, config).await?;
    ymera_core::retention::start(&runtime, &[ymera_core::retention::CONFIG_AUDIT])?;
    let builder = service(&runtime, settings).await?;
    builder.serve(runtime).await
}

/// Builds the service on a started runtime (PostgreSQL required) and starts
/// the change-event listener that keeps this replica's cache fresh.
pub async fn service(
    runtime: &Runtime,
    settings: Settings,
) -> Result<ServiceBuilder, RuntimeError> {
    Ok(builder(&start_manager(runtime, settings).await?))
}

/// The manager of one replica, with its change-event listener running until
/// the runtime shuts down.
pub async fn start_manager(
    runtime: &Runtime,
    settings: Settings,
) -> Result<Arc<ConfigManager>, RuntimeError> {
    let pool = runtime.postgres().cloned().ok_or_else(no_postgres)?;
    let cache = ConfigCache::new(runtime.redis().cloned(), settings.cache_ttl);
    let manager = ConfigManager::new(
        pool,
        cache,
        runtime.client().clone(),
        settings,
        runtime.config().max_message_size,
    );
    let events = runtime
        .client()
        .subscribe("config.changed.*.*")
        .await
        .map_err(|e| RuntimeError::Register(format!("config.changed.*.*: {e}")))?;
    tokio::spawn(listen_for_changes(
        events,
        manager.clone(),
        runtime.shutdown_token(),
    ));
    Ok(manager)
}

fn no_postgres() -> RuntimeError {
    RuntimeError::Config {
        variable: "POSTGRES_URL",
        reason: "required: the config manager stores configuration in PostgreSQL".into(),
    }
}

/// Applies every change event (from any replica) to the local cache.
async fn listen_for_changes(
    mut events: async_nats::Subscriber,
    manager: Arc<ConfigManager>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = events.next() => m,
        };
        let Some(message) = message else { break };
        match serde_json::from_slice::<ChangeEvent>(&message.payload) {
            Ok(event) => {
                manager
                    .cache()
                    .note_change(&event.agent, event.environment, event.version)
            }
            Err(err) => {
                tracing::warn!(error = %err, subject = %message.subject, "ignoring a malformed change event")
            }
        }
    }
    let _ = events.unsubscribe().await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn settings_parse_and_name_the_variable() {
        let s = Settings::from_lookup(|_| None).unwrap();
        assert_eq!(s, Settings::default());
        let s = Settings::from_lookup(|k| (k == "CONFIG_MAX_VERSIONS").then(|| "3".to_owned()))
            .unwrap();
        assert_eq!(s.keep_versions, 3);
        let e = Settings::from_lookup(|k| (k == "CONFIG_MAX_VERSIONS").then(|| "0".to_owned()))
            .unwrap_err();
        assert_eq!(e.variable, "CONFIG_MAX_VERSIONS");
        let e = Settings::from_lookup(|k| (k == "CONFIG_MAX_SIZE").then(|| "big".to_owned()))
            .unwrap_err();
        assert_eq!(e.variable, "CONFIG_MAX_SIZE");
        let s =
            Settings::from_lookup(|k| (k == "CONFIG_CACHE_TTL").then(|| "60".to_owned())).unwrap();
        assert_eq!(s.cache_ttl, Duration::from_secs(60));
        let e = Settings::from_lookup(|k| (k == "CONFIG_CACHE_TTL").then(|| "-1".to_owned()))
            .unwrap_err();
        assert_eq!(e.variable, "CONFIG_CACHE_TTL");
    }
}
