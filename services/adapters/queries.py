"""Named SQL shared by the services: acting for a caller, and staff membership."""

from typing import LiteralString

# `SET LOCAL ROLE` and the caller's claims, for the rest of the transaction (PostgREST does the
# same on Supabase). set_config('role', ...) checks membership exactly as SET ROLE does.
ACT_AS: LiteralString = """
SELECT set_config('role', %(role)s, true), set_config('request.jwt.claims', %(claims)s, true)
"""

# Back to the login role itself, with no claims: the services' own bookkeeping.
STOP_ACTING: LiteralString = """
SELECT set_config('role', 'none', true), set_config('request.jwt.claims', '', true)
"""

GRANT_STAFF: LiteralString = """
INSERT INTO restaurant_staff (user_id, restaurant_id) VALUES (%(user_id)s, %(restaurant_id)s)
ON CONFLICT (user_id, restaurant_id) DO NOTHING
"""

REVOKE_STAFF: LiteralString = """
DELETE FROM restaurant_staff WHERE user_id = %(user_id)s AND restaurant_id = %(restaurant_id)s
"""

STAFF_OF_RESTAURANT: LiteralString = """
SELECT user_id, granted_at, granted_by FROM restaurant_staff
WHERE restaurant_id = %(restaurant_id)s ORDER BY user_id
"""

# `orderstatus load` and `make bench`, as the owner: pending orders straight into the table, one
# statement per restaurant (COPY is refused under row-level security).
INSERT_PENDING_ORDERS: LiteralString = """
INSERT INTO orders (id, restaurant_id, status, version, created_at, updated_at)
SELECT id, %(restaurant_id)s, 'pending', 1, now(), now() FROM unnest(%(ids)s::uuid[]) AS id
"""
