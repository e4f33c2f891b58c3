"""What the API answers, free of any web framework: an `Answer` is a status, a body (or a
`Problem`), headers, and the typed context the request's log line, metrics and Sentry report carry.
The HTTP layer only renders it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID

from services.command_api.problems import Problem
from services.core.messages import CommandResult, Outcome
from services.core.outcomes import OUTCOME_NAMES, TIMEOUT_EVENT, UNAVAILABLE_EVENT

COMMAND_ID_HEADER = "X-Command-ID"
"""On every answer to a command: the id to quote in GET /commands/{id}, logs and support requests."""


@dataclass(slots=True)
class LogContext:
    """What a request's log line says beyond method, path and status; `evt` also picks the metric
    outcome and the Sentry message."""

    evt: str | None = None
    command_id: str | None = None
    order_id: str | None = None
    restaurant_id: str | None = None
    status: str | None = None
    idempotent_replay: bool = False

    def fields(self) -> dict[str, Any]:
        """The log line's extra fields (the ones that are known)."""
        named = {
            "command_id": self.command_id,
            "order_id": self.order_id,
            "restaurant_id": self.restaurant_id,
            "status": self.status,
        }
        fields: dict[str, Any] = {k: v for k, v in named.items() if v is not None}
        if self.idempotent_replay:
            fields["idempotent_replay"] = True
        return fields


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Mapping[str, Any] | Problem
    headers: Mapping[str, str] = field(default_factory=dict)
    context: LogContext = field(default_factory=LogContext)


def outcome_problem(result: CommandResult) -> Problem:
    """The problem+json of an outcome the worker refused (services/core/outcomes.py names it)."""
    names = OUTCOME_NAMES[result.outcome]
    assert names.problem is not None, f"{result.outcome} is no refusal"
    of = names.problem
    extra: dict[str, Any] = {"command_id": result.command_id}
    kind, detail = of.kind, result.detail
    if result.outcome is Outcome.CONFLICT:
        kind = result.conflict.value if result.conflict else of.kind
        if result.order is not None:
            extra |= {"current_status": result.order.status.value}
            extra |= {"current_version": result.order.version}
    elif result.outcome is Outcome.ERROR:
        detail = "The command could not be applied."
    return Problem(names.http_status, kind, of.title, detail, extra)


def outcome_reply(
    result: CommandResult, instance: str
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, body and headers answering `result`: the same whatever route asks."""
    order = result.order
    if result.outcome is Outcome.APPLIED:
        assert order is not None
        body = order.model_dump(mode="json")  # as GET /orders/{id} serialises it
        if result.command_type == "create_order":
            return 201, body, {"Location": f"/orders/{order.order_id}"}
        return OUTCOME_NAMES[Outcome.APPLIED].http_status, body, {}
    problem = outcome_problem(result)
    return problem.status, problem.body(instance), {}


def outcome_answer(result: CommandResult, *, replay: bool = False) -> Answer:
    """The answer to a command whose outcome is known."""
    context = LogContext(
        evt=OUTCOME_NAMES[result.outcome].evt,
        command_id=str(result.command_id),
        order_id=str(result.order_id),
        idempotent_replay=replay,
    )
    if result.order is not None:
        context.restaurant_id = str(result.order.restaurant_id)
        context.status = result.order.status.value
    headers = {COMMAND_ID_HEADER: str(result.command_id)}
    if result.outcome is Outcome.APPLIED:
        status, body, more = outcome_reply(result, "")
        return Answer(status, body, headers | more, context)
    return Answer(outcome_problem(result).status, outcome_problem(result), headers, context)


def accepted(command_id: UUID, context: LogContext) -> Answer:
    location = f"/commands/{command_id}"
    return Answer(
        202,
        {"command_id": str(command_id), "state": "pending", "location": location},
        {
            "Location": location,
            "Preference-Applied": "respond-async",
            COMMAND_ID_HEADER: str(command_id),
        },
        context,
    )


def unavailable(command_id: UUID, context: LogContext, *, definite: bool, keyed: bool) -> Answer:
    """503: Kafka did not confirm the command. The body says what the caller may assume:
    `may_be_applied` false (it never reached Kafka; the answer names no command) or true (it may
    have been stored; the answer names it, so the caller can look it up)."""
    context.evt = UNAVAILABLE_EVENT
    if definite:
        detail = "Kafka did not accept the command; nothing was changed. Retry later."
    else:
        detail = "Kafka did not confirm the command in time; it may still be applied."
    if keyed:
        detail += (
            " Retry with the same Idempotency-Key: the retry sends this same command, answers "
            "with its outcome and never applies it twice."
        )
    elif not definite:
        detail += f" Look its outcome up at /commands/{command_id} before sending it again."
    if definite:  # names no command: none was accepted
        problem = Problem(503, "unavailable", "Command bus unavailable", detail)
        return Answer(
            503, replace(problem, extra={"may_be_applied": False}), {"Retry-After": "1"}, context
        )
    extra = {"command_id": command_id, "may_be_applied": True}
    problem = Problem(503, "unavailable", "Command bus unavailable", detail, extra)
    headers = {"Retry-After": "1", COMMAND_ID_HEADER: str(command_id)}
    if not keyed:
        headers["Location"] = f"/commands/{command_id}"
    return Answer(503, problem, headers, context)


def outcome_timeout(command_id: UUID, context: LogContext) -> Answer:
    context.evt = TIMEOUT_EVENT
    detail = "The command was accepted and will be applied; look its outcome up later."
    extra = {"command_id": command_id}
    problem = Problem(504, "outcome-timeout", "Outcome not known yet", detail, extra)
    headers = {"Location": f"/commands/{command_id}", COMMAND_ID_HEADER: str(command_id)}
    return Answer(504, problem, headers, context)


def command_state(command_id: UUID, result: CommandResult | None) -> Answer:
    """GET /commands/{id}: pending until the worker's outcome is known, then that outcome."""
    if result is None:
        pending = {"command_id": str(command_id), "state": "pending"}
        return Answer(200, pending, {"Retry-After": "1"})
    status, response, _ = outcome_reply(result, f"/commands/{command_id}")
    body: dict[str, Any] = {
        "command_id": str(command_id),
        "state": "completed",
        "outcome": result.outcome.value,
        "status_code": status,
        "response": response,
    }
    return Answer(200, body)
