"""PostgreSQL adapter of the API's read side: orders, their history and command outcomes, each
read as the caller (row-level security decides what the caller may see).

`order_status_events` is append-only and written only by the worker; the API never writes an
order.

Two pools (DATABASE_READ_URL, docs/database-scaling.md): orders and their history (GET, the feed,
the early refusals' lookup) are read from the read pool, a streaming replica when configured; a
replica lags the primary by its replay delay, so these reads may show an order a moment old, as a
read just before the latest change would. Command outcomes stay on the primary: they are read right
after the worker's result arrived (a 504's or a retry's answer) and must see what it committed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from services.adapters.tenancy import acting_as_async
from services.command_api import queries
from services.core.messages import Actor, CommandResult, OrderView

Pool = AsyncConnectionPool[AsyncConnection[DictRow]]
"""Autocommit connections whose rows come back as dicts."""

HISTORY_CLOCK_MARGIN = timedelta(days=1)
"""A change is recorded after its order's creation, by the clock of whichever worker applied it:
the history is read from a day before the creation (queries.ORDER_HISTORY)."""

UNAVAILABLE = (psycopg.OperationalError, PoolTimeout)
"""What PostgreSQL being unreachable (or the pool exhausted) raises."""


class StoreUnavailable(Exception):
    """PostgreSQL did not answer. Raised where the service layer must tell that apart (after a
    command was published, an unreachable database must not read as 'nothing happened')."""


@asynccontextmanager
async def unavailable_as_store_error() -> AsyncIterator[None]:
    try:
        yield
    except UNAVAILABLE as exc:
        raise StoreUnavailable(type(exc).__name__) from exc


def connection_pool(database_url: str, max_size: int = 10) -> Pool:
    return AsyncConnectionPool(
        database_url,
        min_size=1,
        max_size=max_size,
        open=False,
        connection_class=AsyncConnection[DictRow],
        kwargs={"autocommit": True, "row_factory": dict_row},
        timeout=5,
    )


def order_reads(database_url: str, database_read_url: str | None) -> OrderReads:
    """The API's reads: outcomes on the primary, orders on DATABASE_READ_URL when set."""
    replica = connection_pool(database_read_url) if database_read_url else None
    return OrderReads(connection_pool(database_url), replica)


def order_view(row: DictRow) -> OrderView:
    return OrderView(
        order_id=row["id"],
        restaurant_id=row["restaurant_id"],
        status=row["status"],
        version=row["version"],
        updated_at=row["updated_at"],
    )


class OrderReads:
    def __init__(self, pool: Pool, read_pool: Pool | None = None) -> None:
        self.pool = pool
        """The primary: command outcomes, and the API's writes (CommandRequests shares it)."""
        self.read_pool = read_pool or pool
        """Reads that may lag (orders, history, feed): DATABASE_READ_URL, else the primary."""

    def _pools(self) -> list[Pool]:
        return [self.pool] if self.read_pool is self.pool else [self.pool, self.read_pool]

    async def open(self) -> None:
        for pool in self._pools():
            await pool.open(wait=False)

    async def close(self) -> None:
        for pool in self._pools():
            await pool.close()

    async def ping(self) -> None:
        for pool in self._pools():
            async with pool.connection(timeout=2) as conn:
                await conn.execute(queries.PING)

    async def order(self, order_id: UUID, actor: Actor) -> OrderView | None:
        """The order, or None when it does not exist or the caller may not see it. Pipelined: one
        round trip (begin, act as the caller, select, switch back, commit), not five; the row is
        read once the pipeline has synced. Raises StoreUnavailable."""
        async with unavailable_as_store_error(), self.read_pool.connection() as conn:
            async with conn.pipeline(), conn.transaction(), acting_as_async(conn, actor):
                cursor = await conn.execute(queries.ORDER_BY_ID, {"order_id": order_id})
            row = await cursor.fetchone()
        return order_view(row) if row is not None else None

    async def history(self, order_id: UUID, actor: Actor) -> list[dict[str, Any]] | None:
        """The order's status changes in order, or None when the order is not visible to the
        caller (absent or another restaurant's): one transaction, one snapshot."""
        async with (
            self.read_pool.connection() as conn,
            conn.transaction(),
            acting_as_async(conn, actor),
        ):
            found = await conn.execute(queries.ORDER_BY_ID, {"order_id": order_id})
            order = await found.fetchone()
            if order is None:
                return None
            since = order["created_at"] - HISTORY_CLOCK_MARGIN
            cursor = await conn.execute(
                queries.ORDER_HISTORY, {"order_id": order_id, "since": since}
            )
            return list(await cursor.fetchall())

    async def command_result(self, command_id: UUID, actor: Actor) -> CommandResult | None:
        """The command's outcome when known and the caller may read it: the issuer always, and
        whoever may act for the order's restaurant. Raises StoreUnavailable."""
        async with (
            unavailable_as_store_error(),
            self.pool.connection() as conn,
            conn.transaction(),
            acting_as_async(conn, actor),
        ):
            cursor = await conn.execute(queries.COMMAND_RESULT, {"command_id": command_id})
            row = await cursor.fetchone()
            return CommandResult.model_validate(row["result"]) if row else None
