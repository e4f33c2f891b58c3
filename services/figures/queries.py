"""The same figures in SQL, from the rows the worker writes (`order_status_events`, `widget_events`,
`orders`), over the spans a figures answer names. Run as the owner role, which sees every row."""

from typing import LiteralString

CHANGES: LiteralString = """
SELECT to_status,
       count(*) FILTER (WHERE created_at >= %(minute_start)s) AS last_minute,
       count(*) AS last_hour
FROM order_status_events
WHERE restaurant_id = %(restaurant_id)s
  AND created_at >= %(hour_start)s AND created_at < %(end)s
GROUP BY to_status
"""

# A refusal belongs to the restaurant of the order it reached for (also when the caller could not
# see that order); a refusal of an order that does not exist belongs to none.
REFUSALS: LiteralString = """
SELECT w.type,
       count(*) FILTER (WHERE w.created_at >= %(minute_start)s) AS last_minute,
       count(*) AS last_hour
FROM widget_events w
JOIN orders o ON o.id = w.order_id
WHERE o.restaurant_id = %(restaurant_id)s
  AND w.type IN ('order_status_conflict', 'order_status_forbidden')
  AND w.created_at >= %(hour_start)s AND w.created_at < %(end)s
GROUP BY w.type
"""

# Prep time: accepted -> ready of each order that became ready in the span.
PREP_TIME: LiteralString = """
SELECT count(*),
       percentile_disc(0.5) WITHIN GROUP (ORDER BY seconds),
       percentile_disc(0.95) WITHIN GROUP (ORDER BY seconds)
FROM (
    SELECT extract(epoch FROM ready.created_at - accepted.created_at)::float8 AS seconds
    FROM order_status_events ready
    JOIN order_status_events accepted
      ON accepted.order_id = ready.order_id AND accepted.to_status = 'accepted'
    WHERE ready.to_status = 'ready' AND ready.restaurant_id = %(restaurant_id)s
      AND ready.created_at >= %(hour_start)s AND ready.created_at < %(end)s
) AS prep
"""

OPEN_ORDERS: LiteralString = """
SELECT status, count(*)
FROM orders
WHERE restaurant_id = %(restaurant_id)s AND status <> ALL(%(final)s)
GROUP BY status
"""
