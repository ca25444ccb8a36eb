-- Changes made to api_keys and revoked_tokens by plain SQL (an operator's
-- UPDATE, a restore script) reach every security replica's in-memory key
-- table at commit, like the service's own statements, instead of at the
-- next full reload (60 s). The payloads are the ones the service sends
-- itself (the key id; `jti:<exp unix s>:<jti>`), so PostgreSQL folds a
-- trigger's notification into the statement's own when both are sent in
-- one transaction. usage_count / last_used updates do not notify.

CREATE OR REPLACE FUNCTION ymera_api_keys_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('ymera_api_keys', OLD.key_id);
    ELSE
        PERFORM pg_notify('ymera_api_keys', NEW.key_id);
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS api_keys_notify ON api_keys;
CREATE TRIGGER api_keys_notify
    AFTER INSERT OR DELETE
       OR UPDATE OF revoked_at, expires_at, secret_hash, permissions, owner, tenant
    ON api_keys
    FOR EACH ROW EXECUTE FUNCTION ymera_api_keys_notify();

CREATE OR REPLACE FUNCTION ymera_revoked_tokens_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ymera_api_keys',
        'jti:' || floor(extract(epoch FROM NEW.expires_at))::bigint || ':' || NEW.jti);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS revoked_tokens_notify ON revoked_tokens;
CREATE TRIGGER revoked_tokens_notify
    AFTER INSERT OR UPDATE OF expires_at
    ON revoked_tokens
    FOR EACH ROW EXECUTE FUNCTION ymera_revoked_tokens_notify();
