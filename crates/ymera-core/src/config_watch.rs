//! Hot-reloaded configuration for agents: [`ConfigWatcher`] fetches an
//! agent's effective configuration from the config manager (`config.get`),
//! deserializes it into the agent's own settings type, and keeps it current
//! by listening to `config.changed.<agent>.<environment>` (and `.base`,
//! which every environment inherits).
//!
//! When the manager is unreachable or a new document does not deserialize,
//! the last good value stays in place; the watcher retries with backoff and
//! also re-fetches periodically, so it catches up when the manager returns
//! even if it missed the change event.
//!
//! ```no_run
//! # async fn example(client: ymera_core::client::ServiceClient) -> Result<(), ymera_core::Error> {
//! #[derive(Clone, serde::Deserialize)]
//! struct Settings { max_workers: u32 }
//! let watcher = ymera_core::config_watch::ConfigWatcher::<Settings>::start(client, "billing", "production").await?;
//! let mut rx = watcher.receiver();
//! println!("workers: {}", rx.borrow().max_workers);
//! rx.changed().await.ok(); // a new version arrived
//! # Ok(()) }
//! ```

use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::client::ServiceClient;
use crate::error::Error;

/// How often the watcher re-fetches even without a change event (default).
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(30);
/// First retry delay after a failed fetch; doubles up to [`MAX_RETRY_DELAY`].
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
/// Longest retry delay after failed fetches.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// The part of a `config.get` reply the watcher needs.
#[derive(Deserialize)]
struct Fetched {
    version: i64,
    config: Value,
}

/// Default of `CONFIG_CACHE_TTL`: the config manager's cache lifetime and
/// how often a service following its settings re-fetches them.
pub const DEFAULT_CONFIG_CACHE_TTL: Duration = Duration::from_secs(300);

/// Options of a [`ConfigWatcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// Periodic re-fetch interval (a safety net for missed events).
    pub resync_interval: Duration,
}

impl WatchOptions {
    /// Re-fetches every `CONFIG_CACHE_TTL` (default 300 s); the options of
    /// a service that follows its settings ([`follow_settings`]).
    pub fn from_env(env: &crate::env::Env<'_>) -> Result<Self, crate::config::ConfigError> {
        Ok(WatchOptions {
            resync_interval: env.duration("CONFIG_CACHE_TTL", DEFAULT_CONFIG_CACHE_TTL)?,
        })
    }
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            resync_interval: DEFAULT_RESYNC_INTERVAL,
        }
    }
}

/// A live, typed view of one agent's effective configuration.
#[derive(Debug)]
pub struct ConfigWatcher<T> {
    rx: watch::Receiver<T>,
    version: watch::Receiver<i64>,
    stop: CancellationToken,
}

impl<T> Drop for ConfigWatcher<T> {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl<T> ConfigWatcher<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    /// Fetches the configuration once (failing if that fails or does not
    /// deserialize) and starts following changes.
    pub async fn start(
        client: ServiceClient,
        agent: &str,
        environment: &str,
    ) -> Result<Self, Error> {
        Self::start_with(client, agent, environment, WatchOptions::default()).await
    }

    /// [`ConfigWatcher::start`] with options.
    pub async fn start_with(
        client: ServiceClient,
        agent: &str,
        environment: &str,
        options: WatchOptions,
    ) -> Result<Self, Error> {
        Self::launch(client, agent, environment, options, None).await
    }

    /// Starts with `default` when the first fetch fails (manager down, no
    /// configuration yet, or a document that does not fit `T`), then follows
    /// changes and retries like a running watcher; version 0 until a fetch
    /// succeeds. Fails only when NATS refuses the subscription.
    pub async fn start_with_default(
        client: ServiceClient,
        agent: &str,
        environment: &str,
        options: WatchOptions,
        default: T,
    ) -> Result<Self, Error> {
        Self::launch(client, agent, environment, options, Some(default)).await
    }

    async fn launch(
        client: ServiceClient,
        agent: &str,
        environment: &str,
        options: WatchOptions,
        default: Option<T>,
    ) -> Result<Self, Error> {
        let mut subjects = vec![format!("config.changed.{agent}.{environment}")];
        if environment != "base" {
            subjects.push(format!("config.changed.{agent}.base"));
        }
        // Subscribe before the first fetch so no change falls in between.
        let mut subscriptions = Vec::new();
        for subject in &subjects {
            let sub = client
                .nats()
                .subscribe(subject.clone())
                .await
                .map_err(|_| Error::dependency_down("nats"))?;
            subscriptions.push(sub);
        }
        let source = Source {
            client,
            agent: agent.to_owned(),
            environment: environment.to_owned(),
        };
        let (version, value, pending) = match (source.fetch::<T>().await, default) {
            (Ok((version, value)), _) => (version, value, false),
            (Err(err), Some(default)) => {
                tracing::warn!(agent, error = %err, "no configuration yet; starting with the default");
                (0, default, true)
            }
            (Err(err), None) => return Err(err),
        };
        let (tx, rx) = watch::channel(value);
        let (version_tx, version_rx) = watch::channel(version);
        let stop = CancellationToken::new();
        let events = futures::stream::select_all(subscriptions);
        let retry = pending.then_some(FIRST_RETRY_DELAY);
        tokio::spawn(follow(
            source,
            events,
            Channels { tx, version_tx },
            options,
            retry,
            stop.clone(),
        ));
        Ok(ConfigWatcher {
            rx,
            version: version_rx,
            stop,
        })
    }

    /// A receiver of the current value; `changed()` resolves on each new one.
    pub fn receiver(&self) -> watch::Receiver<T> {
        self.rx.clone()
    }

    /// The version of the current value.
    pub fn version(&self) -> i64 {
        *self.version.borrow()
    }

    /// A receiver of the current version.
    pub fn version_receiver(&self) -> watch::Receiver<i64> {
        self.version.clone()
    }

    /// Stops following changes (also done on drop).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Follows a service's own document in the config manager (agent `agent`
/// in the process's `ENVIRONMENT`) and applies each valid version over the
/// settings read at start with `apply(&start, &document)`. A document that
/// `apply` refuses is logged and the last good settings stay; without a
/// config manager (or before the agent has a document) the start settings
/// hold. `apply` gets `Value::Null` while there is no document.
///
/// `options` come from [`WatchOptions::from_env`] (`CONFIG_CACHE_TTL`).
///
/// The returned receiver changes only when the applied settings differ.
pub async fn follow_settings<S, E, F>(
    runtime: &crate::runtime::Runtime,
    agent: &str,
    options: WatchOptions,
    start: S,
    apply: F,
) -> watch::Receiver<S>
where
    S: Clone + PartialEq + Send + Sync + 'static,
    E: std::fmt::Display,
    F: Fn(&S, &Value) -> Result<S, E> + Send + 'static,
{
    runtime.calls("config");
    let (tx, rx) = watch::channel(start.clone());
    let client = ServiceClient::new(runtime.client().clone())
        .with_credential(runtime.config().service_credential.clone());
    let watcher = match ConfigWatcher::<Value>::start_with_default(
        client,
        agent,
        runtime.config().environment.as_str(),
        options,
        Value::Null,
    )
    .await
    {
        Ok(watcher) => watcher,
        Err(err) => {
            tracing::warn!(agent, error = %err, "not following the config manager; start settings hold");
            return rx;
        }
    };
    let (agent, shutdown) = (agent.to_owned(), runtime.shutdown_token());
    tokio::spawn(async move {
        let mut documents = watcher.receiver();
        loop {
            // As text, so no `E` is held across the await below.
            let applied =
                apply(&start, &documents.borrow_and_update()).map_err(|err| err.to_string());
            match applied {
                Ok(settings) => {
                    if *tx.borrow() != settings {
                        tracing::info!(
                            agent,
                            version = watcher.version(),
                            "settings changed by the config manager"
                        );
                        tx.send_replace(settings);
                    }
                }
                Err(err) => tracing::warn!(
                    agent,
                    version = watcher.version(),
                    error = %err,
                    "configuration refused; the last good settings stay"
                ),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = documents.changed() => if changed.is_err() { break },
            }
        }
    });
    rx
}

struct Source {
    client: ServiceClient,
    agent: String,
    environment: String,
}

impl Source {
    async fn fetch<T: DeserializeOwned>(&self) -> Result<(i64, T), Error> {
        let request = json!({"agent": self.agent, "environment": self.environment});
        let fetched: Fetched = self.client.request("config.get", &request).await?;
        let value = serde_json::from_value(fetched.config).map_err(|e| {
            metrics::counter!("ymera_config_reload_failures_total", "agent" => self.agent.clone())
                .increment(1);
            Error::invalid_request(format!(
                "the configuration of {} ({}) does not fit the agent's settings type: {e}",
                self.agent, self.environment
            ))
        })?;
        Ok((fetched.version, value))
    }
}

struct Channels<T> {
    tx: watch::Sender<T>,
    version_tx: watch::Sender<i64>,
}

async fn follow<T, S>(
    source: Source,
    mut events: S,
    channels: Channels<T>,
    options: WatchOptions,
    mut retry_delay: Option<Duration>,
    stop: CancellationToken,
) where
    T: DeserializeOwned + Send + Sync + 'static,
    S: futures::Stream<Item = async_nats::Message> + Unpin,
{
    let Channels { tx, version_tx } = channels;
    // A zero period would make `interval` panic.
    let period = options.resync_interval.max(Duration::from_millis(100));
    let mut resync = tokio::time::interval(period);
    resync.tick().await;
    loop {
        let wait_retry = async {
            match retry_delay {
                Some(d) => tokio::time::sleep(d).await,
                None => futures::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            event = events.next() => {
                let Some(event) = event else { return };
                let newer = serde_json::from_slice::<Value>(&event.payload)
                    .ok()
                    .and_then(|v| v.get("version").and_then(Value::as_i64))
                    .is_none_or(|v| v > *version_tx.borrow());
                if !newer {
                    continue;
                }
            }
            _ = resync.tick() => {}
            _ = wait_retry => {}
        }
        match source.fetch::<T>().await {
            Ok((version, value)) => {
                retry_delay = None;
                if version != *version_tx.borrow() {
                    tx.send_replace(value);
                    version_tx.send_replace(version);
                    tracing::info!(agent = %source.agent, environment = %source.environment, version, "configuration reloaded");
                }
            }
            Err(err) => {
                // Keep the last good value; try again with backoff.
                let next = retry_delay.map_or(FIRST_RETRY_DELAY, |d| (d * 2).min(MAX_RETRY_DELAY));
                retry_delay = Some(next);
                tracing::warn!(agent = %source.agent, error = %err, retry_in_ms = next.as_millis() as u64, "configuration reload failed; keeping the last good value");
            }
        }
    }
}
