//! What every command needs: where NATS is, which credential to send,
//! and whether to print JSON.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use ymera_core::client::{Credential, ServiceClient, connect_nats};
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

    /// A raw NATS connection, with the credentials and TLS settings of the
    /// environment (NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_CREDS, NATS_CA …).
    pub async fn nats(&self) -> anyhow::Result<async_nats::Client> {
        let mut settings = NatsSettings::from_env().map_err(|e| anyhow::anyhow!("{e}"))?;
        settings.url = self.args.nats_url.clone();
        let connect = connect_nats(&settings, "ymera-cli");
        // A service retries forever; the CLI gives up after a few seconds.
        let client = tokio::time::timeout(Duration::from_secs(5), async {
            let client = connect.await?;
            while client.connection_state() != async_nats::connection::State::Connected {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(client)
        })
        .await;
        match client {
            Ok(client) => client,
            Err(_) => Err(anyhow::anyhow!("no connection within 5 s")),
        }
        .with_context(|| {
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
