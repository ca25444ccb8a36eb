-- Communication agent: one index less to write per message.
-- idx_message_history_created_at (created_at) is a prefix of
-- idx_message_history_created_id (created_at, message_id), which serves every
-- query on created_at: the history's range filters and cursor (ORDER BY
-- created_at DESC, message_id DESC) and the archive's ORDER BY created_at.
DROP INDEX IF EXISTS idx_message_history_created_at;
