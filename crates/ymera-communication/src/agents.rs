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

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use ymera_core::Error;
use ymera_core::error::{ErrorKind, Violation};
use ymera_core::runtime::{Call, OrEmpty};

use crate::Communication;
use crate::auth::{ReadMessages, SendAs, SendMessages};

/// The KV bucket of agent cards.
pub const BUCKET: &str = "YMERA_AGENTS";
/// Largest card accepted (the JSON body of `register`).
pub const MAX_CARD_BYTES: usize = 16 * 1024;
/// Most live agents kept (a registration beyond it is refused with 503).
pub const MAX_AGENTS: usize = 10_000;
/// Most skills on one card.
pub const MAX_SKILLS: usize = 64;
/// Shortest and longest `ttl_s`.
pub const TTL_RANGE: std::ops::RangeInclusive<u32> = 5..=3600;
/// `ttl_s` when the card gives none.
pub const DEFAULT_TTL_S: u32 = 30;
/// The recipient prefix routed by skill.
pub const SKILL_PREFIX: &str = "skill:";
const MAX_TEXT: usize = 1000;
const MAX_SHORT: usize = 200;
const MAX_LIST: usize = 32;

/// One skill of a card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Skill {
    /// Stable id, `[a-z0-9][a-z0-9_.-]{0,63}` (what `skill:<id>` names).
    pub id: String,
    /// Human name.
    #[serde(default)]
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// Free tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Example requests.
    #[serde(default)]
    pub examples: Vec<String>,
}

/// An agent card as registered (DESIGN §9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentCard {
    /// The agent's name (its inbox is `agent.<name>.inbox`).
    pub name: String,
    /// What the agent does.
    #[serde(default)]
    pub description: String,
    /// The agent's version.
    #[serde(default)]
    pub version: String,
    /// What it can do.
    #[serde(default)]
    pub skills: Vec<Skill>,
    /// Media types it accepts.
    #[serde(default)]
    pub input_modes: Vec<String>,
    /// Media types it answers with.
    #[serde(default)]
    pub output_modes: Vec<String>,
    /// Seconds the card stays live without a heartbeat.
    #[serde(default = "default_ttl")]
    pub ttl_s: u32,
}

fn default_ttl() -> u32 {
    DEFAULT_TTL_S
}

/// What an agent reports about itself in its heartbeat (the seed's agent metrics).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportedMetrics {
    /// Requests handled since the agent started.
    #[serde(default)]
    pub requests_handled: u64,
    /// Total processing time (ms).
    #[serde(default)]
    pub processing_time_ms: f64,
    /// Mean processing time per request (ms).
    #[serde(default)]
    pub avg_processing_time_ms: f64,
    /// Requests that failed.
    #[serde(default)]
    pub errors: u64,
    /// The agent's own state (`idle`, `processing`, …; ≤ 64 chars).
    #[serde(default)]
    pub state: String,
}

/// A stored entry (the KV value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The card.
    pub card: AgentCard,
    /// First registration of this entry.
    pub registered_at: DateTime<Utc>,
    /// Last register or heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// When the card lapses without a heartbeat.
    pub expires_at: DateTime<Utc>,
    /// The agent's last report.
    #[serde(default)]
    pub metrics: Option<ReportedMetrics>,
}

/// `heartbeat` request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The agent.
    pub name: String,
    /// Its own metrics.
    #[serde(default)]
    pub metrics: Option<ReportedMetrics>,
}

/// `get` / `deregister` request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameRequest {
    /// The agent.
    pub name: String,
}

/// `list` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    /// Only agents holding this skill.
    #[serde(default)]
    pub skill: Option<String>,
}

/// `register` / `heartbeat` reply.
#[derive(Debug, Clone, Serialize)]
pub struct RegisterReply {
    /// The agent.
    pub name: String,
    /// `registered` or `refreshed`.
    pub status: &'static str,
    /// When the card lapses without a heartbeat.
    pub expires_at: DateTime<Utc>,
    /// Its TTL.
    pub ttl_s: u32,
}

/// `deregister` reply.
#[derive(Debug, Clone, Serialize)]
pub struct DeregisterReply {
    /// The agent.
    pub name: String,
    /// Always true.
    pub deregistered: bool,
}

/// The platform's view of an agent's deliveries (PostgreSQL, every instance's).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeliveryView {
    /// Copies delivered.
    pub delivered: i64,
    /// Failed attempts (error reply, timeout, no responder).
    pub failed: i64,
    /// Copies dead-lettered.
    pub dead_lettered: i64,
    /// Mean accept → acknowledgement time of delivered copies (ms).
    pub mean_latency_ms: Option<f64>,
}

/// One agent as `list` and `get` show it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    /// The card's fields.
    #[serde(flatten)]
    pub card: AgentCard,
    /// `live` (its TTL has not run out).
    pub status: &'static str,
    /// True while live.
    pub live: bool,
    /// First registration.
    pub registered_at: DateTime<Utc>,
    /// Last heartbeat.
    pub last_heartbeat_at: DateTime<Utc>,
    /// When it lapses.
    pub expires_at: DateTime<Utc>,
    /// Undelivered copies waiting for it.
    pub backlog: u64,
    /// Its recipient circuit: closed, open or half_open.
    pub breaker: crate::model::CircuitState,
    /// Delivery stats.
    pub delivery: DeliveryView,
    /// What the agent reported (`null` until its first heartbeat with metrics).
    pub metrics: Option<ReportedMetrics>,
}

/// `list` reply.
#[derive(Debug, Clone, Serialize)]
pub struct ListReply {
    /// Live agents, by name.
    pub agents: Vec<AgentView>,
}

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

/// The agent's name must be the caller's own unless it holds `comm:send_as`.
fn check_owner<P: ymera_core::runtime::Permission>(
    call: &Call<P>,
    name: &str,
) -> Result<(), Error> {
    if let Some(principal) = call.principal()
        && principal.owner != name
        && !principal.has(SendAs::PERMISSION)
    {
        return Err(Error::forbidden(format!(
            "the card of {name:?} belongs to that agent, not to {:?}; acting for another agent needs {}",
            principal.owner,
            SendAs::PERMISSION
        ))
        .with_detail("reason", "agent_mismatch"));
    }
    Ok(())
}

fn check_text(violations: &mut Vec<Violation>, path: &str, text: &str, max: usize) {
    if text.chars().count() > max {
        violations.push(Violation::new(
            path,
            format!("longer than {max} characters"),
        ));
    }
    if text.contains('\0') {
        violations.push(Violation::new(path, "contains NUL"));
    }
}

fn check_list(violations: &mut Vec<Violation>, path: &str, items: &[String], max_len: usize) {
    if items.len() > MAX_LIST {
        violations.push(Violation::new(
            path,
            format!("{} items, at most {MAX_LIST}", items.len()),
        ));
    }
    for (i, item) in items.iter().enumerate().take(MAX_LIST) {
        check_text(violations, &format!("{path}/{i}"), item, max_len);
    }
}

/// Checks a skill id: `[a-z0-9][a-z0-9_.-]{0,63}`.
pub fn validate_skill_id(id: &str) -> Result<(), String> {
    let mut chars = id.chars();
    let Some(first) = chars.next() else {
        return Err("skill id must not be empty".into());
    };
    if id.len() > 64 {
        return Err("skill id longer than 64 characters".into());
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit())
        || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
    {
        return Err(format!(
            "skill id {:?} must match [a-z0-9][a-z0-9_.-]{{0,63}}",
            id.chars().take(80).collect::<String>()
        ));
    }
    Ok(())
}

/// Every rule of a card, all violations at once.
pub fn validate_card(card: &AgentCard) -> Result<(), Error> {
    let mut v = Vec::new();
    if let Err(msg) = ymera_core::envelope::validate_agent_name(&card.name) {
        v.push(Violation::new("/name", msg));
    }
    check_text(&mut v, "/description", &card.description, MAX_TEXT);
    check_text(&mut v, "/version", &card.version, 64);
    if !TTL_RANGE.contains(&card.ttl_s) {
        v.push(Violation::new(
            "/ttl_s",
            format!(
                "{} s, must be between {} and {}",
                card.ttl_s,
                TTL_RANGE.start(),
                TTL_RANGE.end()
            ),
        ));
    }
    if card.skills.len() > MAX_SKILLS {
        v.push(Violation::new(
            "/skills",
            format!("{} skills, at most {MAX_SKILLS}", card.skills.len()),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, skill) in card.skills.iter().enumerate().take(MAX_SKILLS) {
        if let Err(msg) = validate_skill_id(&skill.id) {
            v.push(Violation::new(format!("/skills/{i}/id"), msg));
        } else if !seen.insert(skill.id.as_str()) {
            v.push(Violation::new(
                format!("/skills/{i}/id"),
                format!("skill {:?} listed twice", skill.id),
            ));
        }
        check_text(&mut v, &format!("/skills/{i}/name"), &skill.name, MAX_SHORT);
        check_text(
            &mut v,
            &format!("/skills/{i}/description"),
            &skill.description,
            MAX_TEXT,
        );
        check_list(&mut v, &format!("/skills/{i}/tags"), &skill.tags, 64);
        check_list(
            &mut v,
            &format!("/skills/{i}/examples"),
            &skill.examples,
            MAX_TEXT,
        );
    }
    check_list(&mut v, "/input_modes", &card.input_modes, 128);
    check_list(&mut v, "/output_modes", &card.output_modes, 128);
    if v.is_empty() {
        Ok(())
    } else {
        Err(Error::validation(v))
    }
}

fn validate_metrics(metrics: &ReportedMetrics) -> Result<(), Error> {
    let mut v = Vec::new();
    check_text(&mut v, "/metrics/state", &metrics.state, 64);
    for (path, value) in [
        ("/metrics/processing_time_ms", metrics.processing_time_ms),
        (
            "/metrics/avg_processing_time_ms",
            metrics.avg_processing_time_ms,
        ),
    ] {
        if !value.is_finite() || value < 0.0 {
            v.push(Violation::new(path, "must be a finite number ≥ 0"));
        }
    }
    if v.is_empty() {
        Ok(())
    } else {
        Err(Error::validation(v))
    }
}

fn check_name(name: &str) -> Result<(), Error> {
    ymera_core::envelope::validate_agent_name(name)
        .map_err(|msg| Error::validation(vec![Violation::new("/name", msg)]))
}

fn unknown(name: &str) -> Error {
    Error::not_found(format!(
        "agent {name:?} has no live card (never registered, deregistered or expired); register it"
    ))
    .with_detail("name", name)
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
        metrics: previous.and_then(|(e, _)| e.metrics),
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
    check_owner(&call, &request.name)?;
    let registry = registry(&comm)?;
    for _ in 0..3 {
        let Some((mut entry, revision)) = registry.read(&request.name).await? else {
            return Err(unknown(&request.name));
        };
        let now = Utc::now();
        entry.heartbeat_at = now;
        entry.expires_at = now + chrono::Duration::seconds(i64::from(entry.card.ttl_s));
        if request.metrics.is_some() {
            entry.metrics = request.metrics.clone();
        }
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

/// Resolves every `skill:<id>` recipient of `recipients` to one live agent with the skill
/// (least backlog first, ties by a hash of `id`); named recipients stay. A malformed skill
/// id is a 422 naming the recipient; no live agent with the skill → 422 with
/// `details.reason = "no_capable_agent"` and the live agents.
pub fn resolve(
    comm: &Communication,
    id: Uuid,
    recipients: &mut [String],
) -> Result<Vec<(String, String)>, Error> {
    let mut resolved = Vec::new();
    for (i, recipient) in recipients.iter_mut().enumerate() {
        let Some(skill) = recipient.strip_prefix(SKILL_PREFIX) else {
            continue;
        };
        validate_skill_id(skill).map_err(|msg| {
            Error::validation(vec![Violation::new(format!("/recipients/{i}"), msg)])
        })?;
        let Some(registry) = comm.agents.as_ref() else {
            return Err(Error::dependency_down("jetstream"));
        };
        let now = Utc::now();
        let capable = registry.capable(skill, now);
        if capable.is_empty() {
            let live: Vec<serde_json::Value> = registry
                .live(now)
                .into_iter()
                .map(|e| {
                    serde_json::json!({
                        "name": e.card.name,
                        "skills": e.card.skills.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let names: Vec<String> = live
                .iter()
                .take(20)
                .filter_map(|a| a["name"].as_str().map(str::to_owned))
                .collect();
            let available = if names.is_empty() {
                "no agent is live".to_owned()
            } else {
                format!("live agents: {}", names.join(", "))
            };
            return Err(Error::new(
                ErrorKind::ValidationFailed,
                format!(
                    "no capable agent found: no live agent has the skill {skill:?}; {available}"
                ),
            )
            .with_detail("reason", "no_capable_agent")
            .with_detail("skill", skill)
            .with_detail("live_agents", live));
        }
        let chosen = choose(&capable, id, |name| comm.routing_backlog(name));
        comm.count_backlog(&chosen);
        resolved.push((recipient.clone(), chosen.clone()));
        *recipient = chosen;
    }
    Ok(resolved)
}

/// Least backlog first; among the least, the one a hash of `id` picks.
pub fn choose(capable: &[String], id: Uuid, backlog: impl Fn(&str) -> u64) -> String {
    let backlogs: Vec<u64> = capable.iter().map(|n| backlog(n)).collect();
    let least = backlogs.iter().copied().min().unwrap_or(0);
    let ties: Vec<&String> = capable
        .iter()
        .zip(&backlogs)
        .filter(|(_, b)| **b == least)
        .map(|(n, _)| n)
        .collect();
    // FNV-1a over the id's bytes (UUID v7: the low bits are random).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let index = usize::try_from(hash % ties.len().max(1) as u64).unwrap_or(0);
    ties.get(index)
        .map(|n| (*n).clone())
        .unwrap_or_else(|| capable[0].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

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
