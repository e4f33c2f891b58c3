"""Acting for a caller in PostgreSQL, so that row-level security (migration 0002), not Python, decides
what the caller may read and change; and staff membership, the data those policies read.

The services log in as `orderstatus_app`, which holds no rights of its own on tenant data. For one
transaction at a time they switch to the caller's role (`authenticated` or `service_role`) with the
caller's verified claims in `request.jwt.claims`, as PostgREST does on Supabase. docs/security.md
has the whole model."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from uuid import UUID

import psycopg
from psycopg.pq import TransactionStatus

from services.adapters import queries
from services.core.messages import Actor

APP_ROLE = "orderstatus_app"
"""The login role of the API and the worker (DATABASE_URL); created by migration 0002."""


def claims_of(actor: Actor) -> str:
    """The claims the policies read: subject, role and the token's restaurant scope (empty: none)."""
    return json.dumps(
        {
            "sub": actor.sub,
            "role": actor.role.value,
            "restaurant_ids": [str(r) for r in actor.restaurant_ids],
        }
    )


def _act_params(actor: Actor) -> dict[str, str]:
    return {"role": actor.role.value, "claims": claims_of(actor)}


class NotInTransaction(RuntimeError):
    """SET LOCAL outside a transaction ends with its own statement: refuse rather than run the
    caller's queries with the wrong rights."""


# In a transaction: idle in it, or (pipeline mode) with statements in flight.
_IN_TRANSACTION = (TransactionStatus.INTRANS, TransactionStatus.ACTIVE)


@contextmanager
def acting_as(conn: psycopg.Connection[Any], actor: Actor) -> Iterator[None]:
    """Runs the block as `actor`, inside the connection's current transaction (pipeline mode too)."""
    conn.execute(queries.ACT_AS, _act_params(actor))
    if conn.info.transaction_status not in _IN_TRANSACTION:
        raise NotInTransaction("acting_as needs an open transaction")
    try:
        yield
    finally:
        # After an error the enclosing transaction or savepoint rolls back, which undoes the
        # switch; otherwise switch back here, so the rest of the transaction is the service's own.
        # (In pipeline mode an error may not be known yet: then PostgreSQL skips this statement.)
        if conn.info.transaction_status in _IN_TRANSACTION:
            conn.execute(queries.STOP_ACTING)


@asynccontextmanager
async def acting_as_async(conn: psycopg.AsyncConnection[Any], actor: Actor) -> AsyncIterator[None]:
    """acting_as for the API's async connections; open a transaction first."""
    await conn.execute(queries.ACT_AS, _act_params(actor))
    if conn.info.transaction_status not in _IN_TRANSACTION:
        raise NotInTransaction("acting_as_async needs an open transaction")
    try:
        yield
    finally:
        if conn.info.transaction_status in _IN_TRANSACTION:
            await conn.execute(queries.STOP_ACTING)


# ---- staff membership (owner role: DATABASE_ADMIN_URL) -------------------------------------------


def grant_staff(conn: psycopg.Connection[Any], *, user_id: str, restaurant_id: UUID) -> bool:
    """Lets `user_id` (a JWT `sub`) act for `restaurant_id`. False when it already could."""
    granted = conn.execute(
        queries.GRANT_STAFF, {"user_id": user_id, "restaurant_id": restaurant_id}
    )
    return granted.rowcount == 1


def revoke_staff(conn: psycopg.Connection[Any], *, user_id: str, restaurant_id: UUID) -> bool:
    """Takes it back, effective for the next command (tokens need not expire). False when absent."""
    revoked = conn.execute(
        queries.REVOKE_STAFF, {"user_id": user_id, "restaurant_id": restaurant_id}
    )
    return revoked.rowcount == 1


def staff_of(conn: psycopg.Connection[Any], restaurant_id: UUID) -> list[tuple[str, Any, str]]:
    """(user_id, granted_at, granted_by) of everyone who may act for `restaurant_id`."""
    rows = conn.execute(queries.STAFF_OF_RESTAURANT, {"restaurant_id": restaurant_id}).fetchall()
    return [(row[0], row[1], row[2]) for row in rows]
