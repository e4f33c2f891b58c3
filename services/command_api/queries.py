"""Named SQL used by the API's read side."""

from typing import LiteralString

ORDER_BY_ID: LiteralString = """
SELECT id, restaurant_id, status, version, created_at, updated_at FROM orders WHERE id = %(order_id)s
"""

# The history is partitioned by day (migration 0015) and kept for good: bounded below by the
# order's creation (less a margin for workers' clocks), an order's lookup plans and reads only the
# partitions since then, not every day there ever was.
ORDER_HISTORY: LiteralString = """
SELECT from_status, to_status, version, command_id, actor, reason, created_at
FROM order_status_events
WHERE order_id = %(order_id)s AND created_at >= %(since)s
ORDER BY version
"""

COMMAND_RESULT: LiteralString = """
SELECT result FROM command_outcomes WHERE command_id = %(command_id)s
"""

PING: LiteralString = "SELECT 1"

TRY_REPLY_PARTITION: LiteralString = """
SELECT pg_try_advisory_lock(hashtext(%(topic)s), %(partition)s)
"""
"""A session lock on one (results topic, partition): the API process holding it reads there."""
