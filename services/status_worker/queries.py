"""Named SQL used by the worker. Schema lives in services/core/migrations."""

from typing import LiteralString

STORED_OUTCOMES: LiteralString = """
SELECT command_id, result, event, source_partition, source_offset, failure
FROM command_outcomes WHERE command_id = ANY(%(ids)s)
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
     source_partition, source_offset, actor_sub, actor_role, failure, command, created_at)
VALUES (%(command_id)s, %(order_id)s, %(restaurant_id)s, %(command_type)s, %(outcome)s,
        %(result)s, %(event)s, %(partition)s, %(offset)s, %(actor_sub)s, %(actor_role)s,
        %(failure)s, %(command)s, %(now)s)
"""

# An undecodable command's `invalid` outcome: every redo of its batch decodes it to the same.
INSERT_INVALID_OUTCOME: LiteralString = """
INSERT INTO command_outcomes
    (command_id, order_id, command_type, outcome, result, source_partition, source_offset,
     actor_sub, actor_role, failure, created_at)
VALUES (%(command_id)s, %(order_id)s, 'unknown', 'invalid', %(result)s, %(partition)s, %(offset)s,
        %(actor_sub)s, %(actor_role)s, %(failure)s, %(now)s)
ON CONFLICT (command_id) DO NOTHING
"""

INSERT_WIDGET_EVENT: LiteralString = """
INSERT INTO widget_events (type, restaurant_id, order_id, command_id, payload, created_at)
VALUES (%(type)s, %(restaurant_id)s, %(order_id)s, %(command_id)s, %(payload)s, %(now)s)
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
