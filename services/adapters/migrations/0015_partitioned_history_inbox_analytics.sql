-- The tables that only grow, partitioned by day (issue 14; docs/database-scaling.md): the history
-- (order_status_events) and the analytics events (widget_events) by created_at, the worker's inbox
-- (command_outcomes) by the issued_at of the command itself. Retention then drops whole partitions
-- instead of deleting rows (services/ops/partitions.py), and a query that names a time range reads
-- only the partitions of that range.
--
-- Each table is rebuilt: renamed away, re-created partitioned under its own name with the same
-- columns, indexes (the runbook's names), grants, row-level security policies (0002, 0006, 0007,
-- 0013) and triggers (0006), its rows moved over, the old table dropped. Partitions cover every day
-- that has rows, through 14 days ahead; `orderstatus partitions maintain` keeps that window.
--
-- Unique constraints of a partitioned table must contain the partition key:
--   * command_outcomes: the inbox's promise is "each command id once". Its key is
--     (command_id, issued_at), and issued_at is part of the command, stable wherever the same
--     command id travels: a redelivered record carries the same bytes; a retry with the same
--     Idempotency-Key republishes the claimed command with the issued_at the claim recorded
--     (migration 0016); a re-run of a DLQ replay issues the replay (whose id is derived from the
--     dead letter) as of when that letter was parked. So (command_id, issued_at) is as unique as
--     command_id, and a copy always falls into the partition of its first delivery, whichever
--     day it arrives on. The worker looks a batch up by command id within
--     [earliest issued_at of the batch - a lookback, max(latest issued_at, now())]
--     (status_worker/queries.py STORED_OUTCOMES): partition pruning keeps that to one or two
--     partitions, and the lookback also finds the rows moved here from before this migration,
--     whose issued_at is their created_at (never earlier than the command's real issued_at), and
--     copies republished by an API from before 0016.
--   * order_status_events: UNIQUE (command_id) and UNIQUE (order_id, version) cannot stay unique
--     across partitions; both become plain indexes. What they guarded is held where it is decided,
--     in the same transaction as the history row: a command id is applied once (the inbox above),
--     and a version once per order (the worker's UPDATE of orders matches only the row at the
--     previous version, locked FOR UPDATE, and a mismatch fails the batch).
--   * widget_events: the identity id with the creation time.

-- ---- order_status_events ------------------------------------------------------------------------

ALTER TABLE order_status_events RENAME TO order_status_events_unpartitioned;
ALTER TABLE order_status_events_unpartitioned
    DROP CONSTRAINT order_status_events_pkey,
    DROP CONSTRAINT order_status_events_command_id_key,
    DROP CONSTRAINT order_status_events_order_id_version_key,
    ALTER COLUMN id DROP IDENTITY;
DROP INDEX order_status_events_created_idx, order_status_events_restaurant_created_idx;

CREATE TABLE order_status_events (
    id            bigint GENERATED ALWAYS AS IDENTITY,
    order_id      uuid        NOT NULL REFERENCES orders (id),
    restaurant_id uuid        NOT NULL,
    from_status   text        NOT NULL,
    to_status     text        NOT NULL,
    version       integer     NOT NULL,
    command_id    uuid        NOT NULL,
    actor         text        NOT NULL,
    reason        text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

-- The runbook's index (docs/runbook.md, `orderstatus doctor`), and the others of 0001.
CREATE INDEX order_status_events_created_idx ON order_status_events (created_at);
CREATE INDEX order_status_events_restaurant_created_idx
    ON order_status_events (restaurant_id, created_at);
CREATE INDEX order_status_events_order_version_idx ON order_status_events (order_id, version);
CREATE INDEX order_status_events_command_idx ON order_status_events (command_id);

-- ---- command_outcomes ---------------------------------------------------------------------------

ALTER TABLE command_outcomes RENAME TO command_outcomes_unpartitioned;
ALTER TABLE command_outcomes_unpartitioned DROP CONSTRAINT command_outcomes_pkey;
DROP INDEX command_outcomes_created_idx, command_outcomes_order_idx;

CREATE TABLE command_outcomes (
    command_id       uuid        NOT NULL,
    order_id         uuid        NOT NULL,
    restaurant_id    uuid,
    command_type     text        NOT NULL,
    outcome          text        NOT NULL,
    result           jsonb       NOT NULL,
    event            jsonb,
    source_partition integer,
    source_offset    bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    actor_sub        text,
    actor_role       text,
    failure          text,
    command          jsonb,
    -- The command's own issued_at (an undecodable one's: its record's timestamp): the partition
    -- key. The worker always names it; the default is for rows written by hand.
    issued_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (command_id, issued_at)
) PARTITION BY RANGE (issued_at);

CREATE INDEX command_outcomes_created_idx ON command_outcomes (created_at);
CREATE INDEX command_outcomes_order_idx ON command_outcomes (order_id, created_at);

-- ---- widget_events ------------------------------------------------------------------------------

ALTER TABLE widget_events RENAME TO widget_events_unpartitioned;
ALTER TABLE widget_events_unpartitioned
    DROP CONSTRAINT widget_events_pkey,
    ALTER COLUMN id DROP IDENTITY;
DROP INDEX widget_events_type_created_idx, widget_events_created_idx;

CREATE TABLE widget_events (
    id            bigint GENERATED ALWAYS AS IDENTITY,
    type          text        NOT NULL,
    restaurant_id uuid,
    order_id      uuid,
    command_id    uuid,
    payload       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE INDEX widget_events_type_created_idx ON widget_events (type, created_at);
CREATE INDEX widget_events_created_idx ON widget_events (created_at);

-- ---- partitions, then the rows ------------------------------------------------------------------

SELECT public.partition_create_default('order_status_events');
SELECT public.partition_create_default('command_outcomes');
SELECT public.partition_create_default('widget_events');

SELECT count(*) FROM public.partition_create_days(
    'order_status_events',
    coalesce((SELECT min(created_at) AT TIME ZONE 'UTC' FROM order_status_events_unpartitioned),
             now() AT TIME ZONE 'UTC')::date,
    (now() AT TIME ZONE 'UTC')::date + 14);
SELECT count(*) FROM public.partition_create_days(
    'command_outcomes',
    coalesce((SELECT min(created_at) AT TIME ZONE 'UTC' FROM command_outcomes_unpartitioned),
             now() AT TIME ZONE 'UTC')::date,
    (now() AT TIME ZONE 'UTC')::date + 14);
SELECT count(*) FROM public.partition_create_days(
    'widget_events',
    coalesce((SELECT min(created_at) AT TIME ZONE 'UTC' FROM widget_events_unpartitioned),
             now() AT TIME ZONE 'UTC')::date,
    (now() AT TIME ZONE 'UTC')::date + 14);

INSERT INTO order_status_events
    (id, order_id, restaurant_id, from_status, to_status, version, command_id, actor, reason,
     created_at)
OVERRIDING SYSTEM VALUE
SELECT id, order_id, restaurant_id, from_status, to_status, version, command_id, actor, reason,
       created_at
FROM order_status_events_unpartitioned;

INSERT INTO command_outcomes
    (command_id, order_id, restaurant_id, command_type, outcome, result, event, source_partition,
     source_offset, created_at, actor_sub, actor_role, failure, command, issued_at)
SELECT command_id, order_id, restaurant_id, command_type, outcome, result, event, source_partition,
       source_offset, created_at, actor_sub, actor_role, failure, command, created_at
FROM command_outcomes_unpartitioned;

INSERT INTO widget_events (id, type, restaurant_id, order_id, command_id, payload, created_at)
OVERRIDING SYSTEM VALUE
SELECT id, type, restaurant_id, order_id, command_id, payload, created_at
FROM widget_events_unpartitioned;

SELECT setval(pg_get_serial_sequence('order_status_events', 'id'),
              coalesce((SELECT max(id) FROM order_status_events), 0) + 1, false);
SELECT setval(pg_get_serial_sequence('widget_events', 'id'),
              coalesce((SELECT max(id) FROM widget_events), 0) + 1, false);

DROP TABLE order_status_events_unpartitioned, command_outcomes_unpartitioned,
    widget_events_unpartitioned;

-- ---- privileges (0002, 0006, 0007) --------------------------------------------------------------

REVOKE ALL ON order_status_events, command_outcomes, widget_events
    FROM PUBLIC, anon, authenticated, service_role, orderstatus_app;
REVOKE ALL ON SEQUENCE order_status_events_id_seq, widget_events_id_seq
    FROM PUBLIC, anon, authenticated, service_role, orderstatus_app;

GRANT SELECT, INSERT ON order_status_events TO authenticated, service_role;  -- append-only
GRANT SELECT ON command_outcomes TO authenticated, service_role;
GRANT SELECT, INSERT, DELETE ON command_outcomes TO orderstatus_app;
GRANT INSERT, DELETE ON widget_events TO orderstatus_app;
GRANT SELECT (id, created_at) ON widget_events TO orderstatus_app;

-- ---- row-level security (0002, 0007, 0013) ------------------------------------------------------

ALTER TABLE order_status_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE order_status_events FORCE ROW LEVEL SECURITY;
ALTER TABLE command_outcomes ENABLE ROW LEVEL SECURITY;
ALTER TABLE command_outcomes FORCE ROW LEVEL SECURITY;
ALTER TABLE widget_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE widget_events FORCE ROW LEVEL SECURITY;

CREATE POLICY order_status_events_select ON order_status_events
    FOR SELECT TO authenticated, service_role
    USING (public.caller_may_act_for(restaurant_id));
CREATE POLICY order_status_events_insert ON order_status_events
    FOR INSERT TO authenticated, service_role
    WITH CHECK (
        public.caller_may_act_for(restaurant_id)
        AND EXISTS (
            SELECT 1 FROM public.orders AS o
            WHERE o.id = order_status_events.order_id
              AND o.restaurant_id = order_status_events.restaurant_id
        )
    );

CREATE POLICY command_outcomes_caller ON command_outcomes FOR SELECT TO authenticated, service_role
    USING (
        (actor_sub = public.jwt_subject() AND actor_role = current_user::text
            AND (restaurant_id IS NULL OR public.jwt_allows_restaurant(restaurant_id)))
        OR (restaurant_id IS NOT NULL AND public.caller_may_act_for(restaurant_id))
    );
CREATE POLICY command_outcomes_worker_select ON command_outcomes FOR SELECT TO orderstatus_app
    USING (true);
CREATE POLICY command_outcomes_worker_insert ON command_outcomes FOR INSERT TO orderstatus_app
    WITH CHECK (true);
CREATE POLICY command_outcomes_purge ON command_outcomes FOR DELETE TO orderstatus_app
    USING (created_at < now() - interval '1 hour');

CREATE POLICY widget_events_worker_insert ON widget_events FOR INSERT TO orderstatus_app
    WITH CHECK (true);
CREATE POLICY widget_events_purge ON widget_events FOR DELETE TO orderstatus_app
    USING (created_at < now() - interval '1 hour');
CREATE POLICY widget_events_purge_select ON widget_events FOR SELECT TO orderstatus_app
    USING (created_at < now() - interval '1 hour');

DO $operator$
DECLARE
    table_name text;
BEGIN
    FOREACH table_name IN ARRAY ARRAY['order_status_events', 'command_outcomes', 'widget_events']
    LOOP
        EXECUTE format(
            'CREATE POLICY operator_all ON %I TO %I USING (true) WITH CHECK (true)',
            table_name, current_user
        );
    END LOOP;
END
$operator$;

-- ---- only the services write the history (0006) -------------------------------------------------

DO $writers$
BEGIN
    EXECUTE format(
        'CREATE TRIGGER %I BEFORE INSERT OR UPDATE OR DELETE ON order_status_events FOR EACH ROW '
        'WHEN (session_user NOT IN (%L, %L)) '
        'EXECUTE FUNCTION public.refuse_write_outside_the_services()',
        'order_status_events_written_by_the_services', 'orderstatus_app', current_user
    );
END
$writers$;
