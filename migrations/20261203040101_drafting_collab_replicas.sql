-- Drafting agent (crates/ymera-drafting): collaboration sessions shared by
-- every drafting replica. A session is the yrs document as of `base_seq`
-- (the last commit) plus the updates appended after it; any replica
-- rebuilds it from these rows, so a session outlives the process that
-- opened it (README "Collaboration across replicas").

CREATE TABLE IF NOT EXISTS draft_collab (
    draft_id     VARCHAR(255)     PRIMARY KEY REFERENCES drafts (draft_id) ON DELETE CASCADE,
    -- A new id each time a session opens, so a replica's cached document of
    -- an earlier session of the same draft is never mistaken for this one.
    session_id   UUID             NOT NULL,
    -- The whole yrs document (v1 update) as of base_seq.
    base_state   BYTEA            NOT NULL,
    base_seq     BIGINT           NOT NULL DEFAULT 0,
    -- The last update appended (seq > base_seq: text not committed yet).
    seq          BIGINT           NOT NULL DEFAULT 0,
    base_version INTEGER          NOT NULL,
    committed_at TIMESTAMPTZ      NOT NULL,
    -- Share of the auto-save interval the next periodic commit waits (0.5-1
    -- before the first, so sessions opened together do not commit together).
    wait_share   DOUBLE PRECISION NOT NULL DEFAULT 1,
    created_at   TIMESTAMPTZ      NOT NULL
);

CREATE TABLE IF NOT EXISTS draft_collab_updates (
    draft_id   VARCHAR(255) NOT NULL REFERENCES draft_collab (draft_id) ON DELETE CASCADE,
    seq        BIGINT       NOT NULL,
    client_id  VARCHAR(255) NOT NULL,
    user_id    VARCHAR(255) NOT NULL,
    body       BYTEA        NOT NULL,
    created_at TIMESTAMPTZ  NOT NULL DEFAULT now(),
    PRIMARY KEY (draft_id, seq)
);

CREATE TABLE IF NOT EXISTS draft_collab_editors (
    draft_id  VARCHAR(255) NOT NULL REFERENCES draft_collab (draft_id) ON DELETE CASCADE,
    client_id VARCHAR(255) NOT NULL,
    user_id   VARCHAR(255) NOT NULL,
    joined_at TIMESTAMPTZ  NOT NULL,
    last_seen TIMESTAMPTZ  NOT NULL,
    PRIMARY KEY (draft_id, client_id)
);
CREATE INDEX IF NOT EXISTS idx_draft_collab_editors_seen ON draft_collab_editors (last_seen);
