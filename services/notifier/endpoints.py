"""Webhook endpoints as the API manages them: every statement as the caller, so row-level security
(migration 0011) decides which restaurant's endpoints the caller may see and change; another
restaurant's endpoint reads as absent."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg_pool import AsyncConnectionPool

from services.adapters.tenancy import acting_as_async
from services.core.messages import Actor
from services.notifier import queries
from services.notifier.db import promote_heads

Row = dict[str, Any]


class NotPermitted(Exception):
    """Row-level security refused the write (not staff of that restaurant)."""


class EndpointStore:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    async def _one(self, actor: Actor, sql: str, params: dict[str, Any]) -> Row | None:
        try:
            async with (
                self.pool.connection() as conn,
                conn.transaction(),
                acting_as_async(conn, actor),
            ):
                cursor = await conn.execute(sql, params)
                row: Row | None = await cursor.fetchone()
                return row
        except psycopg.errors.InsufficientPrivilege as exc:
            raise NotPermitted from exc

    async def create(
        self,
        actor: Actor,
        *,
        endpoint_id: UUID,
        restaurant_id: UUID,
        url: str,
        event_types: Sequence[str] | None,
        description: str | None,
        secret: str,
    ) -> Row:
        row = await self._one(
            actor,
            queries.CREATE_ENDPOINT,
            {
                "id": endpoint_id,
                "restaurant_id": restaurant_id,
                "url": url,
                "event_types": list(event_types) if event_types else None,
                "description": description,
                "secret": secret,
                "actor": actor.sub,
            },
        )
        assert row is not None  # INSERT ... RETURNING returns its row or raises
        return row

    async def of_restaurant(self, actor: Actor, restaurant_id: UUID) -> list[Row]:
        async with self.pool.connection() as conn, conn.transaction(), acting_as_async(conn, actor):
            cursor = await conn.execute(
                queries.ENDPOINTS_OF_RESTAURANT, {"restaurant_id": restaurant_id}
            )
            rows: list[Row] = await cursor.fetchall()
            return rows

    async def delete(self, actor: Actor, endpoint_id: UUID) -> bool:
        return await self._one(actor, queries.DELETE_ENDPOINT, {"id": endpoint_id}) is not None

    async def rotate_secret(
        self, actor: Actor, endpoint_id: UUID, secret: str, keep_previous_s: float
    ) -> Row | None:
        return await self._one(
            actor,
            queries.ROTATE_SECRET,
            {"id": endpoint_id, "secret": secret, "keep_s": keep_previous_s},
        )

    async def attempts(self, actor: Actor, endpoint_id: UUID, limit: int) -> list[Row] | None:
        """Newest first; None when the endpoint is not visible to the caller."""
        async with self.pool.connection() as conn, conn.transaction(), acting_as_async(conn, actor):
            found = await conn.execute(queries.ENDPOINT_BY_ID, {"id": endpoint_id})
            if await found.fetchone() is None:
                return None
            cursor = await conn.execute(
                queries.ATTEMPTS_OF_ENDPOINT, {"id": endpoint_id, "limit": limit}
            )
            rows: list[Row] = await cursor.fetchall()
            return rows

    async def recover(
        self, actor: Actor, endpoint_id: UUID, since: datetime
    ) -> tuple[Row, int] | None:
        """Enables the endpoint again and queues its failed and held deliveries since `since`."""
        async with self.pool.connection() as conn, conn.transaction(), acting_as_async(conn, actor):
            cursor = await conn.execute(queries.REENABLE_ENDPOINT, {"id": endpoint_id})
            row: Row | None = await cursor.fetchone()
            if row is None:
                return None
            await conn.execute(queries.LOCK_HEADS)
            requeued = await conn.execute(
                queries.REQUEUE_SINCE, {"id": endpoint_id, "since": since}
            )
            pairs = await requeued.fetchall()
            await promote_heads(
                conn, [p["endpoint_id"] for p in pairs], [p["order_id"] for p in pairs]
            )
            return row, len(pairs)
