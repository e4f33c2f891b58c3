"""Named SQL of `orderstatus verify`, run as the owner role (its `operator_all` policies see every
row), and marked like the other operator queries so `doctor` leaves them out of its slow list."""

from typing import LiteralString

ORDERS: LiteralString = """
SELECT /* orderstatus-ops */ id, restaurant_id, status, version
FROM public.orders
"""

STATUS_CHANGES: LiteralString = """
SELECT /* orderstatus-ops */ order_id, version, from_status, to_status, command_id
FROM public.order_status_events
ORDER BY order_id, version
"""
