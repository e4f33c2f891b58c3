"""What the checker reads from the run's database (as the owner role, which sees every row)."""

from __future__ import annotations

from typing import LiteralString

INBOX: LiteralString = """
SELECT command_id::text, order_id::text, command_type, outcome, result, event,
       source_partition, source_offset
FROM command_outcomes
"""

STATUS_CHANGES: LiteralString = """
SELECT id, order_id::text, version, command_id::text, to_status
FROM order_status_events
ORDER BY id
"""

ORDERS: LiteralString = "SELECT id::text, status, version FROM orders"
