"""PostgreSQL adapter of the API: reads only. All writes go through the worker."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from services.command_api import queries
from services.core.messages import CommandResult


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

    async def order(self, order_id: UUID) -> dict[str, Any] | None:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(queries.ORDER_BY_ID, {"order_id": order_id})
            row: dict[str, Any] | None = await cursor.fetchone()  # type: ignore[assignment]
            return row

    async def history(self, order_id: UUID) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(queries.ORDER_HISTORY, {"order_id": order_id})
            rows: list[dict[str, Any]] = await cursor.fetchall()  # type: ignore[assignment]
            return rows

    async def command_result(self, command_id: UUID) -> CommandResult | None:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(queries.COMMAND_RESULT, {"command_id": command_id})
            row: dict[str, Any] | None = await cursor.fetchone()  # type: ignore[assignment]
            return CommandResult.model_validate(row["result"]) if row else None
