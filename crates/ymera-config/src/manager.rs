//! The config manager: every endpoint's logic on top of the store and cache.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::Utc;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use ymera_core::Error;
use ymera_core::error::Violation;

use crate::Settings;
use crate::cache::{ConfigCache, Layer};
use crate::document;
use crate::model::*;
use crate::store::{self, LayerWrite, db_err};

/// Room left in a reply for the fields around a document.
const REPLY_OVERHEAD: usize = 4096;

/// Shared state of one config-manager instance.
pub struct ConfigManager {
    /// `config.get` replies of this process since start.
    gets_served: std::sync::atomic::AtomicU64,
    /// The (agent, environment, version) triples those replies carried
    /// (bounded by [`MAX_TRACKED_VERSIONS`]).
    versions_served: std::sync::Mutex<std::collections::HashSet<(String, Env, i64)>>,
    pool: PgPool,
    cache: ConfigCache,
    nats: async_nats::Client,
    settings: Settings,
    max_message_size: usize,
}

/// Most distinct (agent, environment, version) triples `config.metrics`
/// counts.
pub const MAX_TRACKED_VERSIONS: usize = 100_000;

/// A committed layer change, announced after the commit.
struct Committed {
    agent: String,
    env: Env,
    version: i64,
    actor: String,
    at: chrono::DateTime<Utc>,
}

impl ConfigManager {
    /// A manager on these connections.
    pub fn new(
        pool: PgPool,
        cache: ConfigCache,
        nats: async_nats::Client,
        settings: Settings,
        max_message_size: usize,
    ) -> Arc<ConfigManager> {
        Arc::new(ConfigManager {
            gets_served: Default::default(),
            versions_served: Default::default(),
            pool,
            cache,
            nats,
            settings,
            max_message_size,
        })
    }

    /// The largest message (request or reply) this process sends.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// The size limit of documents: the configured one, but never so large
    /// that a `config.get` reply carrying the document could not be sent.
    fn document_limit(&self) -> usize {
        self.settings
            .max_config_size
            .min(self.max_message_size.saturating_sub(REPLY_OVERHEAD))
    }

    /// The cache (the change-event listener updates it).
    pub fn cache(&self) -> &ConfigCache {
        &self.cache
    }

    /// `config.get`.
    pub async fn get(&self, req: GetRequest) -> Result<GetResponse, Error> {
        check_name("agent", &req.agent)?;
        let (agent, env) = (req.agent.as_str(), req.environment);
        let pool = &self.pool;
        let snapshot = self
            .cache
            .get_or_load(agent, env, || store::snapshot(pool, agent, env))
            .await?;
        let missing = || Error::not_found(format!("no configuration for agent {agent} in {env}"));
        let (doc, version, meta) = if req.raw {
            let layer = if env == Env::Base {
                &snapshot.base
            } else {
                &snapshot.layer
            };
            let layer = layer
                .as_ref()
                .filter(|l| l.document.is_some())
                .ok_or_else(missing)?;
            (
                layer.document.as_ref().ok_or_else(missing)?,
                layer.version,
                layer,
            )
        } else {
            let doc = snapshot.effective.as_ref().ok_or_else(missing)?;
            let newest = snapshot.newest().ok_or_else(missing)?;
            (doc, snapshot.version(), newest)
        };
        let config = match &req.pointer {
            Some(p) => document::get_pointer(doc, p)?.clone(),
            None => doc.clone(),
        };
        self.served(agent, env, version);
        Ok(GetResponse {
            agent: req.agent.clone(),
            environment: env,
            version,
            updated_at: meta.updated_at,
            updated_by: meta.updated_by.clone(),
            raw: req.raw,
            pointer: req.pointer,
            config,
        })
    }

    fn served(&self, agent: &str, env: Env, version: i64) {
        self.gets_served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut seen = self
            .versions_served
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() < MAX_TRACKED_VERSIONS {
            seen.insert((agent.to_owned(), env, version));
        }
    }

    /// `config.metrics`: this process's cache and serving counters since
    /// start, with the stored totals.
    pub async fn metrics(&self) -> Result<MetricsResponse, Error> {
        let (cache_hits, cache_misses) = self.cache.counts();
        let reads = cache_hits + cache_misses;
        let versions_served = self
            .versions_served
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len() as u64;
        let (agents, stored_versions): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM config_agents), (SELECT count(*) FROM config_versions)",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(MetricsResponse {
            cache_hits,
            cache_misses,
            cache_hit_rate_percent: if reads == 0 {
                0.0
            } else {
                (cache_hits as f64 * 1000.0 / reads as f64).round() / 10.0
            },
            gets_served: self.gets_served.load(std::sync::atomic::Ordering::Relaxed),
            versions_served,
            versions_served_capped: versions_served >= MAX_TRACKED_VERSIONS as u64,
            agents,
            stored_versions,
            cache_ttl_seconds: self.cache.ttl().as_secs(),
            shared_cache: self.cache.shared(),
        })
    }

    /// `config.set`.
    pub async fn set(&self, req: SetRequest) -> Result<WriteResponse, Error> {
        let actor = actor_or_default(req.actor)?;
        let (pointer, merge, value) = (req.pointer, req.merge, req.config);
        if pointer.is_some() && merge {
            return Err(Error::invalid_request(
                "use either pointer or merge, not both",
            ));
        }
        self.write_layer(
            &req.agent,
            req.environment,
            req.expected_version,
            &actor,
            "set",
            move |current| {
                let mut doc = current
                    .cloned()
                    .unwrap_or(Value::Object(serde_json::Map::new()));
                match pointer {
                    Some(p) => document::set_pointer(&mut doc, &p, value)?,
                    None if merge => json_patch::merge(&mut doc, &value),
                    None => doc = value,
                }
                Ok(Some(doc))
            },
        )
        .await
    }

    /// `config.delete`.
    pub async fn delete(&self, req: DeleteRequest) -> Result<WriteResponse, Error> {
        let actor = actor_or_default(req.actor)?;
        let (agent, env) = (req.agent.clone(), req.environment);
        let pointer = req.pointer;
        self.write_layer(
            &req.agent,
            env,
            req.expected_version,
            &actor,
            "delete",
            move |current| {
                let current = current
                    .ok_or_else(|| Error::not_found(format!("no {env} layer for agent {agent}")))?;
                match pointer {
                    Some(p) => {
                        let mut doc = current.clone();
                        document::remove_pointer(&mut doc, &p)?;
                        Ok(Some(doc))
                    }
                    None => Ok(None),
                }
            },
        )
        .await
    }

    /// `config.rollback`.
    pub async fn rollback(&self, req: RollbackRequest) -> Result<WriteResponse, Error> {
        let actor = actor_or_default(req.actor)?;
        check_name("agent", &req.agent)?;
        let old = store::version_document(&self.pool, &req.agent, req.environment, req.to_version)
            .await?
            .ok_or_else(|| {
                Error::not_found(format!(
                    "version {} of {} {} is not retained",
                    req.to_version, req.agent, req.environment
                ))
            })?;
        self.write_layer(
            &req.agent,
            req.environment,
            req.expected_version,
            &actor,
            "rollback",
            move |_| Ok(old),
        )
        .await
    }

    /// `config.template.apply`.
    pub async fn apply_template(&self, req: TemplateApplyRequest) -> Result<WriteResponse, Error> {
        let actor = actor_or_default(req.actor)?;
        check_name("template", &req.template)?;
        if req.vars.len() > MAX_TEMPLATE_VARS {
            return Err(Error::invalid_request(format!(
                "at most {MAX_TEMPLATE_VARS} vars"
            )));
        }
        let template = store::template(&self.pool, &req.template)
            .await?
            .ok_or_else(|| Error::not_found(format!("no template named {}", req.template)))?;
        let rendered = document::render_template(&template, &req.vars)?;
        self.write_layer(
            &req.agent,
            req.environment,
            req.expected_version,
            &actor,
            "template",
            move |_| Ok(Some(rendered)),
        )
        .await
    }

    /// The one write path of a single layer: lock the agent, check the
    /// expected version, compute the new document, validate every affected
    /// effective document, write version + audit, commit, announce.
    async fn write_layer(
        &self,
        agent: &str,
        env: Env,
        expected: Option<i64>,
        actor: &str,
        action: &str,
        compute: impl FnOnce(Option<&Value>) -> Result<Option<Value>, Error>,
    ) -> Result<WriteResponse, Error> {
        check_name("agent", agent)?;
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let row = store::lock_agent(&mut tx, agent).await?;
        let layers = store::layers(&mut tx, agent).await?;
        let current = layers.get(&env);
        let current_version = current.map_or(0, |l| l.version);
        if let Some(expected) = expected
            && expected != current_version
        {
            return Err(Error::conflict(format!(
                "{agent} {env} is at version {current_version}, not {expected}"
            ))
            .with_detail("expected_version", expected)
            .with_detail("current_version", current_version));
        }
        let current_doc = current.and_then(|l| l.document.as_ref());
        let new_doc = compute(current_doc)?;
        let now = Utc::now();
        let patch = document::diff(current_doc, new_doc.as_ref());
        if new_doc.as_ref() == current_doc {
            let meta = current;
            return Ok(WriteResponse {
                agent: agent.to_owned(),
                environment: env,
                version: current_version,
                previous_version: current_version,
                changed: false,
                patch,
                updated_at: meta.map_or(now, |l| l.updated_at),
                updated_by: meta.map_or_else(|| actor.to_owned(), |l| l.updated_by.clone()),
            });
        }
        let mut docs = layer_docs(&layers);
        docs.insert(env, new_doc.clone());
        let violations = self.validate_agent(row.schema.as_ref(), &docs, Some(env), None)?;
        if !violations.is_empty() {
            return Err(Error::validation(violations));
        }
        let version = store::next_version(&mut tx, agent).await?;
        let write = LayerWrite {
            agent,
            env,
            document: new_doc.as_ref(),
            version,
            from_version: current.map(|l| l.version),
            action,
            actor,
            at: now,
            patch: &patch,
        };
        store::write_layer(&mut tx, &write, self.settings.keep_versions).await?;
        tx.commit().await.map_err(db_err)?;
        self.announce(&[Committed {
            agent: agent.to_owned(),
            env,
            version,
            actor: actor.to_owned(),
            at: now,
        }])
        .await;
        Ok(WriteResponse {
            agent: agent.to_owned(),
            environment: env,
            version,
            previous_version: current_version,
            changed: true,
            patch,
            updated_at: now,
            updated_by: actor.to_owned(),
        })
    }

    /// Violations of the agent's effective documents: of `changed` only, or
    /// of every environment when `changed` is base or None. `prefix` (for
    /// imports) puts `/<agent>/<env>` before each path.
    fn validate_agent(
        &self,
        schema: Option<&Value>,
        docs: &BTreeMap<Env, Option<Value>>,
        changed: Option<Env>,
        prefix: Option<&str>,
    ) -> Result<Vec<Violation>, Error> {
        let validator = match schema {
            Some(s) => Some(document::compile_schema(s).map_err(|e| {
                Error::internal(format!("a stored schema does not compile: {}", e.message))
            })?),
            None => None,
        };
        let limit = self.document_limit();
        let base = docs.get(&Env::Base).and_then(Option::as_ref);
        let envs: Vec<Env> = match changed {
            Some(e) if e != Env::Base => vec![e],
            _ => Env::ALL.to_vec(),
        };
        let mut out = Vec::new();
        for env in envs {
            let layer = if env == Env::Base {
                None
            } else {
                docs.get(&env).and_then(Option::as_ref)
            };
            if env != Env::Base && layer.is_none() {
                continue; // its effective document is base, checked as base
            }
            let Some(effective) = document::effective(base, layer) else {
                continue;
            };
            let context = match (prefix, changed) {
                (Some(_), _) => None,
                (None, Some(c)) if c == env => None,
                _ => Some(format!("the effective {env} config")),
            };
            let mut found = Vec::new();
            if let Some(l) = layer
                && let Some(v) = document::size_violation(l, limit, &format!("the {env} layer"))
            {
                found.push(v);
            }
            if let Some(v) =
                document::size_violation(&effective, limit, &format!("the effective {env} config"))
            {
                found.push(v);
            }
            if let Some(validator) = &validator {
                found.extend(document::violations(
                    validator,
                    &effective,
                    context.as_deref(),
                ));
            }
            out.extend(found.into_iter().map(|v| match prefix {
                Some(agent) => {
                    let path = if v.path == "/" { String::new() } else { v.path };
                    Violation::new(format!("/{agent}/{env}{path}"), v.message)
                }
                None => v,
            }));
        }
        Ok(out)
    }

    /// Invalidates caches (Redis floor first), counts and publishes
    /// `config.changed.<agent>.<environment>` for each committed change.
    async fn announce(&self, changes: &[Committed]) {
        for c in changes {
            self.cache.committed(&c.agent, c.env, c.version).await;
            metrics::counter!("ymera_config_changes_total", "agent" => c.agent.clone(), "environment" => c.env.as_str())
                .increment(1);
            let event = ChangeEvent {
                agent: c.agent.clone(),
                environment: c.env,
                version: c.version,
                changed_by: c.actor.clone(),
                changed_at: c.at,
            };
            let Ok(body) = serde_json::to_vec(&event) else {
                continue;
            };
            if let Err(err) = self
                .nats
                .publish(change_subject(&c.agent, c.env), body.into())
                .await
            {
                tracing::warn!(error = %err, agent = %c.agent, "could not publish the change event");
            }
        }
        if let Err(err) = self.nats.flush().await {
            tracing::warn!(error = %err, "could not flush change events");
        }
    }

    /// `config.history`.
    pub async fn history(&self, req: HistoryRequest) -> Result<HistoryResponse, Error> {
        check_name("agent", &req.agent)?;
        let limit = req.limit.unwrap_or(50);
        if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
            return Err(Error::invalid_request(format!(
                "limit must be 1..={MAX_HISTORY_LIMIT}"
            )));
        }
        let (versions, audit) = store::history(
            &self.pool,
            &req.agent,
            req.environment,
            limit,
            req.documents,
        )
        .await?;
        Ok(HistoryResponse {
            agent: req.agent,
            environment: req.environment,
            versions,
            audit,
        })
    }

    /// `config.diff`.
    pub async fn diff(&self, req: DiffRequest) -> Result<DiffResponse, Error> {
        check_name("agent", &req.agent)?;
        let (agent, env) = (req.agent.as_str(), req.environment);
        let to_version = match req.to_version {
            Some(v) => v,
            None => store::current_version(&self.pool, agent, env)
                .await?
                .ok_or_else(|| Error::not_found(format!("no {env} layer for agent {agent}")))?,
        };
        let load = |v: i64| async move {
            store::version_document(&self.pool, agent, env, v)
                .await?
                .ok_or_else(|| {
                    Error::not_found(format!("version {v} of {agent} {env} is not retained"))
                })
        };
        let from = load(req.from_version).await?;
        let to = load(to_version).await?;
        Ok(DiffResponse {
            agent: req.agent.clone(),
            environment: env,
            from_version: req.from_version,
            to_version,
            patch: document::diff(from.as_ref(), to.as_ref()),
        })
    }

    /// `config.schema.set`: refuses a schema that any current effective
    /// config of the agent would violate.
    pub async fn set_schema(&self, req: SchemaSetRequest) -> Result<SchemaResponse, Error> {
        check_name("agent", &req.agent)?;
        let actor = actor_or_default(req.actor)?;
        let schema = (!req.schema.is_null()).then_some(&req.schema);
        if let Some(s) = schema {
            if let Some(v) =
                document::size_violation(s, self.settings.max_config_size, "the schema")
            {
                return Err(Error::validation(vec![v]));
            }
            document::compile_schema(s)?;
        }
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let row = store::lock_agent(&mut tx, &req.agent).await?;
        if let Some(expected) = req.expected_version
            && expected != row.schema_version
        {
            return Err(Error::conflict(format!(
                "the schema of {} is at version {}, not {expected}",
                req.agent, row.schema_version
            ))
            .with_detail("expected_version", expected)
            .with_detail("current_version", row.schema_version));
        }
        if row.schema.as_ref() == schema {
            return Ok(schema_response(&req.agent, &row));
        }
        let layers = store::layers(&mut tx, &req.agent).await?;
        let violations = self.validate_agent(schema, &layer_docs(&layers), None, None)?;
        if !violations.is_empty() {
            return Err(Error::validation(violations));
        }
        let now = Utc::now();
        let version = store::write_schema(&mut tx, &req.agent, &row, schema, &actor, now).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(SchemaResponse {
            agent: req.agent,
            schema: req.schema,
            version,
            updated_at: Some(now),
            updated_by: Some(actor),
        })
    }

    /// `config.schema.get`.
    pub async fn get_schema(&self, req: SchemaGetRequest) -> Result<SchemaResponse, Error> {
        check_name("agent", &req.agent)?;
        let row = store::schema(&self.pool, &req.agent)
            .await?
            .filter(|r| r.schema.is_some())
            .ok_or_else(|| Error::not_found(format!("agent {} has no schema", req.agent)))?;
        Ok(schema_response(&req.agent, &row))
    }

    /// `config.template.set`.
    pub async fn set_template(
        &self,
        req: TemplateSetRequest,
    ) -> Result<TemplateSetResponse, Error> {
        check_name("template", &req.name)?;
        let actor = actor_or_default(req.actor)?;
        if let Some(v) =
            document::size_violation(&req.template, self.settings.max_config_size, "the template")
        {
            return Err(Error::validation(vec![v]));
        }
        if req.description.as_ref().is_some_and(|d| d.len() > 4096) {
            return Err(Error::invalid_request(
                "description is longer than 4096 bytes",
            ));
        }
        let now = Utc::now();
        store::put_template(
            &self.pool,
            &req.name,
            &req.template,
            req.description.as_deref(),
            &actor,
            now,
        )
        .await?;
        Ok(TemplateSetResponse {
            name: req.name,
            variables: document::template_variables(&req.template)
                .into_iter()
                .collect(),
            updated_at: now,
        })
    }

    /// `config.export`.
    pub async fn export(&self, req: ExportRequest) -> Result<Bundle, Error> {
        let envs: Vec<Env> = if req.environment == Env::Base {
            vec![Env::Base]
        } else {
            vec![Env::Base, req.environment]
        };
        let agents = store::export(&self.pool, &envs).await?;
        let bundle = Bundle {
            format: BUNDLE_FORMAT.to_owned(),
            environment: Some(req.environment),
            exported_at: Some(Utc::now()),
            agents: agents
                .into_iter()
                .map(|(agent, (schema, layers))| BundleAgent {
                    agent,
                    schema,
                    layers,
                })
                .collect(),
        };
        let size = serde_json::to_vec(&bundle)
            .map(|b| b.len())
            .unwrap_or(usize::MAX);
        if size > self.max_message_size {
            return Err(Error::payload_too_large(
                "the export bundle",
                size,
                self.max_message_size,
            ));
        }
        Ok(bundle)
    }

    /// `config.import`: validates the whole bundle (with what is stored),
    /// then applies it in one transaction, or nothing.
    pub async fn import(&self, req: ImportRequest) -> Result<ImportResponse, Error> {
        let actor = actor_or_default(req.actor)?;
        let bundle = req.bundle;
        check_bundle(&bundle)?;
        let mut entries: Vec<&BundleAgent> = bundle.agents.iter().collect();
        entries.sort_by(|a, b| a.agent.cmp(&b.agent)); // lock order: no deadlocks
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let mut violations = Vec::new();
        let mut plans = Vec::new();
        for entry in entries {
            let plan = self.plan_agent(&mut tx, entry, &mut violations).await?;
            plans.push(plan);
        }
        if !violations.is_empty() {
            return Err(Error::validation(violations));
        }
        let unchanged = plans.iter().map(|p| p.unchanged).sum();
        let mut changes = Vec::new();
        let mut committed = Vec::new();
        let now = Utc::now();
        for plan in &plans {
            if let Some((old, schema)) = &plan.schema {
                let to = if req.dry_run {
                    None
                } else {
                    Some(
                        store::write_schema(
                            &mut tx,
                            &plan.agent,
                            old,
                            schema.as_ref(),
                            &actor,
                            now,
                        )
                        .await?,
                    )
                };
                changes.push(ImportChange {
                    agent: plan.agent.clone(),
                    target: "schema".into(),
                    from_version: old.schema_version,
                    to_version: to,
                });
            }
            for (env, old, new) in &plan.layers {
                let from_version = old.as_ref().map_or(0, |l| l.version);
                let mut to_version = None;
                if !req.dry_run {
                    let version = store::next_version(&mut tx, &plan.agent).await?;
                    let old_doc = old.as_ref().and_then(|l| l.document.as_ref());
                    let patch = document::diff(old_doc, new.as_ref());
                    let write = LayerWrite {
                        agent: &plan.agent,
                        env: *env,
                        document: new.as_ref(),
                        version,
                        from_version: old.as_ref().map(|l| l.version),
                        action: "import",
                        actor: &actor,
                        at: now,
                        patch: &patch,
                    };
                    store::write_layer(&mut tx, &write, self.settings.keep_versions).await?;
                    committed.push(Committed {
                        agent: plan.agent.clone(),
                        env: *env,
                        version,
                        actor: actor.clone(),
                        at: now,
                    });
                    to_version = Some(version);
                }
                changes.push(ImportChange {
                    agent: plan.agent.clone(),
                    target: env.as_str().to_owned(),
                    from_version,
                    to_version,
                });
            }
        }
        if req.dry_run {
            tx.rollback().await.map_err(db_err)?;
        } else {
            tx.commit().await.map_err(db_err)?;
            self.announce(&committed).await;
        }
        Ok(ImportResponse {
            dry_run: req.dry_run,
            applied: !req.dry_run,
            changes,
            unchanged,
        })
    }

    /// Locks one agent, validates its state after the import and lists what
    /// would change.
    async fn plan_agent(
        &self,
        tx: &mut PgConnection,
        entry: &BundleAgent,
        violations: &mut Vec<Violation>,
    ) -> Result<AgentPlan, Error> {
        let row = store::lock_agent(tx, &entry.agent).await?;
        let layers = store::layers(tx, &entry.agent).await?;
        let mut plan = AgentPlan {
            agent: entry.agent.clone(),
            schema: None,
            layers: Vec::new(),
            unchanged: 0,
        };
        let schema = match &entry.schema {
            Some(s) => {
                let new = (!s.is_null()).then(|| s.clone());
                if let Some(s) = &new
                    && let Err(err) = document::compile_schema(s)
                {
                    violations.push(Violation::new(
                        format!("/{}/schema", entry.agent),
                        err.message,
                    ));
                    return Ok(plan);
                }
                if new == row.schema {
                    plan.unchanged += 1;
                } else {
                    plan.schema = Some((row.clone(), new.clone()));
                }
                new
            }
            None => row.schema.clone(),
        };
        let mut docs = layer_docs(&layers);
        for (env, doc) in &entry.layers {
            let new = (!doc.is_null()).then(|| doc.clone());
            let old = layers.get(env);
            if old.and_then(|l| l.document.as_ref()) == new.as_ref() {
                plan.unchanged += 1;
            } else {
                plan.layers.push((*env, old.cloned(), new.clone()));
            }
            docs.insert(*env, new);
        }
        violations.extend(self.validate_agent(schema.as_ref(), &docs, None, Some(&entry.agent))?);
        Ok(plan)
    }
}

/// What an import does to one agent.
struct AgentPlan {
    agent: String,
    /// (row before, new schema) when the schema changes.
    schema: Option<(store::AgentRow, Option<Value>)>,
    /// (layer, before, new document) for each changed layer.
    layers: Vec<(Env, Option<Layer>, Option<Value>)>,
    unchanged: usize,
}

fn layer_docs(layers: &BTreeMap<Env, Layer>) -> BTreeMap<Env, Option<Value>> {
    layers
        .iter()
        .map(|(e, l)| (*e, l.document.clone()))
        .collect()
}

fn schema_response(agent: &str, row: &store::AgentRow) -> SchemaResponse {
    SchemaResponse {
        agent: agent.to_owned(),
        schema: row.schema.clone().unwrap_or(Value::Null),
        version: row.schema_version,
        updated_at: row.schema_updated_at,
        updated_by: row.schema_updated_by.clone(),
    }
}

fn check_bundle(bundle: &Bundle) -> Result<(), Error> {
    if bundle.format != BUNDLE_FORMAT {
        return Err(Error::invalid_request(format!(
            "bundle format {:?} is not {BUNDLE_FORMAT}",
            bundle.format
        )));
    }
    if bundle.agents.len() > MAX_BUNDLE_AGENTS {
        return Err(Error::invalid_request(format!(
            "a bundle holds at most {MAX_BUNDLE_AGENTS} agents"
        )));
    }
    let mut seen = BTreeSet::new();
    for entry in &bundle.agents {
        check_name("agent", &entry.agent)?;
        if !seen.insert(entry.agent.as_str()) {
            return Err(Error::invalid_request(format!(
                "agent {} appears twice in the bundle",
                entry.agent
            )));
        }
    }
    Ok(())
}
