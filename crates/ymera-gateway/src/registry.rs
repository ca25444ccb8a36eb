//! The route table: every request/reply endpoint the services publish in
//! their `$SRV.INFO` metadata (the typed endpoint registry of ymera-core),
//! rebuilt periodically and on demand, so a new endpoint is served without
//! gateway code.
//!
//! An endpoint stays in the table for [`FORGET_AFTER`] after the last
//! instance listing it was seen, so a service being restarted answers 503
//! (no responders), not 404.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_nats::service::Info;
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::Mutex;

/// How long an endpoint no instance lists any more stays routable.
pub const FORGET_AFTER: Duration = Duration::from_secs(300);
/// The most replies one discovery round reads.
const MAX_INFO_REPLIES: usize = 1000;
/// A discovery round ends when no reply came for this long.
const QUIET: Duration = Duration::from_millis(250);
/// On-demand refreshes (an unknown subject asked for) are at most this frequent.
const MIN_ON_DEMAND_INTERVAL: Duration = Duration::from_secs(2);

/// One endpoint as the gateway serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// The service (micro name).
    pub service: String,
    /// The NATS subject.
    pub subject: String,
    /// The permission it needs (`None`: open).
    pub permission: Option<String>,
    /// The request type's name.
    pub request: Option<String>,
    /// The reply type's name.
    pub reply: Option<String>,
    /// The request's JSON Schema file under `proto/schemas/`.
    pub request_schema: Option<String>,
    /// The reply's JSON Schema file under `proto/schemas/`.
    pub reply_schema: Option<String>,
    /// The service's description.
    pub description: String,
}

impl Endpoint {
    /// The HTTP path: `/v1/` + the subject with dots as slashes.
    pub fn path(&self) -> String {
        format!("/v1/{}", self.subject.replace('.', "/"))
    }
}

#[derive(Debug, Clone)]
struct Seen {
    endpoint: Endpoint,
    at: Instant,
}

/// The live route table.
#[derive(Debug)]
pub struct Registry {
    nats: async_nats::Client,
    table: RwLock<Arc<BTreeMap<String, Seen>>>,
    refreshing: Mutex<Instant>,
}

impl Registry {
    /// An empty table over `nats` (call [`refresh`](Self::refresh)).
    pub fn new(nats: async_nats::Client) -> Self {
        Registry {
            nats,
            table: RwLock::new(Arc::new(BTreeMap::new())),
            refreshing: Mutex::new(Instant::now() - MIN_ON_DEMAND_INTERVAL),
        }
    }

    /// The endpoint at `subject`.
    pub fn get(&self, subject: &str) -> Option<Endpoint> {
        self.snapshot().get(subject).map(|s| s.endpoint.clone())
    }

    /// Whether `subject` is routable.
    pub fn contains(&self, subject: &str) -> bool {
        match self.table.read() {
            Ok(table) => table.contains_key(subject),
            Err(poisoned) => poisoned.into_inner().contains_key(subject),
        }
    }

    /// Every endpoint, by subject.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.snapshot()
            .values()
            .map(|s| s.endpoint.clone())
            .collect()
    }

    fn snapshot(&self) -> Arc<BTreeMap<String, Seen>> {
        match self.table.read() {
            Ok(table) => table.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Asks every instance for `$SRV.INFO` and merges what they list.
    pub async fn refresh(&self) -> Result<usize, async_nats::Error> {
        let mut guard = self.refreshing.lock().await;
        let infos = discover(&self.nats).await?;
        let now = Instant::now();
        *guard = now;
        let mut table: BTreeMap<String, Seen> = self
            .snapshot()
            .iter()
            .filter(|(_, seen)| now.duration_since(seen.at) < FORGET_AFTER)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for info in &infos {
            for endpoint in endpoints_of(info) {
                table.insert(endpoint.subject.clone(), Seen { endpoint, at: now });
            }
        }
        let count = table.len();
        metrics::gauge!("ymera_gateway_routes").set(count as f64);
        match self.table.write() {
            Ok(mut slot) => *slot = Arc::new(table),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(table),
        }
        Ok(count)
    }

    /// Refreshes unless a refresh ran in the last [`MIN_ON_DEMAND_INTERVAL`]
    /// (an unknown subject asked for may be a brand-new endpoint).
    pub async fn refresh_on_demand(&self) {
        let last = *self.refreshing.lock().await;
        if last.elapsed() < MIN_ON_DEMAND_INTERVAL {
            return;
        }
        if let Err(err) = self.refresh().await {
            tracing::warn!(error = %err, "route table refresh failed");
        }
    }

    /// Refreshes every `interval` until `shutdown`.
    pub async fn refresh_loop(
        self: Arc<Self>,
        interval: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            if let Err(err) = self.refresh().await {
                tracing::warn!(error = %err, "route table refresh failed");
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// The routable endpoints of one instance: every endpoint but the gateway's
/// own and the per-instance health subjects.
fn endpoints_of(info: &Info) -> Vec<Endpoint> {
    if info.name == crate::NAME {
        return Vec::new();
    }
    info.endpoints
        .iter()
        .filter(|e| e.subject.starts_with(&format!("{}.", info.name)))
        .filter(|e| !e.subject.starts_with(&format!("{}.health.", info.name)))
        .filter(|e| is_plain_subject(&e.subject))
        .map(|e| {
            let meta = |key: &str| e.metadata.get(key).cloned();
            Endpoint {
                service: info.name.clone(),
                subject: e.subject.clone(),
                permission: meta("permission"),
                request: meta("request"),
                reply: meta("reply"),
                request_schema: meta("request_schema"),
                reply_schema: meta("reply_schema"),
                description: info.description.clone(),
            }
        })
        .collect()
}

/// A subject that is a path: tokens of `[A-Za-z0-9_-]`, no wildcards.
pub fn is_plain_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.len() <= 256
        && subject.split('.').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

async fn discover(nats: &async_nats::Client) -> Result<Vec<Info>, async_nats::Error> {
    let inbox = nats.new_inbox();
    let mut sub = nats.subscribe(inbox.clone()).await?;
    nats.publish_with_reply("$SRV.INFO", inbox, Bytes::new())
        .await?;
    nats.flush().await?;
    let mut infos = Vec::new();
    // The first reply may take a moment; later ones come close together.
    let mut wait = QUIET * 4;
    while infos.len() < MAX_INFO_REPLIES {
        match tokio::time::timeout(wait, sub.next()).await {
            Ok(Some(msg)) => {
                if let Ok(info) = serde_json::from_slice::<Info>(&msg.payload) {
                    infos.push(info);
                }
                wait = QUIET;
            }
            _ => break,
        }
    }
    Ok(infos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_subjects_only() {
        assert!(is_plain_subject("config.schema.set"));
        assert!(is_plain_subject("code-analysis.analyze"));
        assert!(!is_plain_subject("config.*"));
        assert!(!is_plain_subject("config..get"));
        assert!(!is_plain_subject("config.>"));
        assert!(!is_plain_subject(""));
    }
}
