-- Drafting agent (crates/ymera-drafting): extends the seed's drafts table and
-- adds revisions, lifecycle transitions, anchored comments and templates.

ALTER TABLE drafts ADD COLUMN IF NOT EXISTS archived_at TIMESTAMPTZ;
CREATE INDEX IF NOT EXISTS idx_drafts_tags ON drafts USING GIN (tags);
CREATE INDEX IF NOT EXISTS idx_drafts_updated_id ON drafts (updated_at DESC, draft_id DESC);

-- One row per committed change; revision = the draft's version after it.
CREATE TABLE IF NOT EXISTS draft_revisions (
    draft_id    VARCHAR(255) NOT NULL REFERENCES drafts (draft_id) ON DELETE CASCADE,
    revision    INTEGER      NOT NULL,
    author_id   VARCHAR(255) NOT NULL,
    created_at  TIMESTAMPTZ  NOT NULL,
    source      VARCHAR(50)  NOT NULL,
    title       VARCHAR(500) NOT NULL,
    content     TEXT         NOT NULL,
    word_count  INTEGER      NOT NULL,
    word_delta  INTEGER      NOT NULL,
    diff        TEXT         NOT NULL,
    message     TEXT,
    PRIMARY KEY (draft_id, revision)
);

CREATE TABLE IF NOT EXISTS draft_transitions (
    id          BIGSERIAL    PRIMARY KEY,
    draft_id    VARCHAR(255) NOT NULL REFERENCES drafts (draft_id) ON DELETE CASCADE,
    from_status VARCHAR(50)  NOT NULL,
    to_status   VARCHAR(50)  NOT NULL,
    actor       VARCHAR(255) NOT NULL,
    note        TEXT,
    created_at  TIMESTAMPTZ  NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_draft_transitions_draft ON draft_transitions (draft_id, id);

-- Comments anchored to a character range of the content; the range is
-- remapped through every committed change (see README "Comments").
CREATE TABLE IF NOT EXISTS draft_comments (
    comment_id   VARCHAR(255) PRIMARY KEY,
    draft_id     VARCHAR(255) NOT NULL REFERENCES drafts (draft_id) ON DELETE CASCADE,
    author_id    VARCHAR(255) NOT NULL,
    body         TEXT         NOT NULL,
    anchor_start INTEGER      NOT NULL,
    anchor_end   INTEGER      NOT NULL,
    quote        TEXT         NOT NULL,
    status       VARCHAR(20)  NOT NULL,
    created_at   TIMESTAMPTZ  NOT NULL,
    updated_at   TIMESTAMPTZ  NOT NULL,
    resolved_by  VARCHAR(255)
);
CREATE INDEX IF NOT EXISTS idx_draft_comments_draft ON draft_comments (draft_id, created_at);

CREATE TABLE IF NOT EXISTS draft_templates (
    template_id   VARCHAR(255) PRIMARY KEY,
    name          VARCHAR(500) NOT NULL,
    document_type VARCHAR(100) NOT NULL,
    description   TEXT,
    content       TEXT         NOT NULL,
    placeholders  JSONB        NOT NULL,
    created_at    TIMESTAMPTZ  NOT NULL,
    updated_at    TIMESTAMPTZ  NOT NULL
);
