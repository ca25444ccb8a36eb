-- The seed deployment guide's tables (DESIGN §6), with timezone-aware timestamps
-- and the guide's inline INDEX clauses written as CREATE INDEX.

CREATE TABLE IF NOT EXISTS message_history (
    message_id   VARCHAR(255) PRIMARY KEY,
    type         VARCHAR(50)  NOT NULL,
    sender       VARCHAR(255) NOT NULL,
    recipients   JSONB        NOT NULL,
    subject      VARCHAR(500) NOT NULL,
    payload      JSONB        NOT NULL,
    status       VARCHAR(50)  NOT NULL,
    created_at   TIMESTAMPTZ  NOT NULL,
    metadata     JSONB
);
CREATE INDEX IF NOT EXISTS idx_message_history_sender ON message_history (sender);
CREATE INDEX IF NOT EXISTS idx_message_history_created_at ON message_history (created_at);
CREATE INDEX IF NOT EXISTS idx_message_history_status ON message_history (status);

CREATE TABLE IF NOT EXISTS conversation_archive (
    conversation_id VARCHAR(255) PRIMARY KEY,
    participants    JSONB        NOT NULL,
    topic           VARCHAR(500),
    message_count   INTEGER      NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ  NOT NULL,
    last_activity   TIMESTAMPTZ  NOT NULL,
    metadata        JSONB
);
CREATE INDEX IF NOT EXISTS idx_conversation_archive_last_activity ON conversation_archive (last_activity);

CREATE TABLE IF NOT EXISTS agent_configurations (
    agent_name  VARCHAR(255) PRIMARY KEY,
    config_data JSONB        NOT NULL,
    updated_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_by  VARCHAR(255)
);
CREATE INDEX IF NOT EXISTS idx_agent_configurations_updated_at ON agent_configurations (updated_at);

CREATE TABLE IF NOT EXISTS drafts (
    draft_id         VARCHAR(255) PRIMARY KEY,
    title            VARCHAR(500) NOT NULL,
    document_type    VARCHAR(100) NOT NULL,
    content          TEXT,
    template_id      VARCHAR(255),
    author_id        VARCHAR(255) NOT NULL,
    status           VARCHAR(50)  NOT NULL,
    version          INTEGER      NOT NULL DEFAULT 1,
    tone             VARCHAR(50),
    target_audience  VARCHAR(255),
    created_at       TIMESTAMPTZ  NOT NULL,
    updated_at       TIMESTAMPTZ  NOT NULL,
    metadata         JSONB,
    collaborators    JSONB,
    comments         JSONB,
    revision_history JSONB,
    tags             JSONB,
    word_count       INTEGER      NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS idx_drafts_author_id ON drafts (author_id);
CREATE INDEX IF NOT EXISTS idx_drafts_status ON drafts (status);
CREATE INDEX IF NOT EXISTS idx_drafts_updated_at ON drafts (updated_at);
