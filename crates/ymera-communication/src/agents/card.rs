//! Agent cards: the card, its parts and the replies (DESIGN §9), and their validation.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ymera_core::Error;
use ymera_core::error::Violation;
use ymera_core::runtime::Call;

use crate::auth::SendAs;

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
    /// The agent's last report: with `instances`, their sum ([`sum_instances`]).
    #[serde(default)]
    pub metrics: Option<ReportedMetrics>,
    /// The last report of each replica that names its `instance` in the heartbeat
    /// (at most [`MAX_INSTANCES`]; a replica silent for a TTL is dropped).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instances: BTreeMap<String, InstanceReport>,
}

/// One replica's last heartbeat report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceReport {
    /// Its metrics.
    pub metrics: ReportedMetrics,
    /// When it reported them.
    pub at: DateTime<Utc>,
}

/// Replicas of one agent whose reports a card keeps.
pub const MAX_INSTANCES: usize = 64;

/// The agent's metrics as the sum of its replicas' reports: counts and times add up, the
/// mean is recomputed, and the state is `processing` when any replica is (else the first
/// replica's state).
pub fn sum_instances(instances: &BTreeMap<String, InstanceReport>) -> Option<ReportedMetrics> {
    let mut reports = instances.values().map(|r| &r.metrics);
    let first = reports.next()?.clone();
    let mut sum = reports.fold(first, |mut acc, m| {
        acc.requests_handled = acc.requests_handled.saturating_add(m.requests_handled);
        acc.processing_time_ms += m.processing_time_ms;
        acc.errors = acc.errors.saturating_add(m.errors);
        if m.state == "processing" {
            acc.state = m.state.clone();
        }
        acc
    });
    sum.avg_processing_time_ms = if sum.requests_handled == 0 {
        0.0
    } else {
        ((sum.processing_time_ms / sum.requests_handled as f64) * 1000.0).round() / 1000.0
    };
    sum.processing_time_ms = (sum.processing_time_ms * 1000.0).round() / 1000.0;
    Some(sum)
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
    /// The replica reporting (e.g. its NATS service instance id): the card then shows the
    /// sum of every live replica's metrics instead of the last report.
    #[serde(default)]
    pub instance: Option<String>,
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

/// The agent's name must be the caller's own unless it holds `comm:send_as`.
pub(super) fn check_owner<P: ymera_core::runtime::Permission>(
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

pub(super) fn check_text(violations: &mut Vec<Violation>, path: &str, text: &str, max: usize) {
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

pub(super) fn check_list(
    violations: &mut Vec<Violation>,
    path: &str,
    items: &[String],
    max_len: usize,
) {
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

pub(super) fn validate_metrics(metrics: &ReportedMetrics) -> Result<(), Error> {
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

/// An `instance` of a heartbeat: 1–64 characters of `[A-Za-z0-9_-]`.
pub(super) fn check_instance(instance: &str) -> Result<(), Error> {
    let ok = !instance.is_empty()
        && instance.len() <= 64
        && instance
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::validation(vec![Violation::new(
            "/instance",
            "must be 1–64 characters of A-Z, a-z, 0-9, _ or -",
        )]))
    }
}

pub(super) fn check_name(name: &str) -> Result<(), Error> {
    ymera_core::envelope::validate_agent_name(name)
        .map_err(|msg| Error::validation(vec![Violation::new("/name", msg)]))
}

pub(super) fn unknown(name: &str) -> Error {
    Error::not_found(format!(
        "agent {name:?} has no live card (never registered, deregistered or expired); register it"
    ))
    .with_detail("name", name)
}
