"""Named SQL used by the worker. Schema lives in services/adapters/migrations."""

from typing import LiteralString

# The inbox is partitioned by the command's issued_at (migration 0015): the range lets PostgreSQL
# plan and read only the partitions the batch's commands can be in (bounds are parameters, not
# now(), so they prune at planning: a stable function would leave every partition from `earliest`
# on to be planned, and pruned only at execution). Rows moved from before 0015 have issued_at =
# created_at, never earlier than the command's own and never later than the worker's now;
# `earliest` is the batch's earliest issued_at less a lookback (repository.INBOX_LOOKBACK) for
# copies that carry a later issued_at than the one stored (republished by an API from before
# migration 0016). See repository.stored_outcomes.
STORED_OUTCOMES: LiteralString = """
SELECT command_id, result, event, source_partition, source_offset, failure
FROM command_outcomes
WHERE command_id = ANY(%(ids)s) AND issued_at >= %(earliest)s AND issued_at <= %(latest)s
"""

# Run as the caller: row-level security hides the orders the caller may not act for (FOR UPDATE
# applies the UPDATE policy too).
LOCK_ORDER: LiteralString = """
SELECT id, restaurant_id, status, version, updated_at FROM orders WHERE id = %(order_id)s FOR UPDATE
"""

# Whether a hidden order exists at all: 403 rather than 404 (a SECURITY DEFINER function).
ORDER_EXISTS: LiteralString = "SELECT public.order_exists(%(order_id)s) AS order_exists"

# As the caller: the expression of the orders insert policy (migration 0002), so a create the
# policy would refuse is `forbidden` without a savepoint per create.
MAY_ACT_FOR: LiteralString = "SELECT public.caller_may_act_for(%(restaurant_id)s) AS may_act"

INSERT_ORDER: LiteralString = """
INSERT INTO orders (id, restaurant_id, status, version, created_at, updated_at)
VALUES (%(order_id)s, %(restaurant_id)s, %(status)s, %(version)s, %(now)s, %(now)s)
"""

UPDATE_ORDER_STATUS: LiteralString = """
UPDATE orders SET status = %(status)s, version = %(version)s, updated_at = %(now)s
WHERE id = %(order_id)s AND version = %(previous_version)s
RETURNING id
"""

INSERT_STATUS_EVENT: LiteralString = """
INSERT INTO order_status_events
    (order_id, restaurant_id, from_status, to_status, version, command_id, actor, reason, created_at)
VALUES (%(order_id)s, %(restaurant_id)s, %(from_status)s, %(to_status)s, %(version)s,
        %(command_id)s, %(actor)s, %(reason)s, %(now)s)
"""

INSERT_OUTCOME: LiteralString = """
INSERT INTO command_outcomes
    (command_id, order_id, restaurant_id, command_type, outcome, result, event,
     source_partition, source_offset, actor_sub, actor_role, failure, command, issued_at,
     created_at)
VALUES (%(command_id)s, %(order_id)s, %(restaurant_id)s, %(command_type)s, %(outcome)s,
        %(result)s, %(event)s, %(source_partition)s, %(source_offset)s, %(actor_sub)s,
        %(actor_role)s, %(failure)s, %(command)s, %(issued_at)s, %(now)s)
"""

# An undecodable command's `invalid` outcome: every redo of its batch decodes it to the same, and
# its record's timestamp (its issued_at here) is the same on every redelivery.
INSERT_INVALID_OUTCOME: LiteralString = """
INSERT INTO command_outcomes
    (command_id, order_id, command_type, outcome, result, source_partition, source_offset,
     actor_sub, actor_role, failure, issued_at, created_at)
VALUES (%(command_id)s, %(order_id)s, 'unknown', 'invalid', %(result)s, %(partition)s, %(offset)s,
        %(actor_sub)s, %(actor_role)s, %(failure)s, %(issued_at)s, %(now)s)
ON CONFLICT (command_id, issued_at) DO NOTHING
"""

INSERT_WIDGET_EVENT: LiteralString = """
INSERT INTO widget_events (type, restaurant_id, order_id, command_id, payload, created_at)
VALUES (%(type)s, %(restaurant_id)s, %(order_id)s, %(command_id)s, %(payload)s, %(now)s)
"""

# ---- a batch, one statement per table for each caller (bulk.py); as the caller unless noted ----

# Row-level security hides what the caller may not act for; ordered by id, so two lockers of the
# same orders wait for each other instead of deadlocking.
LOCK_ORDERS: LiteralString = """
SELECT id, restaurant_id, status, version, updated_at FROM orders
WHERE id = ANY(%(ids)s::uuid[]) ORDER BY id FOR UPDATE
"""

# Which of the ids exist at all, seen or not (order_exists(): SECURITY DEFINER).
ORDERS_EXISTING: LiteralString = """
SELECT id FROM unnest(%(ids)s::uuid[]) AS u(id) WHERE public.order_exists(id)
"""

# The insert policy's expression for each restaurant the caller's creates name.
MAY_ACT_FOR_EACH: LiteralString = """
SELECT r AS restaurant_id, public.caller_may_act_for(r) AS may_act
FROM unnest(%(restaurant_ids)s::uuid[]) AS r
"""

INSERT_ORDERS: LiteralString = """
INSERT INTO orders (id, restaurant_id, status, version, created_at, updated_at)
SELECT id, restaurant_id, status, version, %(now)s, %(now)s
FROM unnest(%(order_id)s::uuid[], %(restaurant_id)s::uuid[], %(status)s::text[],
            %(version)s::int[]) AS u(id, restaurant_id, status, version)
"""

UPDATE_ORDERS: LiteralString = """
UPDATE orders AS o SET status = u.status, version = u.version, updated_at = %(now)s
FROM unnest(%(order_id)s::uuid[], %(status)s::text[], %(version)s::int[],
            %(previous_version)s::int[]) AS u(id, status, version, previous_version)
WHERE o.id = u.id AND o.version = u.previous_version
RETURNING o.id
"""

INSERT_STATUS_EVENTS: LiteralString = """
INSERT INTO order_status_events
    (order_id, restaurant_id, from_status, to_status, version, command_id, actor, reason, created_at)
SELECT order_id, restaurant_id, from_status, to_status, version, command_id, actor, reason, %(now)s
FROM unnest(%(order_id)s::uuid[], %(restaurant_id)s::uuid[], %(from_status)s::text[],
            %(to_status)s::text[], %(version)s::int[], %(command_id)s::uuid[], %(actor)s::text[],
            %(reason)s::text[])
    AS u(order_id, restaurant_id, from_status, to_status, version, command_id, actor, reason)
"""

# As the worker itself: the batch's inbox rows and analytics events.
INSERT_OUTCOMES: LiteralString = """
INSERT INTO command_outcomes
    (command_id, order_id, restaurant_id, command_type, outcome, result, event,
     source_partition, source_offset, actor_sub, actor_role, failure, command, issued_at,
     created_at)
SELECT command_id, order_id, restaurant_id, command_type, outcome, result, event,
       source_partition, source_offset, actor_sub, actor_role, failure, command, issued_at, %(now)s
FROM jsonb_to_recordset(%(rows)s::jsonb)
    AS u(command_id uuid, order_id uuid, restaurant_id uuid, command_type text, outcome text,
         result jsonb, event jsonb, source_partition integer, source_offset bigint,
         actor_sub text, actor_role text, failure text, command jsonb, issued_at timestamptz)
"""

INSERT_WIDGET_EVENTS: LiteralString = """
INSERT INTO widget_events (type, restaurant_id, order_id, command_id, payload, created_at)
SELECT type, restaurant_id, order_id, command_id, payload, %(now)s
FROM unnest(%(type)s::text[], %(restaurant_id)s::uuid[], %(order_id)s::uuid[],
            %(command_id)s::uuid[], %(payload)s::jsonb[])
    AS u(type, restaurant_id, order_id, command_id, payload)
"""

PING: LiteralString = "SELECT 1"

OPEN_GUARD_TRIP: LiteralString = """
SELECT worker_id, reason, tripped_at FROM worker_guard_trips
WHERE group_id = %(group_id)s AND reset_at IS NULL
ORDER BY tripped_at LIMIT 1
"""

RECORD_GUARD_TRIP: LiteralString = """
INSERT INTO worker_guard_trips (group_id, worker_id, reason) VALUES (%(group_id)s, %(worker_id)s, %(reason)s)
"""

# As the owner (the operator's CLI): the worker's own role may not reset what stopped it.
RESET_GUARD_TRIPS: LiteralString = """
UPDATE worker_guard_trips SET reset_at = now(), reset_by = current_user
WHERE group_id = %(group_id)s AND reset_at IS NULL
RETURNING worker_id, reason, tripped_at
"""
