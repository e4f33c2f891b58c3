"""PostgreSQL adapter of the notifier, as the services' own role (no caller): records the
deliveries of a batch of events, hands the dispatcher what is due, and stores each attempt with
the delivery's and the endpoint's new state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from services.notifier import queries
from services.notifier.kafka import RoutedEvent

_DISPATCHER_LOCK = 0x0E77_0B07
"""Advisory lock: one dispatcher per database, however many notifier processes consume."""


@dataclass(frozen=True, slots=True)
class DueDelivery:
    id: int
    endpoint_id: UUID
    event_id: str
    order_id: UUID
    version: int
    body: bytes
    attempts: int
    event_time: datetime
    url: str
    secrets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FinishedAttempt:
    delivery_id: int
    endpoint_id: UUID
    order_id: UUID
    attempted_at: datetime
    status: str  # the delivery's new status: pending (retry), delivered, failed
    status_code: int | None
    latency_ms: float
    error: str | None
    next_retry_at: datetime | None
    success: bool
    gone: bool


def _columns(rows: Sequence[object], **fields: str) -> dict[str, list[Any]]:
    """A batch as columns (one array parameter each) for the set-based statements."""
    return {name: [getattr(row, attr) for row in rows] for name, attr in fields.items()}


def _due_of(rows: Sequence[dict[str, Any]]) -> list[DueDelivery]:
    now = datetime.now().astimezone()
    return [
        DueDelivery(
            id=row["id"],
            endpoint_id=row["endpoint_id"],
            event_id=row["event_id"],
            order_id=row["order_id"],
            version=row["version"],
            body=bytes(row["body"]),
            attempts=row["attempts"],
            event_time=row["event_time"],
            url=row["url"],
            secrets=(row["secret"],)
            + (
                (row["previous_secret"],)
                if row["previous_secret"]
                and row["previous_secret_expires_at"] is not None
                and row["previous_secret_expires_at"] > now
                else ()
            ),
        )
        for row in rows
        if row.get("endpoint_status", "enabled") == "enabled"
    ]


async def promote_heads(
    conn: psycopg.AsyncConnection[Any], endpoint_ids: Sequence[UUID], order_ids: Sequence[UUID]
) -> list[DueDelivery]:
    """In a transaction holding LOCK_HEADS: each pair's next waiting delivery becomes its head.
    Returns the new heads of enabled endpoints."""
    cursor = await _send_promote_heads(conn, endpoint_ids, order_ids)
    return _due_of(await cursor.fetchall())


async def _send_promote_heads(
    conn: psycopg.AsyncConnection[Any], endpoint_ids: Sequence[UUID], order_ids: Sequence[UUID]
) -> psycopg.AsyncCursor[Any]:
    """In a pipeline, only queued: its rows are read once the pipeline is synced."""
    return await conn.execute(
        queries.PROMOTE_HEADS, {"endpoint_ids": list(endpoint_ids), "order_ids": list(order_ids)}
    )


async def _update_endpoints(
    conn: psycopg.AsyncConnection[Any], finished: Sequence[FinishedAttempt], disable_after_s: float
) -> list[UUID]:
    """In the attempts' transaction: each endpoint's failing-since by its last attempt; disables
    those failing too long or gone and holds their deliveries. Returns the disabled ones."""
    last: dict[UUID, FinishedAttempt] = {}
    for attempt in finished:
        last[attempt.endpoint_id] = attempt
    succeeded = [e for e, a in last.items() if a.success]
    failing = [e for e, a in last.items() if not a.success]
    gone = sorted({a.endpoint_id for a in finished if a.gone})
    disabled: list[UUID] = []
    if succeeded:
        await conn.execute(queries.ENDPOINTS_SUCCEEDED, {"ids": succeeded})
    if failing:
        at = min(a.attempted_at for a in finished if a.endpoint_id in set(failing))
        await conn.execute(queries.ENDPOINTS_FAILED, {"ids": failing, "at": at})
        cursor = await conn.execute(
            queries.DISABLE_FAILING, {"ids": failing, "after_s": disable_after_s}
        )
        disabled += [row["id"] for row in await cursor.fetchall()]
    if gone:
        cursor = await conn.execute(queries.DISABLE_GONE, {"ids": gone})
        disabled += [row["id"] for row in await cursor.fetchall()]
    if disabled:
        await conn.execute(queries.HOLD_PENDING, {"ids": disabled})
    return disabled


class NotifierDatabase:
    def __init__(self, database_url: str, max_size: int = 4) -> None:
        self.url = database_url
        self.pool: AsyncConnectionPool[psycopg.AsyncConnection[DictRow]] = AsyncConnectionPool(
            database_url,
            connection_class=psycopg.AsyncConnection[DictRow],
            min_size=2,
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True, "row_factory": dict_row},
            timeout=10,
        )
        self._lock_conn: psycopg.AsyncConnection[Any] | None = None

    async def open(self) -> None:
        await self.pool.open(wait=True, timeout=30)

    async def close(self) -> None:
        if self._lock_conn is not None:
            await self._lock_conn.close()
        await self.pool.close()

    async def take_dispatcher_lock(self) -> bool:
        """Held for the life of a dedicated session; False while another notifier holds it."""
        if self._lock_conn is None or self._lock_conn.closed:
            self._lock_conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        cursor = await self._lock_conn.execute(
            "SELECT pg_try_advisory_lock(%s)", (_DISPATCHER_LOCK,)
        )
        row = await cursor.fetchone()
        return bool(row and row[0])

    async def record_events(self, events: Sequence[RoutedEvent]) -> tuple[int, list[DueDelivery]]:
        """One transaction: a delivery per (matching endpoint, event); the ones already recorded
        (a batch re-read after a crash) are left as they are. Returns the deliveries written and
        the new heads among them. Pipelined: the whole transaction is one round trip."""
        if not events:
            return 0, []
        columns = _columns(
            events,
            restaurant_ids="restaurant_id",
            event_ids="event_id",
            event_types="event_type",
            order_ids="order_id",
            versions="version",
            bodies="body",
            event_times="time",
        )
        async with self.pool.connection() as conn:
            async with conn.pipeline(), conn.transaction():
                await conn.execute(queries.LOCK_HEADS)
                written = await conn.execute(queries.RECORD_DELIVERIES, columns)
                promoted = await conn.execute(queries.PROMOTE_HEADS_OF_ORDERS, columns)
            return written.rowcount, _due_of(await promoted.fetchall())

    async def due(
        self, in_flight: Sequence[int], busy_endpoints: Sequence[UUID], limit: int
    ) -> list[DueDelivery]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                queries.DUE_DELIVERIES,
                {
                    "in_flight": list(in_flight),
                    "busy_endpoints": list(busy_endpoints),
                    "limit": limit,
                },
            )
            rows = await cursor.fetchall()
        return _due_of(rows)

    async def record_attempts(
        self, finished: Sequence[FinishedAttempt], disable_after_s: float
    ) -> tuple[list[UUID], list[DueDelivery]]:
        """One transaction for a batch of attempts; returns the endpoints it disabled and the new
        heads (the next events of orders whose head was delivered or given up)."""
        if not finished:
            return [], []
        columns = _columns(
            finished,
            delivery_ids="delivery_id",
            attempted_ats="attempted_at",
            status_codes="status_code",
            latencies="latency_ms",
            errors="error",
            next_retry_ats="next_retry_at",
            statuses="status",
        )
        finished_heads = [a for a in finished if a.status != "pending"]
        promoted: psycopg.AsyncCursor[Any] | None = None
        # Pipelined: with no endpoint to disable, the whole transaction is one round trip.
        async with self.pool.connection() as conn:
            async with conn.pipeline(), conn.transaction():
                await conn.execute(queries.LOCK_HEADS)
                await conn.execute(queries.RECORD_ATTEMPTS, columns)
                await conn.execute(queries.UPDATE_DELIVERIES, columns)
                if finished_heads:
                    promoted = await _send_promote_heads(
                        conn,
                        [a.endpoint_id for a in finished_heads],
                        [a.order_id for a in finished_heads],
                    )
                disabled = await _update_endpoints(conn, finished, disable_after_s)
            heads = _due_of(await promoted.fetchall()) if promoted is not None else []
        return disabled, [h for h in heads if h.endpoint_id not in disabled]

    async def backlog(self) -> dict[str, Any]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(queries.BACKLOG)
            row: dict[str, Any] | None = await cursor.fetchone()
            return row or {"pending": 0, "retrying": 0, "oldest_s": 0.0}
