//! What every command needs: where NATS is, which credential to send,
//! and whether to print JSON.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use ymera_core::client::{Credential, ServiceClient};
use ymera_core::config::NatsSettings;

/// Global options shared by all commands.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// NATS server URL.
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true
    )]
    pub nats_url: String,
    /// API key to send (X-API-Key); default: .ymera/admin.key when present.
    #[arg(long, env = "YMERA_API_KEY", global = true, hide_env_values = true)]
    pub api_key: Option<String>,
    /// JWT to send (Authorization: Bearer).
    #[arg(long, env = "YMERA_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Request timeout in milliseconds.
    #[arg(long, default_value_t = 10_000, global = true)]
    pub timeout_ms: u64,
}

/// Shared state of one CLI invocation.
#[derive(Debug, Clone)]
pub struct Context {
    /// The parsed global options.
    pub args: GlobalArgs,
}

impl Context {
    /// Whether to print JSON.
    pub fn json(&self) -> bool {
        self.args.json
    }

    /// The credential: --token, --api-key, or the development admin key
    /// written by `ymera up` to `.ymera/admin.key`.
    pub fn credential(&self) -> Option<Credential> {
        if let Some(token) = &self.args.token {
            return Some(Credential::Bearer(token.clone()));
        }
        if let Some(key) = &self.args.api_key {
            return Some(Credential::ApiKey(key.clone()));
        }
        let key = std::fs::read_to_string(state_dir().join("admin.key")).ok()?;
        let key = key.trim();
        (!key.is_empty()).then(|| Credential::ApiKey(key.to_owned()))
    }

    /// A raw NATS connection.
    pub async fn nats(&self) -> anyhow::Result<async_nats::Client> {
        let settings = NatsSettings {
            url: self.args.nats_url.clone(),
            ..NatsSettings::default()
        };
        // The CLI should fail fast, not retry forever like a service.
        let connect = async_nats::ConnectOptions::new()
            .name("ymera-cli")
            .connection_timeout(Duration::from_secs(3))
            .connect(settings.url.split(',').map(str::trim).collect::<Vec<_>>());
        connect.await.with_context(|| {
            format!(
                "cannot connect to NATS at {} (is the stack up? try `scripts/up`)",
                settings.url
            )
        })
    }

    /// A client for Ymera endpoints with the credential and timeout applied.
    pub async fn client(&self) -> anyhow::Result<ServiceClient> {
        Ok(ServiceClient::new(self.nats().await?)
            .with_timeout(Duration::from_millis(self.args.timeout_ms))
            .with_credential(self.credential()))
    }
}

/// The local stack's state directory: `$YMERA_HOME` or `./.ymera`.
pub fn state_dir() -> PathBuf {
    std::env::var_os("YMERA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".ymera"))
}
