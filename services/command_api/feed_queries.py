"""Named SQL of the staff feeds (services/command_api/orders_feed.py), run as the caller."""

from typing import LiteralString

MAY_ACT_FOR: LiteralString = "SELECT public.caller_may_act_for(%(restaurant_id)s) AS allowed"
"""The policies' own rule (migration 0002): token scope, role, and staff membership."""

OPEN_ORDERS: LiteralString = """
SELECT id, restaurant_id, status, version, created_at, updated_at
FROM orders
WHERE restaurant_id = %(restaurant_id)s
  AND status = ANY(%(statuses)s)
  AND (status, created_at, id) > (%(after_status)s, %(after_created_at)s, %(after_id)s)
ORDER BY status, created_at, id
LIMIT %(limit)s
"""
"""A restaurant's orders in the given statuses, by status then age (oldest first), one page after
the keyset cursor. The keyset is an index condition on orders_status_created_idx (status,
created_at); tests/integration/test_orders_feed_plan.py checks the plan."""
