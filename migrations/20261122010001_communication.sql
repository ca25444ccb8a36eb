-- Communication agent: delivery state per (message, recipient), extra
-- envelope columns on message_history, and the retention archive.

ALTER TABLE message_history ADD COLUMN IF NOT EXISTS conversation_id VARCHAR(255);
ALTER TABLE message_history ADD COLUMN IF NOT EXISTS correlation_id  VARCHAR(255);
ALTER TABLE message_history ADD COLUMN IF NOT EXISTS priority        VARCHAR(20);
ALTER TABLE message_history ADD COLUMN IF NOT EXISTS expires_at      TIMESTAMPTZ;
CREATE INDEX IF NOT EXISTS idx_message_history_created_id ON message_history (created_at, message_id);
CREATE INDEX IF NOT EXISTS idx_message_history_conversation ON message_history (conversation_id, created_at);
CREATE INDEX IF NOT EXISTS idx_message_history_recipients ON message_history USING GIN (recipients jsonb_path_ops);

CREATE TABLE IF NOT EXISTS message_deliveries (
    message_id       VARCHAR(255) NOT NULL,
    recipient        VARCHAR(64)  NOT NULL,
    state            VARCHAR(20)  NOT NULL,
    attempts         INTEGER      NOT NULL DEFAULT 0,
    accepted_at      TIMESTAMPTZ  NOT NULL,
    first_attempt_at TIMESTAMPTZ,
    last_attempt_at  TIMESTAMPTZ,
    last_error       TEXT,
    delivered_at     TIMESTAMPTZ,
    latency_ms       DOUBLE PRECISION,
    updated_at       TIMESTAMPTZ  NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, recipient)
);
CREATE INDEX IF NOT EXISTS idx_message_deliveries_recipient_state ON message_deliveries (recipient, state);

CREATE TABLE IF NOT EXISTS message_history_archive (LIKE message_history INCLUDING ALL);
ALTER TABLE message_history_archive ADD COLUMN IF NOT EXISTS archived_at TIMESTAMPTZ NOT NULL DEFAULT now();
