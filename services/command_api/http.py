"""HTTP routes, request/response models and RFC 9457 problem details."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID, uuid4

import psycopg
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.command_api.auth import InvalidToken, KeysUnavailable, TokenVerifier
from services.command_api.db import OrderReads
from services.command_api.dispatch import CommandDispatch
from services.command_api.kafka import CommandBus
from services.command_api.problems import PROBLEM_RESPONSES, ProblemError, problem_response
from services.core.messages import (
    REASON_MAX_LENGTH,
    TEXT_PATTERN,
    Actor,
    ChangeStatus,
    CreateOrder,
)
from services.core.settings import Settings
from services.core.statuses import OrderStatus
from services.observability.api_metrics import observe_request, route_template
from services.observability.sentry import report_answer

log = logging.getLogger("services.command_api.access")

# ---- request and response models -------------------------------------------------------------


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateOrderBody(Body):
    restaurant_id: UUID
    order_id: UUID | None = None


class StatusChangeBody(Body):
    status: OrderStatus
    expected_version: int | None = Field(None, ge=1, le=2**31 - 1)
    reason: str | None = Field(None, max_length=REASON_MAX_LENGTH, pattern=TEXT_PATTERN)


class OrderResponse(BaseModel):
    order_id: UUID
    restaurant_id: UUID
    status: OrderStatus
    version: int
    updated_at: datetime


class HistoryEntry(BaseModel):
    from_status: OrderStatus
    to_status: OrderStatus
    version: int
    command_id: UUID
    actor: str
    reason: str | None
    created_at: datetime


# ---- dependencies ------------------------------------------------------------------------------


def settings_of(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def bus_of(request: Request) -> CommandBus:
    return request.app.state.bus  # type: ignore[no-any-return]


def reads_of(request: Request) -> OrderReads:
    return request.app.state.reads  # type: ignore[no-any-return]


def dispatch_of(request: Request) -> CommandDispatch:
    return request.app.state.dispatch  # type: ignore[no-any-return]


def verifier_of(request: Request) -> TokenVerifier:
    return request.app.state.verifier  # type: ignore[no-any-return]


def authenticated(request: Request) -> Actor:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ProblemError(401, "unauthorized", "Missing bearer token")
    try:
        return verifier_of(request).verify(token.strip())
    except InvalidToken:
        request.state.evt = "auth_rejected"
        raise ProblemError(401, "unauthorized", "Invalid token") from None
    except KeysUnavailable:
        request.state.evt = "auth_keys_unavailable"
        raise ProblemError(
            503,
            "auth-unavailable",
            "Authentication unavailable",
            "The token issuer's keys could not be fetched. Retry later.",
            headers={"Retry-After": "5"},
        ) from None


ActorDep = Annotated[Actor, Depends(authenticated)]


# ---- routes ---------------------------------------------------------------------------------

router = APIRouter()


@router.post("/orders", status_code=201, response_model=OrderResponse, responses=PROBLEM_RESPONSES)
async def create_order(body: CreateOrderBody, request: Request, actor: ActorDep) -> Response:
    command = CreateOrder(
        command_id=uuid4(),
        order_id=body.order_id or uuid4(),
        restaurant_id=body.restaurant_id,
        actor=actor,
        rid=request.state.rid,
        issued_at=datetime.now(UTC),
    )
    return await dispatch_of(request).submit(request, command, body)


@router.patch(
    "/orders/{order_id}/status", response_model=OrderResponse, responses=PROBLEM_RESPONSES
)
async def change_status(
    order_id: UUID, body: StatusChangeBody, request: Request, actor: ActorDep
) -> Response:
    command = ChangeStatus(
        command_id=uuid4(),
        order_id=order_id,
        status=body.status,
        expected_version=body.expected_version,
        reason=body.reason,
        actor=actor,
        rid=request.state.rid,
        issued_at=datetime.now(UTC),
    )
    return await dispatch_of(request).submit(request, command, body)


@router.get("/orders/{order_id}", response_model=OrderResponse, responses=PROBLEM_RESPONSES)
async def get_order(order_id: UUID, request: Request, actor: ActorDep) -> OrderResponse:
    row = await reads_of(request).order(order_id, actor)
    # Read as the caller: row-level security makes another restaurant's order read as absent.
    if row is None:
        raise ProblemError(404, "order-not-found", "Order not found")
    return OrderResponse(
        order_id=row["id"],
        restaurant_id=row["restaurant_id"],
        status=row["status"],
        version=row["version"],
        updated_at=row["updated_at"],
    )


@router.get(
    "/orders/{order_id}/events", response_model=list[HistoryEntry], responses=PROBLEM_RESPONSES
)
async def order_history(order_id: UUID, request: Request, actor: ActorDep) -> list[HistoryEntry]:
    history = await reads_of(request).history(order_id, actor)
    if history is None:
        raise ProblemError(404, "order-not-found", "Order not found")
    return [HistoryEntry(**entry) for entry in history]


@router.get("/commands/{command_id}", responses=PROBLEM_RESPONSES)
async def command_status(command_id: UUID, request: Request, actor: ActorDep) -> Response:
    """The outcome of a command sent with `Prefer: respond-async`, or one that timed out (504)."""
    return await dispatch_of(request).status(command_id, actor)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        await reads_of(request).ping()
        checks["postgres"] = "ok"
    except Exception as exc:
        checks["postgres"] = f"unreachable: {type(exc).__name__}"
    bus = bus_of(request)
    checks["kafka"] = "ok" if await asyncio.to_thread(bus.kafka_reachable) else "unreachable"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


# ---- error handlers and request middleware --------------------------------------------------


def install_error_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProblemError)
        return problem_response(request, exc.status, exc.kind, exc.title, exc.detail, **exc.extra)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return problem_response(
            request, 422, "validation-error", "Invalid request", "See `errors`.", errors=errors
        )

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return problem_response(request, exc.status_code, "http-error", str(exc.detail))

    async def on_unhandled(request: Request, exc: Exception) -> Response:
        request.state.evt = "order_status_exception"
        log.exception(
            "unhandled error",
            extra={"evt": "order_status_exception", "rid": getattr(request.state, "rid", None)},
        )
        return problem_response(request, 500, "order-status-exception", "Internal error")

    async def on_database_unavailable(request: Request, exc: Exception) -> Response:
        # Not a bug of ours and not the caller's: say so, and when to come back.
        request.state.evt = "database_unavailable"
        log.warning(
            "database unavailable",
            extra={
                "evt": "database_unavailable",
                "rid": getattr(request.state, "rid", None),
                "error": type(exc).__name__,
            },
        )
        return problem_response(
            request,
            503,
            "database-unavailable",
            "Database unavailable",
            "PostgreSQL did not answer. Retry later; with the same Idempotency-Key a retry is "
            "answered with the outcome of this request if it went through.",
            headers={"Retry-After": "1"},
        )

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(psycopg.OperationalError, on_database_unavailable)
    app.add_exception_handler(PoolTimeout, on_database_unavailable)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unhandled)


class RequestContext:
    """Pure ASGI middleware: request id in and out, one JSON log line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _request_id(scope)
        state = scope.setdefault("state", {})
        state["rid"] = rid
        started = time.perf_counter()
        status_code = 500

        async def send_with_rid(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_rid)
        finally:
            path = scope["path"]
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            route = route_template(scope)
            observe_request(
                route, scope["method"], status_code, duration_ms / 1000, state.get("evt")
            )
            report_answer(
                evt=state.get("evt"),
                route=route,
                method=scope["method"],
                status=status_code,
                duration_ms=duration_ms,
                context={"rid": rid, **{k: state.get(k) for k in ("command_id", "order_id")}},
            )
            if path not in ("/healthz", "/readyz", "/metrics"):
                log.info(
                    "request",
                    extra={
                        "evt": state.get("evt", "http_request"),
                        "rid": rid,
                        "method": scope["method"],
                        "path": path,
                        "status_code": status_code,
                        "duration_ms": duration_ms,
                        **{
                            k: state[k]
                            for k in ("command_id", "order_id", "restaurant_id", "status")
                            if k in state
                        },
                    },
                )


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1").strip()
            if 0 < len(candidate) <= 200 and candidate.isprintable():
                return candidate
    return uuid.uuid4().hex
