//! Names, environments and the request/response shapes of every endpoint.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use ymera_core::Error;

/// Longest agent or template name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest actor name kept in the audit trail.
pub const MAX_ACTOR_LEN: usize = 255;
/// Most history entries one request returns.
pub const MAX_HISTORY_LIMIT: i64 = 1000;
/// Most agents in one import bundle.
pub const MAX_BUNDLE_AGENTS: usize = 10_000;
/// Most template variables in one apply.
pub const MAX_TEMPLATE_VARS: usize = 1000;

/// A configuration layer: `base` and the three deployment environments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Env {
    /// The layer every environment starts from.
    Base,
    /// Development overrides.
    Development,
    /// Staging overrides.
    Staging,
    /// Production overrides.
    Production,
}

impl Env {
    /// Every layer, base first.
    pub const ALL: [Env; 4] = [Env::Base, Env::Development, Env::Staging, Env::Production];

    /// The lower-case name used on the wire, in subjects and in PostgreSQL.
    pub fn as_str(self) -> &'static str {
        match self {
            Env::Base => "base",
            Env::Development => "development",
            Env::Staging => "staging",
            Env::Production => "production",
        }
    }

    /// Parses a stored or wire name.
    pub fn parse(name: &str) -> Result<Env, Error> {
        Env::ALL
            .into_iter()
            .find(|e| e.as_str() == name)
            .ok_or_else(|| {
                Error::invalid_request(format!(
                    "unknown environment {name:?}: expected base, development, staging or production"
                ))
            })
    }
}

impl fmt::Display for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks an agent or template name: `[a-z0-9][a-z0-9_-]{0,63}`.
pub fn check_name(what: &str, name: &str) -> Result<(), Error> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if first_ok && rest_ok && name.len() <= MAX_NAME_LEN {
        Ok(())
    } else {
        Err(Error::invalid_request(format!(
            "{what} {name:?} must match [a-z0-9][a-z0-9_-]{{0,63}}"
        )))
    }
}

/// The actor recorded in the audit trail (`anonymous` when none is given).
pub fn actor_or_default(actor: Option<String>) -> Result<String, Error> {
    match actor {
        None => Ok("anonymous".to_owned()),
        Some(a) if a.is_empty() || a.len() > MAX_ACTOR_LEN || a.chars().any(char::is_control) => {
            Err(Error::invalid_request(format!(
                "actor must be 1..={MAX_ACTOR_LEN} characters without control characters"
            )))
        }
        Some(a) => Ok(a),
    }
}

/// `config.get`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetRequest {
    /// The agent.
    pub agent: String,
    /// The environment (default `base`).
    #[serde(default = "default_env")]
    pub environment: Env,
    /// Only this value (RFC 6901 JSON Pointer, e.g. `/database/pool_size`).
    #[serde(default)]
    pub pointer: Option<String>,
    /// The raw layer instead of the effective (merged) document.
    #[serde(default)]
    pub raw: bool,
}

fn default_env() -> Env {
    Env::Base
}

/// Reply of `config.get`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetResponse {
    /// The agent.
    pub agent: String,
    /// The environment.
    pub environment: Env,
    /// Version of the document (for the effective document: the newer of
    /// the base and environment layers' versions).
    pub version: i64,
    /// When that version was written.
    pub updated_at: DateTime<Utc>,
    /// Who wrote it.
    pub updated_by: String,
    /// Whether `config` is the raw layer.
    pub raw: bool,
    /// The pointer asked for, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// The document (or the value at `pointer`).
    pub config: Value,
}

/// `config.set`: replace the layer, merge into it, or set one value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRequest {
    /// The agent.
    pub agent: String,
    /// The layer.
    pub environment: Env,
    /// The new layer document; with `pointer`, the value to put there; with
    /// `merge`, a JSON Merge Patch (RFC 7396) applied to the layer.
    pub config: Value,
    /// Set only the value at this JSON Pointer (parents are created).
    #[serde(default)]
    pub pointer: Option<String>,
    /// Apply `config` as a merge patch.
    #[serde(default)]
    pub merge: bool,
    /// Refuse with 409 unless the layer is at this version (0: does not exist yet).
    #[serde(default)]
    pub expected_version: Option<i64>,
    /// Who makes the change (audit trail).
    #[serde(default)]
    pub actor: Option<String>,
}

/// `config.delete`: the whole layer, or one value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    /// The agent.
    pub agent: String,
    /// The layer.
    pub environment: Env,
    /// Remove only the value at this JSON Pointer.
    #[serde(default)]
    pub pointer: Option<String>,
    /// Optimistic concurrency, as for `config.set`.
    #[serde(default)]
    pub expected_version: Option<i64>,
    /// Who makes the change.
    #[serde(default)]
    pub actor: Option<String>,
}

/// Reply of every write (`set`, `delete`, `rollback`, `template.apply`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteResponse {
    /// The agent.
    pub agent: String,
    /// The layer written.
    pub environment: Env,
    /// The layer's version now.
    pub version: i64,
    /// The layer's version before (0: it did not exist).
    pub previous_version: i64,
    /// False when the write changed nothing (no new version, no event).
    pub changed: bool,
    /// The change as a JSON Patch (RFC 6902).
    pub patch: Value,
    /// When.
    pub updated_at: DateTime<Utc>,
    /// Who.
    pub updated_by: String,
}

/// `config.history`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRequest {
    /// The agent.
    pub agent: String,
    /// The layer.
    pub environment: Env,
    /// Most entries of each list (default 50, at most 1000).
    #[serde(default)]
    pub limit: Option<i64>,
    /// Include each retained version's document.
    #[serde(default)]
    pub documents: bool,
}

/// One retained version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionEntry {
    /// The version.
    pub version: i64,
    /// What produced it (`set`, `delete`, `rollback`, `template`, `import`).
    pub action: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Who.
    pub created_by: String,
    /// True when this version deleted the layer.
    pub deleted: bool,
    /// The document, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
}

/// One audit row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Row id (increasing).
    pub id: i64,
    /// The layer (`schema` rows use the environment `*`).
    pub environment: String,
    /// `set`, `delete`, `rollback`, `template`, `import`, `schema.set`.
    pub action: String,
    /// Version before (absent when there was none).
    pub from_version: Option<i64>,
    /// Version after.
    pub to_version: Option<i64>,
    /// Who.
    pub actor: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The change as a JSON Patch.
    pub patch: Value,
}

/// Reply of `config.history`, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryResponse {
    /// The agent.
    pub agent: String,
    /// The layer.
    pub environment: Env,
    /// Retained versions.
    pub versions: Vec<VersionEntry>,
    /// Audit trail of the layer (and of the agent's schema).
    pub audit: Vec<AuditEntry>,
}

/// `config.diff`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffRequest {
    /// The agent.
    pub agent: String,
    /// The layer.
    pub environment: Env,
    /// From this version.
    pub from_version: i64,
    /// To this version (default: the current one).
    #[serde(default)]
    pub to_version: Option<i64>,
}

/// Reply of `config.diff`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiffResponse {
    /// The agent.
    pub agent: String,
    /// The layer.
    pub environment: Env,
    /// From.
    pub from_version: i64,
    /// To.
    pub to_version: i64,
    /// Turning `from` into `to` (RFC 6902).
    pub patch: Value,
}

/// `config.rollback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The agent.
    pub agent: String,
    /// The layer.
    pub environment: Env,
    /// The retained version whose content becomes the new version.
    pub to_version: i64,
    /// Optimistic concurrency.
    #[serde(default)]
    pub expected_version: Option<i64>,
    /// Who.
    #[serde(default)]
    pub actor: Option<String>,
}

/// `config.schema.set` (`schema: null` removes the schema).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaSetRequest {
    /// The agent.
    pub agent: String,
    /// A JSON Schema (draft 2020-12).
    pub schema: Value,
    /// Refuse with 409 unless the schema is at this version.
    #[serde(default)]
    pub expected_version: Option<i64>,
    /// Who.
    #[serde(default)]
    pub actor: Option<String>,
}

/// `config.schema.get`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaGetRequest {
    /// The agent.
    pub agent: String,
}

/// Reply of `config.schema.get` and `config.schema.set`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchemaResponse {
    /// The agent.
    pub agent: String,
    /// The schema (null when removed).
    pub schema: Value,
    /// Schema version (counts from 1).
    pub version: i64,
    /// When.
    pub updated_at: Option<DateTime<Utc>>,
    /// Who.
    pub updated_by: Option<String>,
}

/// `config.template.set`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSetRequest {
    /// Template name (`[a-z0-9][a-z0-9_-]{0,63}`).
    pub name: String,
    /// Any JSON; strings may hold `${var}` placeholders.
    pub template: Value,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Who.
    #[serde(default)]
    pub actor: Option<String>,
}

/// Reply of `config.template.set`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateSetResponse {
    /// The name.
    pub name: String,
    /// The placeholders found, sorted.
    pub variables: Vec<String>,
    /// When.
    pub updated_at: DateTime<Utc>,
}

/// `config.template.apply`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateApplyRequest {
    /// Template name.
    pub template: String,
    /// Target agent.
    pub agent: String,
    /// Target layer.
    pub environment: Env,
    /// Placeholder values.
    #[serde(default)]
    pub vars: Map<String, Value>,
    /// Optimistic concurrency.
    #[serde(default)]
    pub expected_version: Option<i64>,
    /// Who.
    #[serde(default)]
    pub actor: Option<String>,
}

/// The name of the bundle format.
pub const BUNDLE_FORMAT: &str = "ymera-config-bundle/1";

/// `config.export`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// The environment whose layer (with `base`) is exported.
    pub environment: Env,
}

/// Every agent's layers and schema.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// The environment exported (informational on import).
    #[serde(default)]
    pub environment: Option<Env>,
    /// When it was exported.
    #[serde(default)]
    pub exported_at: Option<DateTime<Utc>>,
    /// One entry per agent.
    pub agents: Vec<BundleAgent>,
}

/// One agent in a bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BundleAgent {
    /// The agent.
    pub agent: String,
    /// Its JSON Schema, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// Layer documents by environment.
    #[serde(default)]
    pub layers: BTreeMap<Env, Value>,
}

/// `config.import`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// The bundle.
    pub bundle: Bundle,
    /// Validate and report, change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Who.
    #[serde(default)]
    pub actor: Option<String>,
}

/// One layer an import changes (or would change).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportChange {
    /// The agent.
    pub agent: String,
    /// The layer, or `schema`.
    pub target: String,
    /// Version before (0: none).
    pub from_version: i64,
    /// Version after (absent on a dry run).
    pub to_version: Option<i64>,
}

/// Reply of `config.import`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportResponse {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Whether the changes were committed.
    pub applied: bool,
    /// Layers and schemas that changed (or would change).
    pub changes: Vec<ImportChange>,
    /// Layers and schemas already equal to the bundle.
    pub unchanged: usize,
}

/// The event published on `config.changed.<agent>.<environment>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// The agent.
    pub agent: String,
    /// The layer that changed.
    pub environment: Env,
    /// Its new version.
    pub version: i64,
    /// Who changed it.
    pub changed_by: String,
    /// When.
    pub changed_at: DateTime<Utc>,
}

/// The subject of a change event.
pub fn change_subject(agent: &str, env: Env) -> String {
    format!("config.changed.{agent}.{env}")
}

/// `config.metrics` reply: this instance's counters since it started (each
/// replica answers with its own), and the stored totals.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricsResponse {
    /// `config.get` reads answered from the cache (process or Redis).
    pub cache_hits: u64,
    /// `config.get` reads that went to PostgreSQL.
    pub cache_misses: u64,
    /// hits / (hits + misses) × 100, one decimal; 0 before any read.
    pub cache_hit_rate_percent: f64,
    /// `config.get` replies sent.
    pub gets_served: u64,
    /// Distinct (agent, environment, version) documents those replies carried.
    pub versions_served: u64,
    /// Whether `versions_served` reached its bound (100 000) and stopped counting.
    pub versions_served_capped: bool,
    /// Agents with configuration (stored).
    pub agents: i64,
    /// Versions in the history (stored, all agents and environments).
    pub stored_versions: i64,
    /// Cache entry lifetime (`CONFIG_CACHE_TTL`).
    pub cache_ttl_seconds: u64,
    /// Whether the cache is shared through Redis.
    pub shared_cache: bool,
}
