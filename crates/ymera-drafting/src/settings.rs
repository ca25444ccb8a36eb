//! Settings of the drafting agent beyond the shared
//! [`ServiceConfig`](ymera_core::config::ServiceConfig), read at start.
//! A malformed value stops the process at start naming the variable (exit 64).

use std::time::Duration;

use ymera_core::config::ConfigError;
use ymera_core::config_watch::WatchOptions;
use ymera_core::env::Env;

/// Default of `AUTO_SAVE_INTERVAL`.
pub const DEFAULT_AUTO_SAVE_INTERVAL: Duration = Duration::from_secs(30);

/// Default of `DRAFT_EXPIRY_CHECK_INTERVAL`.
pub const DEFAULT_EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// Tunables of the drafting agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How often buffered auto-saves of one draft are persisted at most
    /// (`AUTO_SAVE_INTERVAL`, seconds or with an `s`/`ms`/`m` suffix,
    /// default 30 s); the config manager's `auto_save_interval_ms` applies
    /// over it while the agent runs.
    pub auto_save_interval: Duration,
    /// How the agent follows its document in the config manager
    /// (re-fetched every `CONFIG_CACHE_TTL`, default 300 s).
    pub watch: WatchOptions,
    /// How often the expiry job archives drafts whose `expires_at` passed
    /// (`DRAFT_EXPIRY_CHECK_INTERVAL`, default 1 h; the seed cleans up
    /// weekly, archiving is cheap enough to do it hourly).
    pub expiry_check_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            auto_save_interval: DEFAULT_AUTO_SAVE_INTERVAL,
            watch: WatchOptions {
                resync_interval: ymera_core::config_watch::DEFAULT_CONFIG_CACHE_TTL,
            },
            expiry_check_interval: DEFAULT_EXPIRY_CHECK_INTERVAL,
        }
    }
}

impl Settings {
    /// Reads the settings from `env`.
    pub fn read(env: &Env<'_>) -> Result<Settings, ConfigError> {
        Ok(Settings {
            auto_save_interval: env.duration("AUTO_SAVE_INTERVAL", DEFAULT_AUTO_SAVE_INTERVAL)?,
            watch: WatchOptions::from_env(env)?,
            expiry_check_interval: env
                .duration("DRAFT_EXPIRY_CHECK_INTERVAL", DEFAULT_EXPIRY_CHECK_INTERVAL)?,
        })
    }

    /// Reads the settings through `lookup` (empty values count as unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        Settings::read(&Env::from_lookup(lookup))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(
            Settings::from_lookup(|_| None).unwrap(),
            Settings::default()
        );
        let s = Settings::from_lookup(|k| match k {
            "AUTO_SAVE_INTERVAL" => Some("500ms".into()),
            "CONFIG_CACHE_TTL" => Some("60".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(s.auto_save_interval, Duration::from_millis(500));
        assert_eq!(s.watch.resync_interval, Duration::from_secs(60));
        let s = Settings::from_lookup(|k| (k == "AUTO_SAVE_INTERVAL").then(|| "5".into())).unwrap();
        assert_eq!(s.auto_save_interval, Duration::from_secs(5));
    }

    #[test]
    fn malformed_values_name_the_variable() {
        for (name, value) in [
            ("AUTO_SAVE_INTERVAL", "soon"),
            ("AUTO_SAVE_INTERVAL", "-1"),
            ("CONFIG_CACHE_TTL", "forever"),
            ("DRAFT_EXPIRY_CHECK_INTERVAL", "weekly"),
        ] {
            let err = Settings::from_lookup(|k| (k == name).then(|| value.into())).unwrap_err();
            assert_eq!(err.variable, name, "{name}={value}");
        }
    }
}
