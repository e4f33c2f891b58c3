"""The one path every command takes: Idempotency-Key, publish, then wait for the outcome (or answer
202 at once under `Prefer: respond-async`), and the mapping of outcomes to HTTP answers."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from services.command_api.db import OrderReads
from services.command_api.idempotency import CommandRequests, fingerprint, valid_key
from services.command_api.kafka import CommandBus, OutcomeTimeout, PublishFailed
from services.command_api.problems import PROBLEM_JSON, ProblemError
from services.core.jsonlog import OUTCOME_EVENTS
from services.core.messages import Actor, ChangeStatus, CommandResult, CreateOrder, Outcome

COMMAND_ID_HEADER = "X-Command-ID"
"""On every answer to a command: the id to quote in GET /commands/{id}, logs and support requests."""


def caller_of(actor: Actor) -> str:
    return f"{actor.role.value}:{actor.sub}"


class CommandDispatch:
    def __init__(self, bus: CommandBus, reads: OrderReads, requests: CommandRequests) -> None:
        self.bus = bus
        self.reads = reads
        self.requests = requests

    async def submit(
        self, request: Request, command: CreateOrder | ChangeStatus, body: BaseModel
    ) -> Response:
        state = request.state
        state.command_id, state.order_id = str(command.command_id), str(command.order_id)
        caller = caller_of(command.actor)
        respond_async = "respond-async" in request.headers.get("prefer", "").lower()
        key = _idempotency_key(request)
        if key is not None:
            holder = await self.requests.claim(
                caller=caller,
                key=key,
                fingerprint=fingerprint(request.method, request.url.path, body.model_dump_json()),
                command_id=command.command_id,
                order_id=command.order_id,
            )
            if holder is not None:
                return await self._replay(
                    request,
                    holder.command_id,
                    holder.fingerprint,
                    body,
                    respond_async,
                    created=isinstance(command, CreateOrder),
                    actor=command.actor,
                )
        elif respond_async:
            await self.requests.record(
                caller=caller, command_id=command.command_id, order_id=command.order_id
            )
        try:
            if respond_async:
                await self.bus.publish(command)
                return accepted_response(command.command_id)
            result = await self.bus.execute(command)
        except PublishFailed:
            if key is not None or respond_async:
                await self.requests.release(command.command_id)
            state.evt = "order_status_unavailable"
            raise ProblemError(
                503,
                "unavailable",
                "Command bus unavailable",
                "Kafka did not accept the command; nothing was changed. Retry later.",
                headers={"Retry-After": "1"},
            ) from None
        except OutcomeTimeout:
            if key is None:
                await self.requests.record(
                    caller=caller, command_id=command.command_id, order_id=command.order_id
                )
            result = await self._stored_or_timeout(request, command.command_id, command.actor)
        return outcome_response(request, result)

    async def _replay(
        self,
        request: Request,
        command_id: UUID,
        held_fingerprint: str,
        body: BaseModel,
        respond_async: bool,
        *,
        created: bool,
        actor: Actor,
    ) -> Response:
        """A retry with a known key: the first request's answer, never a second command."""
        if held_fingerprint != fingerprint(
            request.method, request.url.path, body.model_dump_json()
        ):
            raise ProblemError(
                422,
                "idempotency-key-reused",
                "Idempotency-Key reused",
                "This key was used for a different request.",
            )
        request.state.command_id = str(command_id)
        request.state.idempotent_replay = True
        if respond_async:
            return accepted_response(command_id)
        try:
            result = await self.bus.await_outcome(
                command_id, lambda: self.reads.command_result(command_id, actor)
            )
        except OutcomeTimeout:
            result = await self._stored_or_timeout(request, command_id, actor)
        return outcome_response(request, result)

    async def _stored_or_timeout(
        self, request: Request, command_id: UUID, actor: Actor
    ) -> CommandResult:
        stored = await self.reads.command_result(command_id, actor)
        if stored is None:
            request.state.evt = "order_status_timeout"
            raise ProblemError(
                504,
                "outcome-timeout",
                "Outcome not known yet",
                "The command was accepted and will be applied; look its outcome up later.",
                command_id=command_id,
                headers={"Location": f"/commands/{command_id}", COMMAND_ID_HEADER: str(command_id)},
            )
        return stored

    async def status(self, command_id: UUID, actor: Actor) -> JSONResponse:
        """GET /commands/{id}: pending until the worker's outcome is known, then that outcome."""
        # Row-level security shows the outcome to its issuer and to whoever may act for its order.
        result = await self.reads.command_result(command_id, actor)
        caller = await self.requests.caller_of(command_id)
        mine = caller == caller_of(actor)
        if result is None:
            if not mine:
                raise ProblemError(404, "command-not-found", "Command not found")
            return JSONResponse(
                {"command_id": str(command_id), "state": "pending"}, headers={"Retry-After": "1"}
            )
        status, body, _ = outcome_reply(result, f"/commands/{command_id}")
        return JSONResponse(
            {
                "command_id": str(command_id),
                "state": "completed",
                "outcome": result.outcome.value,
                "status_code": status,
                "response": body,
            }
        )


def _idempotency_key(request: Request) -> str | None:
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
    return key


def accepted_response(command_id: UUID) -> JSONResponse:
    location = f"/commands/{command_id}"
    return JSONResponse(
        {"command_id": str(command_id), "state": "pending", "location": location},
        status_code=202,
        headers={
            "Location": location,
            "Preference-Applied": "respond-async",
            COMMAND_ID_HEADER: str(command_id),
        },
    )


def outcome_reply(
    result: CommandResult, instance: str
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, body and headers answering `result`: the same whatever route asks."""
    order = result.order
    if result.outcome is Outcome.APPLIED:
        assert order is not None
        created = result.command_type == "create_order"
        body = order.model_dump(mode="json")  # as GET /orders/{id} serialises it
        return (
            (201, body, {"Location": f"/orders/{order.order_id}"}) if created else (200, body, {})
        )
    problem: dict[str, Any] = {
        "instance": instance,
        "detail": result.detail,
        "command_id": str(result.command_id),
    }
    if result.outcome is Outcome.CONFLICT:
        kind = result.conflict.value if result.conflict else "conflict"
        problem |= {"type": f"/problems/{kind}", "title": "Order status conflict", "status": 409}
        if order is not None:
            problem |= {"current_status": order.status.value, "current_version": order.version}
    elif result.outcome is Outcome.FORBIDDEN:
        problem |= {"type": "/problems/order-status-forbidden", "title": "Forbidden", "status": 403}
    elif result.outcome is Outcome.NOT_FOUND:
        problem |= {"type": "/problems/order-not-found", "title": "Order not found", "status": 404}
    elif result.outcome is Outcome.INVALID:
        problem |= {"type": "/problems/invalid-command", "title": "Invalid command", "status": 422}
    else:
        problem |= {
            "type": "/problems/order-status-exception",
            "title": "Internal error",
            "status": 500,
            "detail": "The command could not be applied.",
        }
    return int(problem["status"]), problem, {}


def outcome_response(request: Request, result: CommandResult) -> Response:
    request.state.evt = OUTCOME_EVENTS[result.outcome]
    if result.order is not None:
        request.state.restaurant_id = str(result.order.restaurant_id)
        request.state.status = result.order.status.value
    status, body, headers = outcome_reply(result, request.url.path)
    media_type = "application/json" if status < 400 else PROBLEM_JSON
    headers[COMMAND_ID_HEADER] = str(result.command_id)
    return JSONResponse(body, status_code=status, headers=headers, media_type=media_type)
