//! PostgreSQL access: layers, versions, audit, schemas, templates.
//!
//! Writers first lock the agent's row in `config_agents` (an upsert), so all
//! writes of one agent are serialised and see each other's commits; layer
//! versions come from that row's revision counter.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use ymera_core::Error;

use crate::cache::{Layer, Snapshot};
use crate::model::{AuditEntry, Env, VersionEntry};

/// Maps a database failure to the platform error: 503 when PostgreSQL is
/// unreachable or what answers on its address does not speak its protocol
/// (e.g. the server died and the port was taken), 500 otherwise (the cause
/// is logged, not sent).
pub fn db_err(err: sqlx::Error) -> Error {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => {
            tracing::warn!(error = %err, "PostgreSQL unavailable");
            Error::dependency_down("postgres")
        }
        other => Error::internal(other),
    }
}

/// The locked `config_agents` row.
#[derive(Debug, Clone)]
pub struct AgentRow {
    /// The schema, if any.
    pub schema: Option<Value>,
    /// Its version (0: never set).
    pub schema_version: i64,
    /// When it was set.
    pub schema_updated_at: Option<DateTime<Utc>>,
    /// Who set it.
    pub schema_updated_by: Option<String>,
}

type AgentTuple = (Option<Value>, i64, Option<DateTime<Utc>>, Option<String>);

/// Creates the agent's row if needed and locks it until the transaction ends.
pub async fn lock_agent(conn: &mut PgConnection, agent: &str) -> Result<AgentRow, Error> {
    let (schema, schema_version, schema_updated_at, schema_updated_by): AgentTuple =
        sqlx::query_as(
            "INSERT INTO config_agents (agent) VALUES ($1)
         ON CONFLICT (agent) DO UPDATE SET agent = EXCLUDED.agent
         RETURNING schema, schema_version, schema_updated_at, schema_updated_by",
        )
        .bind(agent)
        .fetch_one(conn)
        .await
        .map_err(db_err)?;
    Ok(AgentRow {
        schema,
        schema_version,
        schema_updated_at,
        schema_updated_by,
    })
}

/// The agent's schema row without locking (404 when it has no schema).
pub async fn schema(pool: &PgPool, agent: &str) -> Result<Option<AgentRow>, Error> {
    let row: Option<AgentTuple> = sqlx::query_as(
        "SELECT schema, schema_version, schema_updated_at, schema_updated_by
         FROM config_agents WHERE agent = $1",
    )
    .bind(agent)
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    Ok(row.map(
        |(schema, schema_version, schema_updated_at, schema_updated_by)| AgentRow {
            schema,
            schema_version,
            schema_updated_at,
            schema_updated_by,
        },
    ))
}

type LayerTuple = (String, Option<Value>, i64, DateTime<Utc>, String);

fn to_layers(rows: Vec<LayerTuple>) -> Result<BTreeMap<Env, Layer>, Error> {
    rows.into_iter()
        .map(|(env, document, version, updated_at, updated_by)| {
            let env = Env::parse(&env)
                .map_err(|_| Error::internal(format!("stored environment {env:?}")))?;
            Ok((
                env,
                Layer {
                    document,
                    version,
                    updated_at,
                    updated_by,
                },
            ))
        })
        .collect()
}

/// Every layer of the agent (deleted ones included, with `document: None`).
pub async fn layers(conn: &mut PgConnection, agent: &str) -> Result<BTreeMap<Env, Layer>, Error> {
    let rows: Vec<LayerTuple> = sqlx::query_as(
        "SELECT environment, document, version, updated_at, updated_by
         FROM config_layers WHERE agent = $1",
    )
    .bind(agent)
    .fetch_all(conn)
    .await
    .map_err(db_err)?;
    to_layers(rows)
}

/// The snapshot of (agent, env) for reads: base and environment layer.
pub async fn snapshot(pool: &PgPool, agent: &str, env: Env) -> Result<Snapshot, Error> {
    let rows: Vec<LayerTuple> = sqlx::query_as(
        "SELECT environment, document, version, updated_at, updated_by
         FROM config_layers WHERE agent = $1 AND environment IN ('base', $2)",
    )
    .bind(agent)
    .bind(env.as_str())
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    let mut layers = to_layers(rows)?;
    let base = layers.remove(&Env::Base);
    let layer = if env == Env::Base {
        None
    } else {
        layers.remove(&env)
    };
    Ok(Snapshot::new(base, layer))
}

/// The next version number of the agent.
pub async fn next_version(conn: &mut PgConnection, agent: &str) -> Result<i64, Error> {
    sqlx::query_scalar(
        "UPDATE config_agents SET revision = revision + 1 WHERE agent = $1 RETURNING revision",
    )
    .bind(agent)
    .fetch_one(conn)
    .await
    .map_err(db_err)
}

/// One committed layer change.
#[derive(Debug)]
pub struct LayerWrite<'a> {
    /// The agent.
    pub agent: &'a str,
    /// The layer.
    pub env: Env,
    /// The new document (`None`: the layer is deleted).
    pub document: Option<&'a Value>,
    /// The new version.
    pub version: i64,
    /// The version before (None: no layer).
    pub from_version: Option<i64>,
    /// `set`, `delete`, `rollback`, `template`, `import`.
    pub action: &'a str,
    /// Who.
    pub actor: &'a str,
    /// When.
    pub at: DateTime<Utc>,
    /// The change as a JSON Patch.
    pub patch: &'a Value,
}

/// Writes the layer, its version row and its audit row, and prunes versions
/// beyond the newest `keep`.
pub async fn write_layer(
    conn: &mut PgConnection,
    w: &LayerWrite<'_>,
    keep: i64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO config_layers (agent, environment, document, version, updated_at, updated_by)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (agent, environment) DO UPDATE SET document = EXCLUDED.document,
           version = EXCLUDED.version, updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by",
    )
    .bind(w.agent)
    .bind(w.env.as_str())
    .bind(w.document)
    .bind(w.version)
    .bind(w.at)
    .bind(w.actor)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    sqlx::query(
        "INSERT INTO config_versions (agent, environment, version, document, action, created_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(w.agent)
    .bind(w.env.as_str())
    .bind(w.version)
    .bind(w.document)
    .bind(w.action)
    .bind(w.at)
    .bind(w.actor)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    audit(
        conn,
        w.agent,
        w.env.as_str(),
        w.action,
        w.from_version,
        Some(w.version),
        w.actor,
        w.at,
        w.patch,
    )
    .await?;
    mirror_seed_table(conn, w).await?;
    sqlx::query(
        "DELETE FROM config_versions WHERE agent = $1 AND environment = $2 AND version < (
           SELECT min(version) FROM (
             SELECT version FROM config_versions WHERE agent = $1 AND environment = $2
             ORDER BY version DESC LIMIT $3) AS kept)",
    )
    .bind(w.agent)
    .bind(w.env.as_str())
    .bind(keep)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Keeps the seed deployment guide's `agent_configurations` row of the agent
/// current: `config_data` maps each environment to its layer document.
async fn mirror_seed_table(conn: &mut PgConnection, w: &LayerWrite<'_>) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO agent_configurations (agent_name, config_data, updated_at, updated_by)
         SELECT $1, COALESCE(jsonb_object_agg(environment, document)
                               FILTER (WHERE document IS NOT NULL), '{}'::jsonb), $2, $3
         FROM config_layers WHERE agent = $1
         ON CONFLICT (agent_name) DO UPDATE SET config_data = EXCLUDED.config_data,
           updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by",
    )
    .bind(w.agent)
    .bind(w.at)
    .bind(w.actor)
    .execute(conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Appends an audit row.
#[allow(clippy::too_many_arguments)]
pub async fn audit(
    conn: &mut PgConnection,
    agent: &str,
    environment: &str,
    action: &str,
    from_version: Option<i64>,
    to_version: Option<i64>,
    actor: &str,
    at: DateTime<Utc>,
    patch: &Value,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO config_audit (agent, environment, action, from_version, to_version, actor, at, patch)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(agent)
    .bind(environment)
    .bind(action)
    .bind(from_version)
    .bind(to_version)
    .bind(actor)
    .bind(at)
    .bind(patch)
    .execute(conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Replaces the agent's schema (None removes it) and audits it as
/// environment `*`; returns the new schema version.
pub async fn write_schema(
    conn: &mut PgConnection,
    agent: &str,
    old: &AgentRow,
    schema: Option<&Value>,
    actor: &str,
    at: DateTime<Utc>,
) -> Result<i64, Error> {
    let version: i64 = sqlx::query_scalar(
        "UPDATE config_agents SET schema = $2, schema_version = schema_version + 1,
           schema_updated_at = $3, schema_updated_by = $4
         WHERE agent = $1 RETURNING schema_version",
    )
    .bind(agent)
    .bind(schema)
    .bind(at)
    .bind(actor)
    .fetch_one(&mut *conn)
    .await
    .map_err(db_err)?;
    let patch = crate::document::diff(old.schema.as_ref(), schema);
    let from = (old.schema_version > 0).then_some(old.schema_version);
    audit(
        conn,
        agent,
        "*",
        "schema.set",
        from,
        Some(version),
        actor,
        at,
        &patch,
    )
    .await?;
    Ok(version)
}

/// The document of a retained version: `None` when not retained,
/// `Some(None)` when that version deleted the layer.
pub async fn version_document(
    pool: &PgPool,
    agent: &str,
    env: Env,
    version: i64,
) -> Result<Option<Option<Value>>, Error> {
    let row: Option<(Option<Value>,)> = sqlx::query_as(
        "SELECT document FROM config_versions WHERE agent = $1 AND environment = $2 AND version = $3",
    )
    .bind(agent)
    .bind(env.as_str())
    .bind(version)
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    Ok(row.map(|(d,)| d))
}

/// The current version of a layer (None: no layer).
pub async fn current_version(pool: &PgPool, agent: &str, env: Env) -> Result<Option<i64>, Error> {
    sqlx::query_scalar("SELECT version FROM config_layers WHERE agent = $1 AND environment = $2")
        .bind(agent)
        .bind(env.as_str())
        .fetch_optional(pool)
        .await
        .map_err(db_err)
}

type VersionTuple = (i64, String, DateTime<Utc>, String, Option<Value>);
type AuditTuple = (
    i64,
    String,
    String,
    Option<i64>,
    Option<i64>,
    String,
    DateTime<Utc>,
    Value,
);

/// Retained versions and audit rows of a layer, newest first.
pub async fn history(
    pool: &PgPool,
    agent: &str,
    env: Env,
    limit: i64,
    documents: bool,
) -> Result<(Vec<VersionEntry>, Vec<AuditEntry>), Error> {
    let versions: Vec<VersionTuple> = sqlx::query_as(
        "SELECT version, action, created_at, created_by, document FROM config_versions
         WHERE agent = $1 AND environment = $2 ORDER BY version DESC LIMIT $3",
    )
    .bind(agent)
    .bind(env.as_str())
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    let audit: Vec<AuditTuple> = sqlx::query_as(
        "SELECT id, environment, action, from_version, to_version, actor, at, patch FROM config_audit
         WHERE agent = $1 AND environment IN ($2, '*') ORDER BY id DESC LIMIT $3",
    )
    .bind(agent)
    .bind(env.as_str())
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    let versions = versions
        .into_iter()
        .map(
            |(version, action, created_at, created_by, document)| VersionEntry {
                version,
                action,
                created_at,
                created_by,
                deleted: document.is_none(),
                config: if documents { document } else { None },
            },
        )
        .collect();
    let audit = audit
        .into_iter()
        .map(
            |(id, environment, action, from_version, to_version, actor, at, patch)| AuditEntry {
                id,
                environment,
                action,
                from_version,
                to_version,
                actor,
                at,
                patch,
            },
        )
        .collect();
    Ok((versions, audit))
}

/// Stores a template.
pub async fn put_template(
    pool: &PgPool,
    name: &str,
    template: &Value,
    description: Option<&str>,
    actor: &str,
    at: DateTime<Utc>,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO config_templates (name, template, description, updated_at, updated_by)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (name) DO UPDATE SET template = EXCLUDED.template,
           description = EXCLUDED.description, updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by",
    )
    .bind(name)
    .bind(template)
    .bind(description)
    .bind(at)
    .bind(actor)
    .execute(pool)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// A template by name.
pub async fn template(pool: &PgPool, name: &str) -> Result<Option<Value>, Error> {
    sqlx::query_scalar("SELECT template FROM config_templates WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
        .map_err(db_err)
}

/// For export: every agent's schema, and its layers in `envs`.
pub async fn export(
    pool: &PgPool,
    envs: &[Env],
) -> Result<BTreeMap<String, (Option<Value>, BTreeMap<Env, Value>)>, Error> {
    let agents: Vec<(String, Option<Value>)> =
        sqlx::query_as("SELECT agent, schema FROM config_agents ORDER BY agent")
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
    let names: Vec<&str> = envs.iter().map(|e| e.as_str()).collect();
    let layers: Vec<(String, String, Value)> = sqlx::query_as(
        "SELECT agent, environment, document FROM config_layers
         WHERE environment = ANY($1) AND document IS NOT NULL",
    )
    .bind(&names)
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    let mut out: BTreeMap<String, (Option<Value>, BTreeMap<Env, Value>)> = agents
        .into_iter()
        .map(|(agent, schema)| (agent, (schema, BTreeMap::new())))
        .collect();
    for (agent, env, document) in layers {
        let env =
            Env::parse(&env).map_err(|_| Error::internal(format!("stored environment {env:?}")))?;
        out.entry(agent).or_default().1.insert(env, document);
    }
    out.retain(|_, (schema, layers)| schema.is_some() || !layers.is_empty());
    Ok(out)
}
