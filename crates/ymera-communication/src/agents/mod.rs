//! Agent cards (DESIGN §9): `communication.agents.{register,heartbeat,list,get,deregister}`
//! and the `skill:<id>` resolution of [`send`](crate::send).
//!
//! A card (field names after the A2A agent card) lives in the JetStream KV bucket
//! [`BUCKET`], at the platform's replica count, written with a per-message TTL (`Nats-TTL`,
//! NATS ≥ 2.11) of the card's `ttl_s`: the server removes an entry nobody refreshed and
//! leaves a delete marker, so a dead agent disappears within its TTL on every instance.
//! Each instance watches the bucket and keeps the live cards in memory (at most
//! [`MAX_AGENTS`]), so resolving a `skill:` recipient costs no round trip; reads also drop
//! any entry whose `expires_at` passed (the marker may lag by a second).
//!
//! Choice among capable agents: least backlog (JetStream, polled every 2 s and counted up
//! locally by each resolution), ties broken by a hash of the message id — a stateless
//! round-robin that every communication replica computes alike, and that sends a resend of
//! one id to the same agent (so the resend stays a duplicate).

mod card;
mod routing;

pub use card::*;
pub use routing::*;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use ymera_core::Error;
use ymera_core::error::{ErrorKind, Violation};
use ymera_core::runtime::{Call, OrEmpty};

use crate::Communication;
use crate::auth::{ReadMessages, SendMessages};

/// The bucket and this instance's copy of the live cards.
pub struct Registry {
    js: jetstream::Context,
    kv: kv::Store,
    cards: RwLock<HashMap<String, Entry>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// The stream config of the bucket (what `create_key_value` makes, with per-message TTLs).
fn bucket_config() -> stream::Config {
    stream::Config {
        name: format!("KV_{BUCKET}"),
        description: Some("agent cards (communication.agents.*)".to_owned()),
        subjects: vec![format!("$KV.{BUCKET}.>")],
        max_messages_per_subject: 1,
        max_message_size: i32::try_from(MAX_CARD_BYTES * 2).unwrap_or(i32::MAX),
        max_messages: i64::try_from(MAX_AGENTS * 2).unwrap_or(i64::MAX),
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        allow_message_ttl: true,
        // Expired entries leave a delete marker (watchers see the agent go), kept 60 s.
        subject_delete_marker_ttl: Some(Duration::from_secs(60)),
        ..Default::default()
    }
}

impl Registry {
    /// Creates (or scales) the bucket and starts following it.
    pub async fn start(
        js: &jetstream::Context,
        replicas: ymera_core::jetstream::Replicas,
    ) -> Result<Arc<Registry>, String> {
        ymera_core::jetstream::ensure_stream(js, bucket_config(), replicas).await?;
        let kv = js
            .get_key_value(BUCKET)
            .await
            .map_err(|e| format!("bucket {BUCKET}: {e}"))?;
        Ok(Arc::new(Registry {
            js: js.clone(),
            kv,
            cards: RwLock::new(HashMap::new()),
        }))
    }

    /// Follows the bucket until `shutdown` (restarting the watch after an error).
    pub async fn follow(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            match self.kv.watch_with_history(">").await {
                Ok(mut watch) => {
                    let mut fresh: Option<HashMap<String, Entry>> = Some(HashMap::new());
                    if watch_done_initially(&self.kv).await {
                        self.swap(fresh.take());
                    }
                    loop {
                        let next = tokio::select! {
                            _ = shutdown.cancelled() => return,
                            next = watch.next() => next,
                        };
                        let Some(Ok(entry)) = next else { break };
                        let put = entry.operation == kv::Operation::Put;
                        let parsed = if put {
                            serde_json::from_slice::<Entry>(&entry.value).ok()
                        } else {
                            None
                        };
                        match fresh.as_mut() {
                            Some(map) => {
                                apply(map, &entry.key, parsed);
                            }
                            None => {
                                let mut cards =
                                    self.cards.write().unwrap_or_else(|p| p.into_inner());
                                apply(&mut cards, &entry.key, parsed);
                            }
                        }
                        if entry.delta == 0 && fresh.is_some() {
                            self.swap(fresh.take());
                        }
                    }
                }
                Err(err) => tracing::debug!(error = %err, "cannot watch the agent cards"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    fn swap(&self, fresh: Option<HashMap<String, Entry>>) {
        if let Some(fresh) = fresh {
            *self.cards.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        }
    }

    fn remember(&self, entry: Option<Entry>, name: &str) {
        let mut cards = self.cards.write().unwrap_or_else(|p| p.into_inner());
        apply(&mut cards, name, entry);
    }

    /// The live entries this instance knows, by name.
    pub fn live(&self, now: DateTime<Utc>) -> Vec<Entry> {
        let cards = self.cards.read().unwrap_or_else(|p| p.into_inner());
        let mut live: Vec<Entry> = cards
            .values()
            .filter(|e| e.expires_at > now)
            .cloned()
            .collect();
        live.sort_by(|a, b| a.card.name.cmp(&b.card.name));
        live
    }

    /// The live agents holding `skill`, by name.
    pub fn capable(&self, skill: &str, now: DateTime<Utc>) -> Vec<String> {
        let cards = self.cards.read().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<String> = cards
            .values()
            .filter(|e| e.expires_at > now && e.card.skills.iter().any(|s| s.id == skill))
            .map(|e| e.card.name.clone())
            .collect();
        names.sort();
        names
    }

    async fn read(&self, name: &str) -> Result<Option<(Entry, u64)>, Error> {
        let entry = self
            .kv
            .entry(name)
            .await
            .map_err(|_| Error::dependency_down("jetstream"))?;
        let Some(entry) = entry else { return Ok(None) };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let Ok(parsed) = serde_json::from_slice::<Entry>(&entry.value) else {
            return Ok(None);
        };
        if parsed.expires_at <= Utc::now() {
            return Ok(None);
        }
        Ok(Some((parsed, entry.revision)))
    }

    /// Writes `entry` with its TTL; `revision` (when given) must still be the key's last.
    async fn write(&self, entry: &Entry, revision: Option<u64>) -> Result<(), Error> {
        let body = Bytes::from(serde_json::to_vec(entry).map_err(Error::internal)?);
        let mut headers = HeaderMap::new();
        headers.insert("Nats-TTL", entry.card.ttl_s.to_string().as_str());
        if let Some(revision) = revision {
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                revision.to_string().as_str(),
            );
        }
        let subject = format!("$KV.{BUCKET}.{}", entry.card.name);
        let ack = self
            .js
            .publish_with_headers(subject, headers, body)
            .await
            .map_err(|_| Error::dependency_down("jetstream"))?;
        match ack.await {
            Ok(_) => {
                self.remember(Some(entry.clone()), &entry.card.name);
                Ok(())
            }
            Err(err) if revision.is_some() && err.to_string().contains("wrong last sequence") => {
                Err(Error::conflict(format!(
                    "the card of {} changed meanwhile; retry",
                    entry.card.name
                )))
            }
            Err(err) => {
                tracing::warn!(error = %err, "agent card not stored");
                Err(Error::dependency_down("jetstream"))
            }
        }
    }
}

async fn watch_done_initially(kv: &kv::Store) -> bool {
    // An empty bucket sends no initial entries: nothing to wait for.
    matches!(kv.status().await, Ok(status) if status.values() == 0)
}

fn apply(map: &mut HashMap<String, Entry>, key: &str, entry: Option<Entry>) {
    match entry {
        Some(entry) => {
            if map.len() < MAX_AGENTS || map.contains_key(key) {
                map.insert(key.to_owned(), entry);
            }
        }
        None => {
            map.remove(key);
        }
    }
}

fn registry(comm: &Communication) -> Result<&Arc<Registry>, Error> {
    comm.agents
        .as_ref()
        .ok_or_else(|| Error::dependency_down("jetstream"))
}

/// `communication.agents.register`.
pub async fn register(
    comm: Arc<Communication>,
    call: Call<SendMessages>,
    card: AgentCard,
) -> Result<RegisterReply, Error> {
    if call.payload.len() > MAX_CARD_BYTES {
        return Err(Error::payload_too_large(
            "agent card",
            call.payload.len(),
            MAX_CARD_BYTES,
        ));
    }
    validate_card(&card)?;
    check_owner(&call, &card.name)?;
    let registry = registry(&comm)?;
    let now = Utc::now();
    let previous = registry.read(&card.name).await?;
    if previous.is_none() && registry.live(now).len() >= MAX_AGENTS {
        return Err(Error::new(
            ErrorKind::Unavailable,
            format!("{MAX_AGENTS} agents are registered, the most allowed"),
        )
        .with_detail("reason", "too_many_agents"));
    }
    let entry = Entry {
        registered_at: previous
            .as_ref()
            .map(|(e, _)| e.registered_at)
            .unwrap_or(now),
        metrics: previous.as_ref().and_then(|(e, _)| e.metrics.clone()),
        instances: previous.map(|(e, _)| e.instances).unwrap_or_default(),
        heartbeat_at: now,
        expires_at: now + chrono::Duration::seconds(i64::from(card.ttl_s)),
        card,
    };
    registry.write(&entry, None).await?;
    Ok(RegisterReply {
        name: entry.card.name.clone(),
        status: "registered",
        expires_at: entry.expires_at,
        ttl_s: entry.card.ttl_s,
    })
}

/// `communication.agents.heartbeat`: refreshes the TTL and stores the agent's metrics;
/// 404 for an agent without a live card (the agent registers again).
pub async fn heartbeat(
    comm: Arc<Communication>,
    call: Call<SendMessages>,
    request: HeartbeatRequest,
) -> Result<RegisterReply, Error> {
    check_name(&request.name)?;
    if let Some(metrics) = &request.metrics {
        validate_metrics(metrics)?;
    }
    if let Some(instance) = &request.instance {
        check_instance(instance)?;
    }
    check_owner(&call, &request.name)?;
    let registry = registry(&comm)?;
    for _ in 0..3 {
        let Some((mut entry, revision)) = registry.read(&request.name).await? else {
            return Err(unknown(&request.name));
        };
        let now = Utc::now();
        entry.heartbeat_at = now;
        entry.expires_at = now + chrono::Duration::seconds(i64::from(entry.card.ttl_s));
        record_metrics(&mut entry, &request, now)?;
        match registry.write(&entry, Some(revision)).await {
            Ok(()) => {
                return Ok(RegisterReply {
                    name: entry.card.name.clone(),
                    status: "refreshed",
                    expires_at: entry.expires_at,
                    ttl_s: entry.card.ttl_s,
                });
            }
            Err(err) if err.kind == ErrorKind::Conflict => continue,
            Err(err) => return Err(err),
        }
    }
    Err(Error::conflict(format!(
        "the card of {} kept changing; retry",
        request.name
    )))
}

/// Stores a heartbeat's metrics in `entry`: a report naming its `instance` replaces that
/// replica's, replicas silent for the card's TTL are dropped and the card shows their sum;
/// a report without one replaces the card's metrics.
fn record_metrics(
    entry: &mut Entry,
    request: &HeartbeatRequest,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let Some(metrics) = &request.metrics else {
        return Ok(());
    };
    let Some(instance) = &request.instance else {
        entry.metrics = Some(metrics.clone());
        return Ok(());
    };
    let stale = now - chrono::Duration::seconds(i64::from(entry.card.ttl_s));
    entry.instances.retain(|_, report| report.at > stale);
    if !entry.instances.contains_key(instance) && entry.instances.len() >= MAX_INSTANCES {
        return Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "{MAX_INSTANCES} replicas of {} report metrics, the most allowed",
                entry.card.name
            ),
        )
        .with_detail("reason", "too_many_instances"));
    }
    entry.instances.insert(
        instance.clone(),
        InstanceReport {
            metrics: metrics.clone(),
            at: now,
        },
    );
    entry.metrics = sum_instances(&entry.instances);
    Ok(())
}

/// `communication.agents.deregister`.
pub async fn deregister(
    comm: Arc<Communication>,
    call: Call<SendMessages>,
    request: NameRequest,
) -> Result<DeregisterReply, Error> {
    check_name(&request.name)?;
    check_owner(&call, &request.name)?;
    let registry = registry(&comm)?;
    if registry.read(&request.name).await?.is_none() {
        return Err(unknown(&request.name));
    }
    registry
        .kv
        .delete(&request.name)
        .await
        .map_err(|_| Error::dependency_down("jetstream"))?;
    registry.remember(None, &request.name);
    Ok(DeregisterReply {
        name: request.name,
        deregistered: true,
    })
}

/// `communication.agents.get`.
pub async fn get(
    comm: Arc<Communication>,
    _call: Call<ReadMessages>,
    request: NameRequest,
) -> Result<AgentView, Error> {
    check_name(&request.name)?;
    let registry = registry(&comm)?;
    let Some((entry, _)) = registry.read(&request.name).await? else {
        return Err(unknown(&request.name));
    };
    let mut views = views(&comm, vec![entry]).await?;
    views.pop().ok_or_else(|| unknown(&request.name))
}

/// `communication.agents.list`: the live agents (optionally those with one skill).
pub async fn list(
    comm: Arc<Communication>,
    _call: Call<ReadMessages>,
    OrEmpty(request): OrEmpty<ListRequest>,
) -> Result<ListReply, Error> {
    if let Some(skill) = &request.skill {
        validate_skill_id(skill)
            .map_err(|msg| Error::validation(vec![Violation::new("/skill", msg)]))?;
    }
    let registry = registry(&comm)?;
    let entries: Vec<Entry> = registry
        .live(Utc::now())
        .into_iter()
        .filter(|e| match &request.skill {
            Some(skill) => e.card.skills.iter().any(|s| &s.id == skill),
            None => true,
        })
        .collect();
    Ok(ListReply {
        agents: views(&comm, entries).await?,
    })
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    recipient: String,
    delivered: i64,
    failed: i64,
    dead_lettered: i64,
    mean_latency_ms: Option<f64>,
}

async fn views(comm: &Communication, entries: Vec<Entry>) -> Result<Vec<AgentView>, Error> {
    let names: Vec<String> = entries.iter().map(|e| e.card.name.clone()).collect();
    let rows: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT recipient,
                count(*) FILTER (WHERE state = 'delivered') AS delivered,
                COALESCE(sum(CASE WHEN state = 'delivered' THEN greatest(attempts - 1, 0)
                                  ELSE attempts END), 0)::BIGINT AS failed,
                count(*) FILTER (WHERE state = 'dead_lettered') AS dead_lettered,
                avg(latency_ms) FILTER (WHERE state = 'delivered') AS mean_latency_ms
           FROM message_deliveries WHERE recipient = ANY($1) GROUP BY recipient",
    )
    .bind(&names)
    .fetch_all(comm.journal.pool())
    .await
    .map_err(|err| {
        tracing::warn!(error = %err, "cannot read delivery stats");
        Error::dependency_down("postgres")
    })?;
    let mut stats: HashMap<String, DeliveryView> = rows
        .into_iter()
        .map(|r| {
            (
                r.recipient,
                DeliveryView {
                    delivered: r.delivered,
                    failed: r.failed,
                    dead_lettered: r.dead_lettered,
                    mean_latency_ms: r.mean_latency_ms,
                },
            )
        })
        .collect();
    let backlogs = crate::delivery::backlogs_of(comm, &names).await;
    let now = Utc::now();
    Ok(entries
        .into_iter()
        .map(|e| {
            let name = e.card.name.clone();
            AgentView {
                status: if e.expires_at > now {
                    "live"
                } else {
                    "expired"
                },
                live: e.expires_at > now,
                registered_at: e.registered_at,
                last_heartbeat_at: e.heartbeat_at,
                expires_at: e.expires_at,
                backlog: backlogs.get(&name).copied().unwrap_or(0),
                breaker: comm.breakers.get(&name).state().into(),
                delivery: stats.remove(&name).unwrap_or_default(),
                metrics: e.metrics,
                card: e.card,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn ties_spread_over_agents_and_least_backlog_wins() {
        let agents = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let mut counts = HashMap::new();
        for _ in 0..3000 {
            *counts
                .entry(choose(&agents, Uuid::now_v7(), |_| 0))
                .or_insert(0) += 1;
        }
        for name in &agents {
            let n = counts.get(name).copied().unwrap_or(0);
            assert!((800..1200).contains(&n), "{name}: {n} of 3000");
        }
        let id = Uuid::now_v7();
        assert_eq!(choose(&agents, id, |_| 0), choose(&agents, id, |_| 0));
        assert_eq!(
            choose(&agents, id, |n| if n == "b" { 0 } else { 5 }),
            "b".to_owned()
        );
    }

    #[test]
    fn instance_reports_are_bounded_and_lapse_after_the_ttl() {
        let now = Utc::now();
        let card: AgentCard =
            serde_json::from_value(serde_json::json!({"name": "many", "ttl_s": 30})).unwrap();
        let mut entry = Entry {
            card,
            registered_at: now,
            heartbeat_at: now,
            expires_at: now,
            metrics: None,
            instances: std::collections::BTreeMap::new(),
        };
        let beat = |instance: &str, handled: u64| HeartbeatRequest {
            name: "many".into(),
            metrics: Some(ReportedMetrics {
                requests_handled: handled,
                ..Default::default()
            }),
            instance: Some(instance.into()),
        };
        for i in 0..MAX_INSTANCES {
            record_metrics(&mut entry, &beat(&format!("r{i}"), 1), now).unwrap();
        }
        assert_eq!(entry.metrics.as_ref().unwrap().requests_handled, 64);
        // A 65th replica is refused and changes nothing; a known one still reports.
        let err = record_metrics(&mut entry, &beat("r-new", 1), now).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable);
        assert_eq!(entry.instances.len(), MAX_INSTANCES);
        record_metrics(&mut entry, &beat("r0", 5), now).unwrap();
        assert_eq!(entry.metrics.as_ref().unwrap().requests_handled, 68);
        // After a TTL of silence the others lapse: the card shows only who reported.
        let later = now + chrono::Duration::seconds(31);
        record_metrics(&mut entry, &beat("r-new", 2), later).unwrap();
        assert_eq!(entry.instances.len(), 1);
        assert_eq!(entry.metrics.as_ref().unwrap().requests_handled, 2);
    }

    #[test]
    fn cards_are_checked_field_by_field() {
        let card: AgentCard = serde_json::from_value(serde_json::json!({
            "name": "Bad Name", "ttl_s": 1,
            "skills": [{"id": "ok"}, {"id": "ok"}, {"id": "NOPE"}]
        }))
        .unwrap();
        let err = validate_card(&card).unwrap_err();
        assert_eq!(err.kind, ErrorKind::ValidationFailed);
        let text = serde_json::to_string(&err.details).unwrap();
        for path in ["/name", "/ttl_s", "/skills/1/id", "/skills/2/id"] {
            assert!(text.contains(path), "{path} in {text}");
        }
        assert!(validate_skill_id("code_review").is_ok());
        assert!(validate_skill_id("").is_err());
    }
}
