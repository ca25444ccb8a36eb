//! The gateway's own settings (beyond [`ServiceConfig`](ymera_core::config::ServiceConfig)).

use std::net::SocketAddr;
use std::time::Duration;

use ymera_core::config::ConfigError;
use ymera_core::env::Env;

/// Settings read from the environment at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where the public HTTP API listens (`GATEWAY_ADDR`, default 127.0.0.1:8088).
    pub addr: SocketAddr,
    /// Origins allowed by CORS (`GATEWAY_CORS_ORIGINS`, comma separated;
    /// `*` for any; empty: no CORS headers).
    pub cors_origins: Vec<String>,
    /// How long a REST call waits for the service (`GATEWAY_REQUEST_TIMEOUT`, default 10 s).
    pub request_timeout: Duration,
    /// How often the route table is rebuilt from `$SRV.INFO`
    /// (`GATEWAY_REGISTRY_REFRESH`, default 10 s).
    pub registry_refresh: Duration,
    /// Requests per client per `rate_period` (`GATEWAY_RATE_LIMIT`, default 600).
    pub rate_limit: u32,
    /// The rate limit's period (`GATEWAY_RATE_PERIOD`, default 60 s).
    pub rate_period: Duration,
    /// The largest request body in bytes (`GATEWAY_MAX_BODY`, default
    /// `MAX_MESSAGE_SIZE`).
    pub max_body: usize,
    /// Events per batch on an event stream (`GATEWAY_EVENTS_BATCH_SIZE`, default 100).
    pub events_batch_size: usize,
    /// Longest wait before a partial batch is sent (`GATEWAY_EVENTS_FLUSH_INTERVAL`, default 50 ms).
    pub events_flush_interval: Duration,
    /// Heartbeat interval on idle event streams (`GATEWAY_EVENTS_HEARTBEAT`, default 15 s).
    pub events_heartbeat: Duration,
    /// Events buffered per client before it is disconnected as too slow
    /// (`GATEWAY_EVENTS_QUEUE`, default 1000).
    pub events_queue: usize,
    /// How long `YMERA_EVENTS` keeps events (`GATEWAY_EVENTS_MAX_AGE`, default 24 h).
    pub events_max_age: Duration,
    /// The config-manager agent whose `environment` document lists the
    /// webhook sources (`GATEWAY_CONFIG_AGENT`, default `gateway`).
    pub config_agent: String,
    /// How long accepted webhook ids are remembered (`GATEWAY_WEBHOOK_DEDUPE_TTL`, default 72 h).
    pub webhook_dedupe_ttl: Duration,
}

impl Settings {
    /// Reads the settings; `max_message_size` is the process's `MAX_MESSAGE_SIZE`.
    pub fn read(env: &Env<'_>) -> Result<Settings, ConfigError> {
        let max_message_size = env.bytes(
            "MAX_MESSAGE_SIZE",
            ymera_core::limits::DEFAULT_MAX_MESSAGE_SIZE,
        )?;
        let cors_origins = env
            .get("GATEWAY_CORS_ORIGINS")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Settings {
            addr: env.parse(
                "GATEWAY_ADDR",
                SocketAddr::from(([127, 0, 0, 1], 8088)),
                "a socket address like 0.0.0.0:8088",
            )?,
            cors_origins,
            request_timeout: env.duration("GATEWAY_REQUEST_TIMEOUT", Duration::from_secs(10))?,
            registry_refresh: env.duration("GATEWAY_REGISTRY_REFRESH", Duration::from_secs(10))?,
            rate_limit: env.number("GATEWAY_RATE_LIMIT", 600u32, 1..=10_000_000)?,
            rate_period: env.duration("GATEWAY_RATE_PERIOD", Duration::from_secs(60))?,
            max_body: env.bytes("GATEWAY_MAX_BODY", max_message_size)?,
            events_batch_size: env.number("GATEWAY_EVENTS_BATCH_SIZE", 100usize, 1..=10_000)?,
            events_flush_interval: env
                .duration("GATEWAY_EVENTS_FLUSH_INTERVAL", Duration::from_millis(50))?,
            events_heartbeat: env.duration("GATEWAY_EVENTS_HEARTBEAT", Duration::from_secs(15))?,
            events_queue: env.number("GATEWAY_EVENTS_QUEUE", 1000usize, 1..=1_000_000)?,
            events_max_age: env.duration("GATEWAY_EVENTS_MAX_AGE", Duration::from_secs(86_400))?,
            config_agent: env
                .get("GATEWAY_CONFIG_AGENT")
                .unwrap_or_else(|| "gateway".to_owned()),
            webhook_dedupe_ttl: env
                .duration("GATEWAY_WEBHOOK_DEDUPE_TTL", Duration::from_secs(72 * 3600))?,
        })
    }
}
