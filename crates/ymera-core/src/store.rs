//! PostgreSQL pool with the platform's migrations, and the optional Redis
//! connection; both are probed by the health checks.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::config::ConfigError;
use crate::env::Env;
use crate::error::Error;

/// The variable naming how many PostgreSQL connections one process may open.
pub const POOL_SIZE_ENV: &str = "POSTGRES_POOL_SIZE";
/// Connections per process when `POSTGRES_POOL_SIZE` is unset: small, because every
/// replica of every storing service opens its own pool against one `max_connections`
/// (`scripts/check-deploy` checks the shipped HPA maximums against it).
pub const DEFAULT_POOL_SIZE: u32 = 4;
/// The largest pool one process may ask for.
pub const MAX_POOL_SIZE: u32 = 100;

/// `POSTGRES_POOL_SIZE` from `env` (1–100), or [`DEFAULT_POOL_SIZE`].
pub fn pool_size(env: &Env<'_>) -> Result<u32, ConfigError> {
    env.number(POOL_SIZE_ENV, DEFAULT_POOL_SIZE, 1..=MAX_POOL_SIZE)
}

/// How long a health probe of a dependency may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors connecting to stores.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL could not be reached or refused the connection.
    #[error("POSTGRES_URL: cannot connect to PostgreSQL: {0}")]
    Postgres(#[source] sqlx::Error),
    /// Migrations failed.
    #[error("migrations failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// Redis could not be reached.
    #[error("REDIS_URL: cannot connect to Redis: {0}")]
    Redis(#[source] redis::RedisError),
}

/// Connects a pool (up to `max_connections`), retrying for up to 30 s while
/// the server starts.
pub async fn connect_postgres(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    let options = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match options.clone().connect(url).await {
            Ok(pool) => return Ok(pool),
            Err(err) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %err, "PostgreSQL not reachable yet, retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => return Err(StoreError::Postgres(err)),
        }
    }
}

/// Applies every pending migration (under sqlx's advisory lock, so replicas
/// starting together apply each migration once).
///
/// A migration applied by a newer binary that this one does not know is not an error:
/// during a rolling upgrade the replicas of the old version keep (re)starting on a
/// database the new version already migrated (migrations only add, ARCHITECTURE.md
/// invariants). A known migration whose contents changed still is.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    // The platform's one ordered migration set (`migrations/`).
    let mut migrator = sqlx::migrate!("../../migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await.map_err(StoreError::Migrate)
}

/// Connects to Redis with a connection manager that reconnects by itself.
pub async fn connect_redis(url: &str) -> Result<redis::aio::ConnectionManager, StoreError> {
    let client = redis::Client::open(url).map_err(StoreError::Redis)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    redis::aio::ConnectionManager::new_with_config(client, config)
        .await
        .map_err(StoreError::Redis)
}

/// `SELECT 1` within [`PROBE_TIMEOUT`].
pub async fn probe_postgres(pool: &PgPool) -> Result<(), Error> {
    match tokio::time::timeout(PROBE_TIMEOUT, sqlx::query("SELECT 1").execute(pool)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "PostgreSQL probe failed");
            Err(Error::dependency_down("postgres"))
        }
        Err(_) => Err(Error::dependency_down("postgres")),
    }
}

/// `PING` within [`PROBE_TIMEOUT`].
pub async fn probe_redis(conn: &redis::aio::ConnectionManager) -> Result<(), Error> {
    let mut conn = conn.clone();
    let ping = redis::cmd("PING");
    match tokio::time::timeout(PROBE_TIMEOUT, ping.query_async::<String>(&mut conn)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "Redis probe failed");
            Err(Error::dependency_down("redis"))
        }
        Err(_) => Err(Error::dependency_down("redis")),
    }
}
