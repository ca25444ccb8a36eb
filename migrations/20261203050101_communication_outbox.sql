-- Communication agent: the send outbox. When JetStream cannot acknowledge a
-- copy within COMM_PUBLISH_TIMEOUT_MS (a YMERA_MESSAGES leader election after
-- a nats-server died, the agent's own NATS connection reconnecting), the
-- message is stored here in one transaction and `communication.send` answers
-- `accepted`; the relay of every communication replica publishes the pending
-- copies (same Nats-Msg-Id `<id>.<recipient>`, so JetStream drops a copy it
-- already holds) and deletes the row once every copy is acknowledged.
-- (crates/ymera-communication/src/outbox.rs, README "The send outbox")
CREATE TABLE IF NOT EXISTS message_outbox (
    message_id      VARCHAR(255) PRIMARY KEY,
    body            BYTEA        NOT NULL,             -- the envelope exactly as published
    recipients      TEXT[]       NOT NULL,             -- copies not yet acknowledged by JetStream
    accepted_at     TIMESTAMPTZ  NOT NULL,             -- the Ymera-Accepted-At header of every copy
    created_at      TIMESTAMPTZ  NOT NULL DEFAULT now(),
    attempts        INTEGER      NOT NULL DEFAULT 0,   -- relay passes that left copies pending
    next_attempt_at TIMESTAMPTZ  NOT NULL DEFAULT now(),
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS idx_message_outbox_due ON message_outbox (next_attempt_at, created_at);
