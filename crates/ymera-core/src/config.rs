//! Process configuration from the environment (DESIGN §5), parsed into a
//! typed struct with one error type. A missing or malformed setting stops the
//! process at start with one line naming the variable, exit code 64.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::client::Credential;
use crate::env::Env;
use crate::limits::DEFAULT_MAX_MESSAGE_SIZE;

/// Exit code for a configuration error (EX_USAGE).
pub const EXIT_CONFIG: i32 = 64;

/// A setting that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {reason}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    /// The error for `variable`.
    pub fn new(variable: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            variable,
            reason: reason.into(),
        }
    }
}

/// The deployment environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// A developer's machine; authentication may be turned off.
    Development,
    /// A pre-production environment.
    Staging,
    /// Production.
    Production,
}

impl Environment {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Staging => "staging",
            Environment::Production => "production",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Whether requests must carry a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Every request is authorized with the security service.
    Required,
    /// No checks (development only).
    Off,
}

/// How to reach NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// Server URL(s), comma-separated.
    pub url: String,
    /// A `.creds` file (JWT + nkey seed).
    pub creds: Option<PathBuf>,
    /// User name and password.
    pub user_password: Option<(String, String)>,
    /// A token.
    pub token: Option<String>,
    /// CA certificate to trust.
    pub ca: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub cert_key: Option<(PathBuf, PathBuf)>,
}

impl NatsSettings {
    /// Reads only the NATS settings (`NATS_URL`, credentials, TLS) from the
    /// environment, for clients such as the CLI.
    pub fn from_env() -> Result<Self, ConfigError> {
        NatsSettings::read(&Env::from_process())
    }
}

impl Default for NatsSettings {
    fn default() -> Self {
        NatsSettings {
            url: "nats://127.0.0.1:4222".into(),
            creds: None,
            user_password: None,
            token: None,
            ca: None,
            cert_key: None,
        }
    }
}

/// Everything a service process reads from its environment.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// NATS connection settings.
    pub nats: NatsSettings,
    /// PostgreSQL URL (`POSTGRES_URL`, alias `DATABASE_URL`).
    pub postgres_url: Option<String>,
    /// Redis URL; without it caches and limits are in-process.
    pub redis_url: Option<String>,
    /// The deployment environment (default development).
    pub environment: Environment,
    /// The tracing filter: `RUST_LOG` (a full filter), else the level of
    /// `LOG_LEVEL` (see [`LOG_LEVELS`]), else `info`.
    pub log_filter: String,
    /// Log format (`YMERA_LOG_FORMAT`, default pretty).
    pub log_format: LogFormat,
    /// OTLP gRPC endpoint; traces are exported only when set.
    pub otlp_endpoint: Option<String>,
    /// Address of the HTTP side port (`/health`, `/ready`, `/metrics`);
    /// default 127.0.0.1:0 (an ephemeral port, logged at start).
    pub http_addr: SocketAddr,
    /// Request size limit in bytes (default 1 MiB).
    pub max_message_size: usize,
    /// Authentication mode (default required; off only in development).
    pub auth: AuthMode,
    /// The credential this service sends when it calls other services on
    /// its own behalf (e.g. an agent answering through `communication.send`):
    /// `YMERA_SERVICE_API_KEY`, else `YMERA_SERVICE_TOKEN`.
    pub service_credential: Option<Credential>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            nats: NatsSettings::default(),
            postgres_url: None,
            redis_url: None,
            environment: Environment::Development,
            log_filter: "info".into(),
            log_format: LogFormat::Pretty,
            otlp_endpoint: None,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            auth: AuthMode::Required,
            service_credential: None,
        }
    }
}

impl ServiceConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&Env::from_process())
    }

    /// Reads settings through `lookup` (the environment, or a map in tests).
    /// Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::read(&Env::from_lookup(lookup))
    }

    /// Reads settings from `env`.
    pub fn read(env: &Env<'_>) -> Result<Self, ConfigError> {
        let defaults = ServiceConfig::default();
        let environment = env.one_of(
            "ENVIRONMENT",
            &[
                ("development", Environment::Development),
                ("dev", Environment::Development),
                ("staging", Environment::Staging),
                ("production", Environment::Production),
                ("prod", Environment::Production),
            ],
            Environment::Development,
        )?;
        let auth = env.one_of(
            "YMERA_AUTH",
            &[("required", AuthMode::Required), ("off", AuthMode::Off)],
            AuthMode::Required,
        )?;
        if auth == AuthMode::Off && environment != Environment::Development {
            return Err(ConfigError::new(
                "YMERA_AUTH",
                format!(
                    "off is allowed only with ENVIRONMENT=development, not {}",
                    environment.as_str()
                ),
            ));
        }
        let log_format = env.one_of(
            "YMERA_LOG_FORMAT",
            &[("pretty", LogFormat::Pretty), ("json", LogFormat::Json)],
            LogFormat::Pretty,
        )?;
        // LOG_LEVEL is checked even when RUST_LOG (a full filter) wins.
        let log_level = env.one_of_any_case("LOG_LEVEL", LOG_LEVELS, "info")?;
        let postgres_url = match env.secret("POSTGRES_URL")? {
            Some(url) => Some(url),
            None => env.secret("DATABASE_URL")?,
        };
        if let Some(url) = &postgres_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::new(
                "POSTGRES_URL",
                "must start with postgres:// or postgresql://",
            ));
        }
        let redis_url = env.secret("REDIS_URL")?;
        if let Some(url) = &redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(ConfigError::new(
                "REDIS_URL",
                "must start with redis:// or rediss://",
            ));
        }
        let service_credential = match env.secret("YMERA_SERVICE_API_KEY")? {
            Some(key) => Some(Credential::ApiKey(key)),
            None => env.secret("YMERA_SERVICE_TOKEN")?.map(Credential::Bearer),
        };
        Ok(ServiceConfig {
            nats: NatsSettings::read(env)?,
            postgres_url,
            redis_url,
            environment,
            log_filter: env.get("RUST_LOG").unwrap_or_else(|| log_level.to_owned()),
            log_format,
            otlp_endpoint: env.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
            http_addr: env.parse(
                "YMERA_HTTP_ADDR",
                defaults.http_addr,
                "a socket address like 0.0.0.0:8080",
            )?,
            max_message_size: env.bytes("MAX_MESSAGE_SIZE", defaults.max_message_size)?,
            auth,
            service_credential,
        })
    }
}

/// The names `LOG_LEVEL` accepts, in any case (DESIGN §5: the seeds use the
/// Python names), and the tracing level each stands for.
pub const LOG_LEVELS: &[(&str, &str)] = &[
    ("trace", "trace"),
    ("debug", "debug"),
    ("info", "info"),
    ("warn", "warn"),
    ("warning", "warn"),
    ("error", "error"),
    ("critical", "error"),
];

impl From<ConfigError> for crate::runtime::RuntimeError {
    /// A service's own setting that is missing or malformed (exit 64).
    fn from(err: ConfigError) -> Self {
        crate::runtime::RuntimeError::Config {
            variable: err.variable,
            reason: err.reason,
        }
    }
}

impl NatsSettings {
    /// Reads the NATS settings from `env`.
    pub fn read(env: &Env<'_>) -> Result<NatsSettings, ConfigError> {
        let url = env
            .get("NATS_URL")
            .unwrap_or_else(|| NatsSettings::default().url);
        for part in url.split(',') {
            let part = part.trim();
            let ok = ["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|p| part.starts_with(p))
                || (!part.contains("://") && part.contains(':'));
            if !ok {
                return Err(ConfigError::new(
                    "NATS_URL",
                    format!("{part:?} is not a NATS URL like nats://host:4222"),
                ));
            }
        }
        let user_password = match (env.get("NATS_USER"), env.secret("NATS_PASSWORD")?) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "NATS_PASSWORD",
                    "required when NATS_USER is set",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "NATS_USER",
                    "required when NATS_PASSWORD is set",
                ));
            }
        };
        let cert_key = match (env.file("NATS_CERT")?, env.file("NATS_KEY")?) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "NATS_KEY",
                    "required when NATS_CERT is set",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "NATS_CERT",
                    "required when NATS_KEY is set",
                ));
            }
        };
        Ok(NatsSettings {
            url,
            creds: env.file("NATS_CREDS")?,
            user_password,
            token: env.secret("NATS_TOKEN")?,
            ca: env.file("NATS_CA")?,
            cert_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<ServiceConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ServiceConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c, ServiceConfig::default());
    }

    #[test]
    fn reads_every_setting() {
        let c = parse(&[
            ("NATS_URL", "nats://n:4222"),
            ("DATABASE_URL", "postgres://u@h/db"),
            ("REDIS_URL", "redis://r:6379"),
            ("ENVIRONMENT", "production"),
            ("LOG_LEVEL", "DEBUG"),
            ("YMERA_LOG_FORMAT", "json"),
            ("YMERA_HTTP_ADDR", "0.0.0.0:8080"),
            ("MAX_MESSAGE_SIZE", "2MiB"),
            ("NATS_USER", "u"),
            ("NATS_PASSWORD", "p"),
        ])
        .unwrap();
        assert_eq!(c.nats.url, "nats://n:4222");
        assert_eq!(c.postgres_url.as_deref(), Some("postgres://u@h/db"));
        assert_eq!(c.environment, Environment::Production);
        assert_eq!(c.log_filter, "debug");
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.max_message_size, 2 * 1024 * 1024);
        assert_eq!(c.nats.user_password, Some(("u".into(), "p".into())));
    }

    #[test]
    fn malformed_settings_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("MAX_MESSAGE_SIZE", "lots")], "MAX_MESSAGE_SIZE"),
            (&[("MAX_MESSAGE_SIZE", "0")], "MAX_MESSAGE_SIZE"),
            (&[("YMERA_HTTP_ADDR", "localhost")], "YMERA_HTTP_ADDR"),
            (&[("ENVIRONMENT", "qa")], "ENVIRONMENT"),
            (
                &[("YMERA_AUTH", "off"), ("ENVIRONMENT", "production")],
                "YMERA_AUTH",
            ),
            (&[("NATS_URL", "http://x")], "NATS_URL"),
            (&[("NATS_USER", "u")], "NATS_PASSWORD"),
            (&[("NATS_CREDS", "/nonexistent.creds")], "NATS_CREDS"),
            (&[("POSTGRES_URL", "mysql://x")], "POSTGRES_URL"),
            (&[("LOG_LEVEL", "bogus")], "LOG_LEVEL"),
        ];
        for (vars, variable) in cases {
            let err = parse(vars).unwrap_err();
            assert_eq!(err.variable, *variable, "{vars:?}");
        }
    }

    #[test]
    fn auth_off_in_development() {
        assert_eq!(parse(&[("YMERA_AUTH", "off")]).unwrap().auth, AuthMode::Off);
    }

    #[test]
    fn log_level_takes_the_seed_names_in_any_case() {
        for (given, filter) in [
            ("trace", "trace"),
            ("DEBUG", "debug"),
            ("Info", "info"),
            ("warn", "warn"),
            ("WARNING", "warn"),
            ("warning", "warn"),
            ("error", "error"),
            ("CRITICAL", "error"),
            ("critical", "error"),
            (" warning ", "warn"),
        ] {
            let c = parse(&[("LOG_LEVEL", given)]).unwrap();
            assert_eq!(c.log_filter, filter, "LOG_LEVEL={given}");
            // Every mapped name is a valid tracing filter.
            assert!(
                tracing_subscriber::EnvFilter::try_new(&c.log_filter).is_ok(),
                "{given}"
            );
        }
    }

    #[test]
    fn unknown_log_level_is_refused_naming_the_variable() {
        for bad in [
            "bogus",
            "verbose",
            "warn,debug",
            "info=debug",
            "5",
            "fatal",
            "off",
        ] {
            let err = parse(&[("LOG_LEVEL", bad)]).unwrap_err();
            assert_eq!(err.variable, "LOG_LEVEL", "{bad}");
            assert!(
                err.reason.contains("warning"),
                "lists the names: {}",
                err.reason
            );
            assert!(err.to_string().starts_with("LOG_LEVEL: "), "{err}");
        }
    }

    #[test]
    fn rust_log_wins_over_log_level_but_log_level_is_still_checked() {
        let c = parse(&[
            ("RUST_LOG", "ymera_core=debug,warn"),
            ("LOG_LEVEL", "error"),
        ])
        .unwrap();
        assert_eq!(c.log_filter, "ymera_core=debug,warn");
        let err = parse(&[("RUST_LOG", "debug"), ("LOG_LEVEL", "loud")]).unwrap_err();
        assert_eq!(err.variable, "LOG_LEVEL");
    }

    #[test]
    fn secrets_may_be_given_as_files() {
        let dir = std::env::temp_dir().join(format!("ymera-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pg");
        std::fs::write(&file, "postgres://u:p@h/db\n").unwrap();
        let path = file.display().to_string();
        let c = parse(&[("POSTGRES_URL_FILE", &path), ("NATS_TOKEN_FILE", &path)]).unwrap();
        assert_eq!(c.postgres_url.as_deref(), Some("postgres://u:p@h/db"));
        assert_eq!(c.nats.token.as_deref(), Some("postgres://u:p@h/db"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
