-- A refused command stays recoverable: the inbox keeps why it was refused (so every redo of its
-- batch dead-letters it again) and the command itself. Undecodable commands that name their id
-- get their `invalid` outcome here too (command_type 'unknown').
ALTER TABLE command_outcomes ADD COLUMN failure text, ADD COLUMN command jsonb;

-- A tripped dead-letter guard stays tripped across restarts until an operator resets it
-- (`orderstatus worker-ops reset-guard`): a restart policy must not restart the worker into the
-- next window of diverted commands.
CREATE TABLE worker_guard_trips (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_id   text        NOT NULL,
    worker_id  text        NOT NULL,
    reason     text        NOT NULL,
    tripped_at timestamptz NOT NULL DEFAULT now(),
    reset_at   timestamptz,
    reset_by   text
);

CREATE INDEX worker_guard_trips_open_idx ON worker_guard_trips (group_id) WHERE reset_at IS NULL;

-- Nobody else (Supabase's default privileges would give the API roles ALL on a new table).
REVOKE ALL ON worker_guard_trips FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON SEQUENCE worker_guard_trips_id_seq FROM PUBLIC, anon, authenticated, service_role;
-- The worker records and reads trips; only the owner (the operator's CLI) resets them.
GRANT SELECT, INSERT ON worker_guard_trips TO orderstatus_app;
