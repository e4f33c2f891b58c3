"""PostgreSQL adapter of the API: reads only, each as the caller, so row-level security decides what
the caller sees (an order of another restaurant reads as absent). All writes go through the worker.

The pool logs in as the services' role (orderstatus_app); the API's own bookkeeping
(services/command_api/idempotency.py) runs as that role, not as any caller."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from services.command_api import queries
from services.core.messages import Actor, CommandResult
from services.core.tenancy import acting_as_async


class OrderReads:
    def __init__(self, database_url: str, max_size: int = 10) -> None:
        self.pool = AsyncConnectionPool(
            database_url,
            min_size=1,
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True, "row_factory": dict_row},
            timeout=5,
        )

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    async def ping(self) -> None:
        async with self.pool.connection(timeout=2) as conn:
            await conn.execute(queries.PING)

    async def order(self, order_id: UUID, actor: Actor) -> dict[str, Any] | None:
        """The order, or None when it does not exist or the caller may not see it."""
        async with (
            self.pool.connection() as conn,
            conn.transaction(),
            acting_as_async(conn, actor),
        ):
            cursor = await conn.execute(queries.ORDER_BY_ID, {"order_id": order_id})
            row: dict[str, Any] | None = await cursor.fetchone()  # type: ignore[assignment]
            return row

    async def history(self, order_id: UUID, actor: Actor) -> list[dict[str, Any]] | None:
        """The order's status changes in order, or None when the order is not visible to the
        caller (absent or another restaurant's): one transaction, one snapshot."""
        async with (
            self.pool.connection() as conn,
            conn.transaction(),
            acting_as_async(conn, actor),
        ):
            found = await conn.execute(queries.ORDER_BY_ID, {"order_id": order_id})
            if await found.fetchone() is None:
                return None
            cursor = await conn.execute(queries.ORDER_HISTORY, {"order_id": order_id})
            rows: list[dict[str, Any]] = await cursor.fetchall()  # type: ignore[assignment]
            return rows

    async def command_result(self, command_id: UUID, actor: Actor) -> CommandResult | None:
        """The command's outcome when known and the caller may read it: the issuer always, and
        whoever may act for the order's restaurant."""
        async with (
            self.pool.connection() as conn,
            conn.transaction(),
            acting_as_async(conn, actor),
        ):
            cursor = await conn.execute(queries.COMMAND_RESULT, {"command_id": command_id})
            row: dict[str, Any] | None = await cursor.fetchone()  # type: ignore[assignment]
            return CommandResult.model_validate(row["result"]) if row else None
