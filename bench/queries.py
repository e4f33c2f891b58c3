"""Named SQL of the direct-to-PostgreSQL baseline (bench/baseline.py). Its own copy, so that
changes to the worker's queries never move the measuring stick."""

from typing import LiteralString

# As the caller (row-level security): a hidden order reads as absent; FOR UPDATE applies the
# update policy, so a visible row is one the caller may change.
LOCK_ORDER: LiteralString = """
SELECT id, restaurant_id, status, version, updated_at FROM orders WHERE id = %(order_id)s FOR UPDATE
"""

ORDER_EXISTS: LiteralString = "SELECT public.order_exists(%(order_id)s)"

UPDATE_ORDER: LiteralString = """
UPDATE orders SET status = %(status)s, version = %(version)s, updated_at = %(now)s
WHERE id = %(order_id)s
"""

INSERT_EVENT: LiteralString = """
INSERT INTO order_status_events
    (order_id, restaurant_id, from_status, to_status, version, command_id, actor, reason, created_at)
VALUES (%(order_id)s, %(restaurant_id)s, %(from_status)s, %(to_status)s, %(version)s,
        %(command_id)s, %(actor)s, %(reason)s, %(now)s)
"""
