"""HTTP routes, request models, typed dependencies, and the rendering of the service layer's
answers and problems (RFC 9457) as responses."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar
from uuid import UUID, uuid4

import jwt
import psycopg
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.adapters.settings import Settings
from services.command_api.answers import Answer, LogContext
from services.command_api.auth import SYMMETRIC, InvalidToken, KeysUnavailable, TokenVerifier
from services.command_api.db import OrderReads, StoreUnavailable
from services.command_api.dispatch import CommandDispatch, IdempotencyKey, Mode
from services.command_api.idempotency import fingerprint, valid_key
from services.command_api.kafka import CommandBus
from services.command_api.problems import PROBLEM_JSON, PROBLEM_RESPONSES, Problem, ProblemError
from services.core.messages import (
    DISPLAY_TEXT_PATTERN,
    REASON_MAX_LENGTH,
    Actor,
    ChangeStatus,
    CreateOrder,
    OrderView,
    Outcome,
)
from services.core.outcomes import OUTCOME_NAMES
from services.core.statuses import OrderStatus
from services.observability.api_metrics import ApiMetrics, route_template
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
    reason: str | None = Field(None, max_length=REASON_MAX_LENGTH, pattern=DISPLAY_TEXT_PATTERN)


class HistoryEntry(BaseModel):
    from_status: OrderStatus
    to_status: OrderStatus
    version: int
    command_id: UUID
    actor: str
    reason: str | None
    created_at: datetime


# ---- dependencies ------------------------------------------------------------------------------


T = TypeVar("T")

LOG_CONTEXT = "log_context"
"""The scope state key of the request's LogContext (set by RequestContext, filled by routes)."""


def app_state(request: Request, name: str, kind: type[T]) -> T:
    """What the composition root (app.py) put in `app.state`, checked for its type."""
    value = getattr(request.app.state, name, None)
    if not isinstance(value, kind):
        raise RuntimeError(f"app.state.{name} is not a {kind.__name__}: is the API started?")
    return value


def settings_of(request: Request) -> Settings:
    return app_state(request, "settings", Settings)


def bus_of(request: Request) -> CommandBus:
    return app_state(request, "bus", CommandBus)


def reads_of(request: Request) -> OrderReads:
    return app_state(request, "reads", OrderReads)


def dispatch_of(request: Request) -> CommandDispatch:
    return app_state(request, "dispatch", CommandDispatch)


def verifier_of(request: Request) -> TokenVerifier:
    return app_state(request, "verifier", TokenVerifier)


def log_context(request: Request) -> LogContext:
    """The request's log context (a fresh one outside RequestContext, e.g. in unit tests)."""
    state: dict[str, Any] = request.scope.setdefault("state", {})
    context = state.get(LOG_CONTEXT)
    if not isinstance(context, LogContext):
        context = state[LOG_CONTEXT] = LogContext()
    return context


def request_id(request: Request) -> str:
    rid = request.scope.get("state", {}).get("rid")
    return rid if isinstance(rid, str) else ""


async def authenticated(request: Request) -> Actor:
    """The caller's verified claims. An HS256 token is checked on the event loop (no I/O, tens of
    microseconds: cheaper than the thread-pool hop a sync dependency costs every request); a token
    whose key may have to be fetched (JWKS) is checked in the thread pool."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ProblemError(401, "unauthorized", "Missing bearer token")
    verifier, token = verifier_of(request), token.strip()
    try:
        if _signed_with_shared_secret(token):
            return verifier.verify(token)
        return await asyncio.to_thread(verifier.verify, token)
    except InvalidToken:
        log_context(request).evt = "auth_rejected"
        raise ProblemError(401, "unauthorized", "Invalid token") from None
    except KeysUnavailable:
        log_context(request).evt = "auth_keys_unavailable"
        raise ProblemError(
            503,
            "auth-unavailable",
            "Authentication unavailable",
            "The token issuer's keys could not be fetched. Retry later.",
            headers={"Retry-After": "5"},
        ) from None


def _signed_with_shared_secret(token: str) -> bool:
    try:
        return bool(jwt.get_unverified_header(token).get("alg") == SYMMETRIC)
    except jwt.PyJWTError:
        return True  # malformed: refused without any key, no I/O either


# Dependencies are coroutines: FastAPI runs a plain `def` dependency in the thread pool, a thread
# hop and GIL hand-off per request for a dictionary lookup (py-spy under load: `run_in_threadpool`
# and ~40 AnyIO threads in the API).
async def _dispatch(request: Request) -> CommandDispatch:
    return dispatch_of(request)


async def _reads(request: Request) -> OrderReads:
    return reads_of(request)


async def _bus(request: Request) -> CommandBus:
    return bus_of(request)


ActorDep = Annotated[Actor, Depends(authenticated)]
DispatchDep = Annotated[CommandDispatch, Depends(_dispatch)]
ReadsDep = Annotated[OrderReads, Depends(_reads)]
BusDep = Annotated[CommandBus, Depends(_bus)]


def respond(request: Request, answer: Answer) -> Response:
    """Renders a service-layer Answer; its context becomes the request's log context."""
    request.scope.setdefault("state", {})[LOG_CONTEXT] = answer.context
    if isinstance(answer.body, Problem):
        headers = answer.body.response_headers() | dict(answer.headers)
        body = answer.body.body(request.url.path)
        return JSONResponse(body, answer.status, headers, media_type=PROBLEM_JSON)
    return JSONResponse(dict(answer.body), answer.status, dict(answer.headers))


def problem_response(request: Request, problem: Problem) -> Response:
    return JSONResponse(
        problem.body(request.url.path),
        problem.status,
        problem.response_headers(),
        media_type=PROBLEM_JSON,
    )


def idempotency_key(request: Request, target: str, body: BaseModel) -> IdempotencyKey | None:
    """The request's Idempotency-Key, with the fingerprint of the request as the caller meant it:
    `target` is the canonical path (UUIDs as parsed), so a retry that spells them differently is
    the same request."""
    raw = request.headers.get("idempotency-key")
    if raw is None:
        return None
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':  # a structured-field string, as the draft says
        key = key[1:-1]
    if not valid_key(key):
        raise ProblemError(
            400,
            "invalid-idempotency-key",
            "Invalid Idempotency-Key",
            "Use 1 to 255 printable characters.",
        )
    return IdempotencyKey(key, fingerprint(request.method, target, body.model_dump_json()))


def mode_of(request: Request) -> Mode:
    respond_async = "respond-async" in request.headers.get("prefer", "").lower()
    return Mode.RESPOND_ASYNC if respond_async else Mode.WAIT


# ---- routes ---------------------------------------------------------------------------------

router = APIRouter()


@router.post("/orders", status_code=201, response_model=OrderView, responses=PROBLEM_RESPONSES)
async def create_order(
    body: CreateOrderBody, request: Request, actor: ActorDep, dispatch: DispatchDep
) -> Response:
    command = CreateOrder(
        command_id=uuid4(),
        order_id=body.order_id or uuid4(),
        restaurant_id=body.restaurant_id,
        actor=actor,
        rid=request_id(request),
        issued_at=datetime.now(UTC),
    )
    key = idempotency_key(request, "/orders", body)
    return respond(request, await dispatch.submit(command, key, mode_of(request)))


@router.patch("/orders/{order_id}/status", response_model=OrderView, responses=PROBLEM_RESPONSES)
async def change_status(
    order_id: UUID, body: StatusChangeBody, request: Request, actor: ActorDep, dispatch: DispatchDep
) -> Response:
    command = ChangeStatus(
        command_id=uuid4(),
        order_id=order_id,
        status=body.status,
        expected_version=body.expected_version,
        reason=body.reason,
        actor=actor,
        rid=request_id(request),
        issued_at=datetime.now(UTC),
    )
    key = idempotency_key(request, f"/orders/{order_id}/status", body)
    return respond(request, await dispatch.submit(command, key, mode_of(request)))


@router.get("/orders/{order_id}", response_model=OrderView, responses=PROBLEM_RESPONSES)
async def get_order(order_id: UUID, actor: ActorDep, reads: ReadsDep) -> OrderView:
    order = await reads.order(order_id, actor)
    # Read as the caller: row-level security makes another restaurant's order read as absent.
    if order is None:
        raise ProblemError(404, "order-not-found", "Order not found")
    return order


@router.get(
    "/orders/{order_id}/events", response_model=list[HistoryEntry], responses=PROBLEM_RESPONSES
)
async def order_history(order_id: UUID, actor: ActorDep, reads: ReadsDep) -> list[HistoryEntry]:
    history = await reads.history(order_id, actor)
    if history is None:
        raise ProblemError(404, "order-not-found", "Order not found")
    return [HistoryEntry(**entry) for entry in history]


@router.get("/commands/{command_id}", responses=PROBLEM_RESPONSES)
async def command_status(
    command_id: UUID, request: Request, actor: ActorDep, dispatch: DispatchDep
) -> Response:
    """The outcome of a command sent with `Prefer: respond-async`, or one that timed out (504)."""
    return respond(request, await dispatch.status(command_id, actor))


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(reads: ReadsDep, bus: BusDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        await reads.ping()
        checks["postgres"] = "ok"
    except Exception as exc:
        checks["postgres"] = f"unreachable: {type(exc).__name__}"
    checks["kafka"] = "ok" if await asyncio.to_thread(bus.kafka_reachable) else "unreachable"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


# ---- error handlers and request middleware --------------------------------------------------


DATABASE_UNAVAILABLE = Problem(
    503,
    "database-unavailable",
    "Database unavailable",
    "PostgreSQL did not answer. Retry later; with the same Idempotency-Key a retry is answered "
    "with the outcome of this request if it went through.",
    headers={"Retry-After": "1"},
)


def install_error_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProblemError)
        return problem_response(request, exc.problem)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        invalid = Problem(422, "validation-error", "Invalid request", "See `errors`.")
        return problem_response(request, replace(invalid, extra={"errors": errors}))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return problem_response(request, Problem(exc.status_code, "http-error", str(exc.detail)))

    async def on_unhandled(request: Request, exc: Exception) -> Response:
        """Answered and logged as the outcome `error` is (services/core/outcomes.py)."""
        error = OUTCOME_NAMES[Outcome.ERROR]
        assert error.problem is not None
        log_context(request).evt = error.evt
        log.exception("unhandled error", extra={"evt": error.evt, "rid": request_id(request)})
        problem = Problem(error.http_status, error.problem.kind, error.problem.title)
        return problem_response(request, problem)

    async def on_database_unavailable(request: Request, exc: Exception) -> Response:
        # Not a bug of ours and not the caller's: say so, and when to come back.
        log_context(request).evt = "database_unavailable"
        log.warning(
            "database unavailable",
            extra={
                "evt": "database_unavailable",
                "rid": request_id(request),
                "error": type(exc).__name__,
            },
        )
        return problem_response(request, DATABASE_UNAVAILABLE)

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(psycopg.OperationalError, on_database_unavailable)
    app.add_exception_handler(PoolTimeout, on_database_unavailable)
    app.add_exception_handler(StoreUnavailable, on_database_unavailable)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unhandled)


UNLOGGED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class RequestContext:
    """Pure ASGI middleware: request id in and out; one log line, metric sample and Sentry report
    per request, from the request's LogContext."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _request_id(scope)
        state = scope.setdefault("state", {})
        state["rid"] = rid
        state[LOG_CONTEXT] = LogContext()
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
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            self._report(scope, rid, status_code, duration_ms, state[LOG_CONTEXT])

    def _report(
        self, scope: Scope, rid: str, status_code: int, duration_ms: float, context: LogContext
    ) -> None:
        route, method = route_template(scope), scope["method"]
        self.metrics.observe_request(route, method, status_code, duration_ms / 1000, context.evt)
        fields = context.fields()
        report_answer(
            evt=context.evt,
            route=route,
            method=method,
            status=status_code,
            duration_ms=duration_ms,
            context={"rid": rid, **fields},
        )
        if scope["path"] not in UNLOGGED_PATHS:
            line = {
                "evt": context.evt or "http_request",
                "rid": rid,
                "method": method,
                "path": scope["path"],
                "status_code": status_code,
                "duration_ms": duration_ms,
            }
            log.info("request", extra=line | fields)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1").strip()
            if 0 < len(candidate) <= 200 and candidate.isprintable():
                return candidate
    return uuid.uuid4().hex
