//! Process configuration from the environment (DESIGN §5), parsed into a
//! typed struct with one error type. A missing or malformed setting stops the
//! process at start with one line naming the variable, exit code 64.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::client::Credential;
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
    fn new(variable: &'static str, reason: impl Into<String>) -> Self {
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
        nats_settings(&|name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
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
    /// The tracing filter (`RUST_LOG`, else `LOG_LEVEL`, else `info`).
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
    /// Config cache TTL (default 300 s).
    pub config_cache_ttl: Duration,
    /// Auto-save interval of the drafting agent (default 30 s).
    pub auto_save_interval: Duration,
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
            config_cache_ttl: Duration::from_secs(300),
            auto_save_interval: Duration::from_secs(30),
            auth: AuthMode::Required,
            service_credential: None,
        }
    }
}

impl ServiceConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (the environment, or a map in tests).
    /// Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let defaults = ServiceConfig::default();
        let environment = match get("ENVIRONMENT").as_deref() {
            None | Some("development") | Some("dev") => Environment::Development,
            Some("staging") => Environment::Staging,
            Some("production") | Some("prod") => Environment::Production,
            Some(other) => {
                return Err(ConfigError::new(
                    "ENVIRONMENT",
                    format!("{other:?} is not one of development, staging, production"),
                ));
            }
        };
        let auth = match get("YMERA_AUTH").as_deref() {
            None | Some("required") => AuthMode::Required,
            Some("off") if environment == Environment::Development => AuthMode::Off,
            Some("off") => {
                return Err(ConfigError::new(
                    "YMERA_AUTH",
                    format!(
                        "off is allowed only with ENVIRONMENT=development, not {}",
                        environment.as_str()
                    ),
                ));
            }
            Some(other) => {
                return Err(ConfigError::new(
                    "YMERA_AUTH",
                    format!("{other:?} is not one of required, off"),
                ));
            }
        };
        let log_format = match get("YMERA_LOG_FORMAT").as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::new(
                    "YMERA_LOG_FORMAT",
                    format!("{other:?} is not one of pretty, json"),
                ));
            }
        };
        let http_addr = match get("YMERA_HTTP_ADDR") {
            None => defaults.http_addr,
            Some(v) => v.trim().parse().map_err(|_| {
                ConfigError::new(
                    "YMERA_HTTP_ADDR",
                    format!("{v:?} is not a socket address like 0.0.0.0:8080"),
                )
            })?,
        };
        let postgres_url = match get("POSTGRES_URL").or_else(|| get("DATABASE_URL")) {
            Some(url) if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) => {
                return Err(ConfigError::new(
                    "POSTGRES_URL",
                    "must start with postgres:// or postgresql://",
                ));
            }
            other => other,
        };
        let redis_url = match get("REDIS_URL") {
            Some(url) if !(url.starts_with("redis://") || url.starts_with("rediss://")) => {
                return Err(ConfigError::new(
                    "REDIS_URL",
                    "must start with redis:// or rediss://",
                ));
            }
            other => other,
        };
        Ok(ServiceConfig {
            nats: nats_settings(&get)?,
            postgres_url,
            redis_url,
            environment,
            log_filter: get("RUST_LOG")
                .or_else(|| get("LOG_LEVEL").map(|l| l.to_lowercase()))
                .unwrap_or(defaults.log_filter),
            log_format,
            otlp_endpoint: get("OTEL_EXPORTER_OTLP_ENDPOINT"),
            http_addr,
            max_message_size: parse_bytes(&get, "MAX_MESSAGE_SIZE", defaults.max_message_size)?,
            config_cache_ttl: parse_seconds(&get, "CONFIG_CACHE_TTL", defaults.config_cache_ttl)?,
            auto_save_interval: parse_seconds(
                &get,
                "AUTO_SAVE_INTERVAL",
                defaults.auto_save_interval,
            )?,
            auth,
            service_credential: get("YMERA_SERVICE_API_KEY")
                .map(Credential::ApiKey)
                .or_else(|| get("YMERA_SERVICE_TOKEN").map(Credential::Bearer)),
        })
    }

    /// [`ServiceConfig::from_env`], or print one line naming the variable and
    /// exit with code 64. For `main` only.
    pub fn load_or_exit(program: &str) -> Self {
        match Self::from_env() {
            Ok(config) => config,
            Err(err) => exit_with_config_error(program, &err),
        }
    }
}

/// Prints `<program>: configuration error: VAR: reason` to stderr and exits 64.
pub fn exit_with_config_error(program: &str, err: &ConfigError) -> ! {
    eprintln!("{program}: configuration error: {err}");
    std::process::exit(EXIT_CONFIG)
}

fn nats_settings(get: &impl Fn(&str) -> Option<String>) -> Result<NatsSettings, ConfigError> {
    let url = get("NATS_URL").unwrap_or_else(|| NatsSettings::default().url);
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
    let user_password = match (get("NATS_USER"), get("NATS_PASSWORD")) {
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
    let cert_key = match (get("NATS_CERT"), get("NATS_KEY")) {
        (Some(c), Some(k)) => Some((
            existing_file("NATS_CERT", c)?,
            existing_file("NATS_KEY", k)?,
        )),
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
        creds: get("NATS_CREDS")
            .map(|p| existing_file("NATS_CREDS", p))
            .transpose()?,
        user_password,
        token: get("NATS_TOKEN"),
        ca: get("NATS_CA")
            .map(|p| existing_file("NATS_CA", p))
            .transpose()?,
        cert_key,
    })
}

fn existing_file(variable: &'static str, path: String) -> Result<PathBuf, ConfigError> {
    let path = PathBuf::from(path);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ConfigError::new(
            variable,
            format!("file {} does not exist", path.display()),
        ))
    }
}

/// Parses a byte count: a plain number or with a KiB/MiB/KB/MB suffix.
fn parse_bytes(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: usize,
) -> Result<usize, ConfigError> {
    let Some(raw) = get(variable) else {
        return Ok(default);
    };
    let text = raw.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => {
            return Err(ConfigError::new(
                variable,
                format!("{raw:?} is not a byte count (e.g. 1048576 or 1MiB)"),
            ));
        }
    };
    let value = number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            ConfigError::new(variable, format!("{raw:?} is not a positive byte count"))
        })?;
    Ok(value)
}

/// Parses seconds: a plain number, or with an `s`/`ms`/`m` suffix.
fn parse_seconds(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(raw) = get(variable) else {
        return Ok(default);
    };
    let text = raw.trim();
    let bad = || {
        ConfigError::new(
            variable,
            format!("{raw:?} is not a duration in seconds (e.g. 300 or 300s)"),
        )
    };
    let (number, scale_ms) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000)
    } else {
        (text, 1000)
    };
    let n: u64 = number.trim().parse().map_err(|_| bad())?;
    Ok(Duration::from_millis(
        n.checked_mul(scale_ms).ok_or_else(bad)?,
    ))
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
            ("CONFIG_CACHE_TTL", "60"),
            ("AUTO_SAVE_INTERVAL", "500ms"),
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
        assert_eq!(c.config_cache_ttl, Duration::from_secs(60));
        assert_eq!(c.auto_save_interval, Duration::from_millis(500));
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
            (&[("CONFIG_CACHE_TTL", "-1")], "CONFIG_CACHE_TTL"),
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
}
