-- Drafting agent (crates/ymera-drafting): drafts that expire. A draft with
-- an `expires_at` in the past is archived (never deleted) by the expiry job
-- of whichever drafting replica gets to it first (README "Expiry").
ALTER TABLE drafts ADD COLUMN IF NOT EXISTS expires_at TIMESTAMPTZ;
CREATE INDEX IF NOT EXISTS idx_drafts_expiring ON drafts (expires_at)
    WHERE expires_at IS NOT NULL AND status <> 'archived';
