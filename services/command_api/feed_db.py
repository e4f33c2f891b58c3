"""PostgreSQL reads of the staff feeds, each as the caller, so row-level security decides what the
caller sees, exactly as for the API's other reads (services/command_api/db.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from services.adapters.tenancy import acting_as_async
from services.command_api import feed_queries
from services.command_api.feed_tokens import OrderCursor
from services.core.messages import Actor
from services.core.statuses import OrderStatus

FIRST_PAGE = {
    "after_status": "",
    "after_created_at": "-infinity",
    "after_id": UUID(int=0),
}
"""Before every row: '' sorts before every status, -infinity before every time."""


class FeedReads:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    async def may_act_for(self, restaurant_id: UUID, actor: Actor) -> bool:
        async with (
            self.pool.connection() as conn,
            conn.transaction(),
            acting_as_async(conn, actor),
        ):
            cursor = await conn.execute(feed_queries.MAY_ACT_FOR, {"restaurant_id": restaurant_id})
            row = await cursor.fetchone()
            return bool(row and row["allowed"])

    async def open_orders(
        self,
        restaurant_id: UUID,
        statuses: Sequence[OrderStatus],
        after: OrderCursor | None,
        limit: int,
        actor: Actor,
    ) -> list[dict[str, Any]]:
        keyset: dict[str, Any] = (
            {
                "after_status": after.status.value,
                "after_created_at": after.created_at,
                "after_id": after.order_id,
            }
            if after
            else FIRST_PAGE
        )
        params = {
            "restaurant_id": restaurant_id,
            "statuses": [s.value for s in statuses],
            "limit": limit,
            **keyset,
        }
        async with (
            self.pool.connection() as conn,
            conn.transaction(),
            acting_as_async(conn, actor),
        ):
            cursor = await conn.execute(feed_queries.OPEN_ORDERS, params)
            rows: list[dict[str, Any]] = await cursor.fetchall()
            return rows
