-- The issued_at of a claimed command (migration 0015: the inbox is partitioned by it, and its
-- key (command_id, issued_at) is only as unique as command_id while every copy of a command
-- carries the same issued_at). A retry with the same Idempotency-Key republishes the claimed
-- command as it was first issued, not as of the retry. Claims from before this migration have
-- none: their republished copies carry the retry's time, which the worker's inbox lookback
-- (WORKER_INBOX_LOOKBACK_S) still finds.
ALTER TABLE command_requests ADD COLUMN issued_at timestamptz;
