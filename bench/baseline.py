"""The direct-to-PostgreSQL design `make bench` compares the project with (issue 9): the same
PATCH /orders/{id}/status contract, answered inside one PostgreSQL transaction per request, no
Kafka. FastAPI + uvicorn (uvloop), a psycopg pool of 8, an HS256 JWT verified per request, the
order locked with SELECT ... FOR UPDATE as the caller (row-level security: the same tenancy rule,
staff membership in restaurant_staff), the same decision (services.core.decision), then UPDATE
orders and INSERT order_status_events. A measuring stick, not a product service.

    python -m bench.baseline --port 8123     (DATABASE_URL, JWT_SECRET as for the API)"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field

from bench import queries
from services.adapters.settings import Settings
from services.adapters.tenancy import acting_as_async
from services.command_api.auth import InvalidToken, TokenVerifier
from services.core.decision import HIDDEN, Decision, Lookup, OrderState, decide
from services.core.messages import Actor, ChangeStatus, Outcome
from services.core.statuses import OrderStatus

POOL_SIZE = 8
PROBLEM_JSON = "application/problem+json"
STATUS_OF = {
    Outcome.CONFLICT: 409,
    Outcome.FORBIDDEN: 403,
    Outcome.NOT_FOUND: 404,
    Outcome.INVALID: 422,
}


class StatusChangeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: OrderStatus
    expected_version: int | None = Field(None, ge=1, le=2**31 - 1)
    reason: str | None = Field(None, max_length=500)


def problem(status: int, title: str, detail: str = "", **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


async def lookup(conn: AsyncConnection[Any], order_id: UUID) -> Lookup:
    row = await (await conn.execute(queries.LOCK_ORDER, {"order_id": order_id})).fetchone()
    if row is not None:
        return OrderState(row[0], row[1], OrderStatus(row[2]), row[3], row[4])
    exists = await (await conn.execute(queries.ORDER_EXISTS, {"order_id": order_id})).fetchone()
    return HIDDEN if exists is not None and exists[0] else None


async def write(conn: AsyncConnection[Any], command: ChangeStatus, decision: Decision) -> None:
    assert decision.order is not None and decision.change is not None
    order, change = decision.order, decision.change
    await conn.execute(
        queries.UPDATE_ORDER,
        {
            "order_id": order.order_id,
            "status": order.status.value,
            "version": order.version,
            "now": order.updated_at,
        },
    )
    await conn.execute(
        queries.INSERT_EVENT,
        {
            "order_id": order.order_id,
            "restaurant_id": order.restaurant_id,
            "from_status": change.from_status.value if change.from_status else None,
            "to_status": change.to_status.value,
            "version": change.version,
            "command_id": command.command_id,
            "actor": f"{command.actor.role.value}:{command.actor.sub}",
            "reason": command.reason,
            "now": order.updated_at,
        },
    )


def answer(decision: Decision, instance: str) -> JSONResponse:
    order = decision.order
    if decision.applied:
        assert order is not None
        return JSONResponse(order.view().model_dump(mode="json"))
    extra: dict[str, Any] = {}
    if decision.outcome is Outcome.CONFLICT and order is not None:
        extra = {"current_status": order.status.value, "current_version": order.version}
    return problem(
        STATUS_OF[decision.outcome],
        decision.outcome.value,
        decision.detail,
        instance=instance,
        **extra,
    )


def create_app(settings: Settings) -> FastAPI:
    verifier = TokenVerifier(settings)
    pool = AsyncConnectionPool(
        settings.database_url, min_size=POOL_SIZE, max_size=POOL_SIZE, open=False
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await pool.open(wait=True)
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(lifespan=lifespan, openapi_url=None)

    @app.patch("/orders/{order_id}/status")
    async def change_status(
        order_id: UUID, body: StatusChangeBody, request: Request
    ) -> JSONResponse:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise InvalidToken
            actor: Actor = verifier.verify(token.strip())
        except InvalidToken:
            return problem(401, "unauthorized")
        now = datetime.now(UTC)
        command = ChangeStatus(
            command_id=uuid4(),
            order_id=order_id,
            status=body.status,
            expected_version=body.expected_version,
            reason=body.reason,
            actor=actor,
            issued_at=now,
        )
        async with pool.connection() as conn, conn.transaction(), acting_as_async(conn, actor):
            decision = decide(await lookup(conn, order_id), command, now)
            if decision.applied:
                await write(conn, command, decision)
        return answer(decision, request.url.path)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    args = parser.parse_args()
    uvicorn.run(
        create_app(Settings()),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
