-- Security service: API keys (only an HMAC of the secret is stored), Ed25519
-- signing keys (private halves encrypted with YMERA_MASTER_KEY), the JWT
-- deny-list (when Redis is absent) and the audit trail.

CREATE TABLE IF NOT EXISTS api_keys (
    key_id       TEXT PRIMARY KEY,
    secret_hash  BYTEA NOT NULL,
    owner        TEXT NOT NULL,
    tenant       TEXT NOT NULL,
    permissions  TEXT[] NOT NULL DEFAULT '{}',
    description  TEXT,
    created_by   TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ,
    last_used    TIMESTAMPTZ,
    usage_count  BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS idx_api_keys_tenant ON api_keys (tenant);
CREATE INDEX IF NOT EXISTS idx_api_keys_last_used ON api_keys (last_used);

CREATE TABLE IF NOT EXISTS signing_keys (
    kid                 TEXT PRIMARY KEY,
    algorithm           TEXT NOT NULL DEFAULT 'EdDSA',
    public_key          BYTEA NOT NULL,
    private_key_sealed  BYTEA NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- no new tokens are signed with the key after this time
    retire_at           TIMESTAMPTZ NOT NULL,
    -- the key stops verifying (and leaves the JWKS) after this time
    expires_at          TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS revoked_tokens (
    jti         TEXT PRIMARY KEY,
    expires_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_revoked_tokens_expires ON revoked_tokens (expires_at);

CREATE TABLE IF NOT EXISTS security_events (
    id          UUID PRIMARY KEY,
    event_type  TEXT NOT NULL,
    principal   TEXT,
    tenant      TEXT,
    key_id      TEXT,
    details     JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_security_events_created ON security_events (created_at);
CREATE INDEX IF NOT EXISTS idx_security_events_type ON security_events (event_type, created_at);

-- Development only: a generated pepper / master key reused across restarts
-- when YMERA_API_KEY_PEPPER / YMERA_MASTER_KEY are unset (refused outside
-- ENVIRONMENT=development).
CREATE TABLE IF NOT EXISTS security_dev_secrets (
    name        TEXT PRIMARY KEY,
    value       BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
