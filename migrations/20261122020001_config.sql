-- Config manager (crates/ymera-config): per-agent layers per environment,
-- append-only versions (the last N kept per layer), an audit trail with the
-- change as a JSON Patch, schemas and templates.

-- One row per agent: the revision counter every layer version is drawn from
-- (so the effective version, max(base, environment), only ever grows) and the
-- agent's JSON Schema. Writers lock this row, which serialises an agent's writes.
CREATE TABLE IF NOT EXISTS config_agents (
    agent             TEXT        PRIMARY KEY,
    revision          BIGINT      NOT NULL DEFAULT 0,
    schema            JSONB,
    schema_version    BIGINT      NOT NULL DEFAULT 0,
    schema_updated_at TIMESTAMPTZ,
    schema_updated_by TEXT
);

-- The current document of each (agent, environment) layer; document NULL
-- means the layer was deleted (its version still counts).
CREATE TABLE IF NOT EXISTS config_layers (
    agent       TEXT        NOT NULL,
    environment TEXT        NOT NULL,
    document    JSONB,
    version     BIGINT      NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    updated_by  TEXT        NOT NULL,
    PRIMARY KEY (agent, environment)
);

CREATE TABLE IF NOT EXISTS config_versions (
    agent       TEXT        NOT NULL,
    environment TEXT        NOT NULL,
    version     BIGINT      NOT NULL,
    document    JSONB,
    action      TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    created_by  TEXT        NOT NULL,
    PRIMARY KEY (agent, environment, version)
);

CREATE TABLE IF NOT EXISTS config_audit (
    id           BIGSERIAL   PRIMARY KEY,
    agent        TEXT        NOT NULL,
    environment  TEXT        NOT NULL,
    action       TEXT        NOT NULL,
    from_version BIGINT,
    to_version   BIGINT,
    actor        TEXT        NOT NULL,
    at           TIMESTAMPTZ NOT NULL,
    patch        JSONB       NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_config_audit_agent_env ON config_audit (agent, environment, id);

CREATE TABLE IF NOT EXISTS config_templates (
    name        TEXT        PRIMARY KEY,
    template    JSONB       NOT NULL,
    description TEXT,
    updated_at  TIMESTAMPTZ NOT NULL,
    updated_by  TEXT        NOT NULL
);
