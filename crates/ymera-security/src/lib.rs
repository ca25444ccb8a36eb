//! The Ymera security service: API keys, short-lived EdDSA tokens,
//! permission checks, GCRA rate limits and the security audit trail.
//!
//! - [`apikey`]: the key format (`ymk_<id>_<secret><crc>`), pepper and hashing.
//! - [`signing`]: Ed25519 signing keys, rotation, sealing with the master key.
//! - [`token`]: issuing and strictly verifying JWTs.
//! - [`events`]: scrubbed, published, batch-persisted security events.
//! - [`keys`]: API key records and the batched usage counter.
//! - [`keycache`]: the in-memory API key table, kept current with LISTEN/NOTIFY.
//! - [`state`]: authentication and authorization decisions.
//! - [`service`]: the NATS endpoints.
//! - [`callout`]: NATS login with Ymera credentials (the server's auth callout).
//!
//! Invariants: secrets (API key secrets, private signing keys, pepper,
//! master key) are never stored in clear, logged or published; every
//! refusal records an event; the security service never depends on another
//! service's crate.

pub mod apikey;
pub mod callout;
pub mod events;
pub mod keycache;
pub mod keys;
pub mod reported;
pub mod service;
pub mod signing;
pub mod state;
pub mod token;

use std::path::Path;
use std::sync::Arc;

use chrono::Duration as ChronoDuration;
use rand::RngCore;
use sqlx::PgPool;
use ymera_core::config::{ConfigError, Environment, ServiceConfig};
use ymera_core::env::Env;
use ymera_core::ratelimit::RateLimiter;
use ymera_core::runtime::{Runtime, RuntimeError};

pub use apikey::Pepper;
pub use signing::MasterKey;
pub use state::{Principal, SecurityState, SharedState};

/// Errors of the security library.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A setting is missing or malformed (exit 64).
    #[error("{variable}: {reason}")]
    Config {
        /// The variable.
        variable: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// PostgreSQL failed.
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    /// A cryptographic operation failed.
    #[error("crypto: {0}")]
    Crypto(&'static str),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The runtime failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl SecurityError {
    /// Process exit code: 64 configuration, 69 unavailable dependency, 70 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            SecurityError::Config { .. } => ymera_core::config::EXIT_CONFIG,
            SecurityError::Database(_) => 69,
            SecurityError::Runtime(err) => err.exit_code(),
            SecurityError::Crypto(_) | SecurityError::Io { .. } => 70,
        }
    }
}

/// Settings of the security service beyond [`ServiceConfig`].
#[derive(Debug, Clone, Default)]
pub struct SecuritySettings {
    /// `YMERA_API_KEY_PEPPER` (≥ 16 bytes).
    pub pepper: Option<Pepper>,
    /// `YMERA_MASTER_KEY` (base64 of 32 bytes).
    pub master_key: Option<MasterKey>,
    /// `YMERA_BOOTSTRAP_ADMIN_KEY` or `--bootstrap-admin-key FILE`.
    pub bootstrap_admin_key: Option<std::path::PathBuf>,
    /// How long a signing key signs (`YMERA_SIGNING_KEY_ROTATION_HOURS`, default 24).
    pub rotation: Option<ChronoDuration>,
    /// The NATS auth callout (`YMERA_NATS_CALLOUT_*`), when configured.
    pub callout: Option<callout::CalloutSettings>,
}

impl SecuritySettings {
    /// Reads the settings through `lookup` (empty = unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SecurityError> {
        Self::read(&Env::from_lookup(lookup))
    }

    /// Reads the settings from `env`. The secrets may be given as files
    /// (`YMERA_API_KEY_PEPPER_FILE`, `YMERA_MASTER_KEY_FILE`).
    pub fn read(env: &Env<'_>) -> Result<Self, SecurityError> {
        let pepper = match env.secret("YMERA_API_KEY_PEPPER")? {
            Some(text) => Some(Pepper::new(text.into_bytes()).ok_or(SecurityError::Config {
                variable: "YMERA_API_KEY_PEPPER",
                reason: "must be at least 16 bytes (use `openssl rand -base64 32`)".into(),
            })?),
            None => None,
        };
        let master_key = match env.secret("YMERA_MASTER_KEY")? {
            Some(text) => Some(MasterKey::from_base64(&text).ok_or(SecurityError::Config {
                variable: "YMERA_MASTER_KEY",
                reason: "must be base64 of exactly 32 bytes (use `openssl rand -base64 32`)".into(),
            })?),
            None => None,
        };
        let rotation = env.value("YMERA_SIGNING_KEY_ROTATION_HOURS", |text| {
            match text.parse::<i64>() {
                Ok(h) if (1..=24 * 90).contains(&h) => Ok(ChronoDuration::hours(h)),
                _ => Err("must be a whole number of hours between 1 and 2160".into()),
            }
        })?;
        Ok(SecuritySettings {
            pepper,
            master_key,
            bootstrap_admin_key: env.get("YMERA_BOOTSTRAP_ADMIN_KEY").map(Into::into),
            rotation,
            callout: callout::CalloutSettings::read(env)?,
        })
    }
}

impl From<ConfigError> for SecurityError {
    fn from(err: ConfigError) -> Self {
        SecurityError::Config {
            variable: err.variable,
            reason: err.reason,
        }
    }
}

impl ymera_core::service::Failure for SecurityError {
    fn exit_code(&self) -> i32 {
        SecurityError::exit_code(self)
    }
}

/// Returns the development secret `name` stored in PostgreSQL, creating it
/// (32 random bytes) once. Used only with ENVIRONMENT=development.
async fn dev_secret(pool: &PgPool, name: &str) -> Result<Vec<u8>, SecurityError> {
    let mut fresh = [0u8; 32];
    rand::rng().fill_bytes(&mut fresh);
    sqlx::query("INSERT INTO security_dev_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(fresh.as_slice())
        .execute(pool)
        .await?;
    Ok(
        sqlx::query_scalar("SELECT value FROM security_dev_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(pool)
            .await?,
    )
}

/// The pepper: `YMERA_API_KEY_PEPPER`, or in development a generated one
/// kept in PostgreSQL (with a warning). Refused outside development.
pub async fn resolve_pepper(
    pool: &PgPool,
    environment: Environment,
    configured: Option<Pepper>,
) -> Result<Pepper, SecurityError> {
    if let Some(p) = configured {
        return Ok(p);
    }
    if environment != Environment::Development {
        return Err(SecurityError::Config {
            variable: "YMERA_API_KEY_PEPPER",
            reason: format!("required when ENVIRONMENT={}", environment.as_str()),
        });
    }
    tracing::warn!(
        "YMERA_API_KEY_PEPPER is not set: using a generated development pepper stored in PostgreSQL (never do this in production)"
    );
    Pepper::new(dev_secret(pool, "api_key_pepper").await?)
        .ok_or(SecurityError::Crypto("bad development pepper"))
}

/// The master key: `YMERA_MASTER_KEY`, or in development a generated one
/// kept in PostgreSQL (with a warning). Refused outside development.
pub async fn resolve_master_key(
    pool: &PgPool,
    environment: Environment,
    configured: Option<MasterKey>,
) -> Result<MasterKey, SecurityError> {
    if let Some(k) = configured {
        return Ok(k);
    }
    if environment != Environment::Development {
        return Err(SecurityError::Config {
            variable: "YMERA_MASTER_KEY",
            reason: format!("required when ENVIRONMENT={}", environment.as_str()),
        });
    }
    tracing::warn!(
        "YMERA_MASTER_KEY is not set: using a generated development master key stored in PostgreSQL (never do this in production)"
    );
    MasterKey::new(&dev_secret(pool, "master_key").await?)
        .ok_or(SecurityError::Crypto("bad development master key"))
}

/// What [`bootstrap_admin_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapOutcome {
    /// The file already held a valid admin key (kept).
    Existing {
        /// Its key id.
        key_id: String,
    },
    /// A new admin key was created and written to the file.
    Created {
        /// Its key id.
        key_id: String,
    },
}

/// Ensures `path` holds a valid admin key: owner `admin`, tenant `system`,
/// every platform permission, 30 days. If the file holds a key that is
/// still valid (not expiring within a day) and holds every platform
/// permission (a key from before a permission was added does not) it is
/// kept; otherwise a new
/// key is created and written atomically with mode 0600 (parent directory
/// created with mode 0700). The key itself is never logged.
pub async fn bootstrap_admin_key(
    pool: &PgPool,
    pepper: &Pepper,
    path: &Path,
) -> Result<BootstrapOutcome, SecurityError> {
    let io = |source| SecurityError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Ok(existing) = std::fs::read_to_string(path) {
        let parsed = apikey::PresentedKey::parse(existing.trim());
        if parsed.well_formed
            && let Some(row) = keys::find(pool, &parsed.key_id).await?
        {
            let hash = pepper.hash(&parsed.secret);
            let stored =
                <[u8; 32]>::try_from(row.secret_hash.as_slice()).unwrap_or(apikey::DUMMY_DIGEST);
            if bool::from(apikey::digests_equal(&hash, &stored))
                && row.revoked_at.is_none()
                && row.expires_at > chrono::Utc::now() + ChronoDuration::days(1)
                && state::ALL_PERMISSIONS
                    .iter()
                    .all(|needed| row.permissions.iter().any(|p| p == needed))
            {
                return Ok(BootstrapOutcome::Existing { key_id: row.key_id });
            }
        }
    }
    let created = service::create_key(
        pool,
        pepper,
        "admin",
        state::SYSTEM_TENANT,
        state::ALL_PERMISSIONS
            .iter()
            .map(|p| (*p).to_owned())
            .collect(),
        service::DEFAULT_KEY_DAYS,
        Some("bootstrap admin key".into()),
        Some("bootstrap".into()),
    )
    .await
    .map_err(|_| SecurityError::Crypto("cannot store the admin key"))?;
    write_secret_file(path, &created.key).map_err(io)?;
    let event = events::SecurityEvent::new(
        "admin_key_bootstrapped",
        serde_json::json!({"path": path.display().to_string()}),
    )
    .with_principal(
        Some("admin"),
        Some(state::SYSTEM_TENANT),
        Some(&created.info.key_id),
    );
    events::write_now(pool, &[event]).await;
    tracing::info!(key_id = %created.info.key_id, path = %path.display(), "bootstrap admin key written");
    Ok(BootstrapOutcome::Created {
        key_id: created.info.key_id,
    })
}

/// Writes `content` to `path` with mode 0600 via a temporary file and rename.
fn write_secret_file(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(content.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// Builds the state on a started runtime: resolves secrets, loads (or
/// creates) the signing keys, and starts the event writer and upkeep tasks.
pub async fn build_state(
    rt: &Runtime,
    settings: &SecuritySettings,
) -> Result<SharedState, SecurityError> {
    let pool = rt.postgres().cloned().ok_or(SecurityError::Config {
        variable: "POSTGRES_URL",
        reason: "the security service needs PostgreSQL".into(),
    })?;
    let environment = rt.config().environment;
    let pepper = resolve_pepper(&pool, environment, settings.pepper.clone()).await?;
    let master = resolve_master_key(&pool, environment, settings.master_key.clone()).await?;
    let rotation = settings
        .rotation
        .unwrap_or_else(|| ChronoDuration::hours(24));
    let grace = ChronoDuration::seconds(token::MAX_TTL_SECONDS + 2 * token::LEEWAY_SECONDS as i64);
    let ring = signing::KeyRing::new(pool.clone(), master, rotation, grace);
    ring.refresh().await?;
    let (events, rx) = events::EventRecorder::new(rt.client().clone());
    let shutdown = rt.shutdown_token();
    tokio::spawn(events::run_writer(pool.clone(), rx, shutdown.clone()));
    tokio::spawn(reported::run(
        rt.client().clone(),
        pool.clone(),
        shutdown.clone(),
    ));
    let key_table = Arc::new(keycache::KeyCache::default());
    tokio::spawn(keycache::run_listener(
        pool.clone(),
        key_table.clone(),
        shutdown.clone(),
    ));
    let state = Arc::new(SecurityState {
        key_table,
        pool,
        redis: rt.redis().cloned(),
        pepper,
        ring,
        events,
        limiter: RateLimiter::new("ymera:rl:security:", rt.redis().cloned()),
        usage: keys::UsageCounter::default(),
    });
    tokio::spawn(state.clone().run_upkeep(shutdown));
    Ok(state)
}

/// Runs the service until shutdown.
pub async fn run(config: ServiceConfig, settings: SecuritySettings) -> Result<(), SecurityError> {
    let rt = Runtime::start(service::NAME, config).await?;
    ymera_core::retention::start(&rt, &[ymera_core::retention::SECURITY_EVENTS])?;
    let state = build_state(&rt, &settings).await?;
    if let Some(path) = &settings.bootstrap_admin_key {
        bootstrap_admin_key(&state.pool, &state.pepper, path).await?;
    }
    if let Some(callout_settings) = settings.callout.clone() {
        start_callout(&rt, state.clone(), callout_settings).await?;
    }
    service::service(state).serve(rt).await?;
    Ok(())
}

/// Starts answering the NATS server's authorization requests on the runtime's connection
/// (or the callout's own login) until the runtime shuts down.
pub async fn start_callout(
    rt: &Runtime,
    state: SharedState,
    settings: callout::CalloutSettings,
) -> Result<(), SecurityError> {
    let client = callout::connection(rt.client(), &rt.config().nats, &settings).await?;
    let shutdown = rt.shutdown_token();
    tokio::spawn(async move {
        if let Err(err) = callout::serve(client, state, settings, shutdown).await {
            tracing::error!(error = %err, "the NATS auth callout stopped");
        }
    });
    Ok(())
}
