"""The one path every command takes, free of HTTP: Idempotency-Key, publish, then wait for the
outcome (or answer 202 at once when the caller asked to respond asynchronously).

`CommandDispatch` talks to its neighbours through the protocols below, so its tests run against
in-memory ones (tests/unit/test_dispatch.py); the composition root (app.py) passes the Kafka bus
and the PostgreSQL stores."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol
from uuid import UUID

from services.command_api.answers import (
    Answer,
    LogContext,
    accepted,
    command_state,
    outcome_answer,
    outcome_reply,
    outcome_timeout,
    unavailable,
)
from services.command_api.idempotency import KeyHolder
from services.command_api.kafka import OutcomeTimeout, PublishFailed
from services.command_api.problems import ProblemError
from services.core.messages import Actor, ChangeStatus, CommandResult, CreateOrder

__all__ = ["CommandDispatch", "IdempotencyKey", "Mode", "caller_of", "outcome_reply"]

Command = CreateOrder | ChangeStatus


class Mode(StrEnum):
    WAIT = "wait"
    """Answer with the outcome (or 504 if it does not come within the reply timeout)."""
    RESPOND_ASYNC = "respond-async"
    """Answer 202 once Kafka has the command; the outcome is at GET /commands/{id}."""


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    value: str
    fingerprint: str
    """Of the request as the caller meant it (method, canonical target, body): a retry must match."""


class Bus(Protocol):
    async def publish(self, command: Command) -> None: ...

    async def execute(self, command: Command) -> CommandResult: ...

    async def await_outcome(
        self, command_id: UUID, stored: Callable[[], Awaitable[CommandResult | None]]
    ) -> CommandResult: ...


class Outcomes(Protocol):
    async def command_result(self, command_id: UUID, actor: Actor) -> CommandResult | None: ...


class Claims(Protocol):
    async def claim(
        self, *, caller: str, key: str, fingerprint: str, command_id: UUID, order_id: UUID
    ) -> KeyHolder | None: ...

    async def release(self, command_id: UUID) -> None: ...

    async def record(self, *, caller: str, command_id: UUID, order_id: UUID) -> None: ...

    async def caller_of(self, command_id: UUID) -> str | None: ...


def caller_of(actor: Actor) -> str:
    return f"{actor.role.value}:{actor.sub}"


class CommandDispatch:
    def __init__(self, bus: Bus, outcomes: Outcomes, claims: Claims) -> None:
        self.bus = bus
        self.outcomes = outcomes
        self.claims = claims

    async def submit(self, command: Command, key: IdempotencyKey | None, mode: Mode) -> Answer:
        context = LogContext(command_id=str(command.command_id), order_id=str(command.order_id))
        caller = caller_of(command.actor)
        if key is not None:
            holder = await self.claims.claim(
                caller=caller,
                key=key.value,
                fingerprint=key.fingerprint,
                command_id=command.command_id,
                order_id=command.order_id,
            )
            if holder is not None:
                return await self._replay(holder, key, command.actor, mode)
        elif mode is Mode.RESPOND_ASYNC:
            await self._record(caller, command)
        try:
            if mode is Mode.RESPOND_ASYNC:
                await self.bus.publish(command)
                return accepted(command.command_id, context)
            result = await self.bus.execute(command)
        except PublishFailed:
            if key is not None or mode is Mode.RESPOND_ASYNC:
                await self.claims.release(command.command_id)
            return unavailable(context)
        except OutcomeTimeout:
            if key is None:
                await self._record(caller, command)
            return await self._stored_or_timeout(command.command_id, command.actor, context)
        return outcome_answer(result)

    async def _record(self, caller: str, command: Command) -> None:
        """Remembers who issued `command`, so its issuer can look it up while it is pending."""
        await self.claims.record(
            caller=caller, command_id=command.command_id, order_id=command.order_id
        )

    async def _replay(
        self, holder: KeyHolder, key: IdempotencyKey, actor: Actor, mode: Mode
    ) -> Answer:
        """A retry with a known key: the first request's answer, never a second command."""
        if holder.fingerprint != key.fingerprint:
            raise ProblemError(
                422,
                "idempotency-key-reused",
                "Idempotency-Key reused",
                "This key was used for a different request.",
            )
        command_id = holder.command_id
        context = LogContext(command_id=str(command_id), idempotent_replay=True)
        if mode is Mode.RESPOND_ASYNC:
            return accepted(command_id, context)
        try:
            result = await self.bus.await_outcome(
                command_id, lambda: self.outcomes.command_result(command_id, actor)
            )
        except OutcomeTimeout:
            return await self._stored_or_timeout(command_id, actor, context)
        return outcome_answer(result, replay=True)

    async def _stored_or_timeout(
        self, command_id: UUID, actor: Actor, context: LogContext
    ) -> Answer:
        stored = await self.outcomes.command_result(command_id, actor)
        if stored is None:
            return outcome_timeout(command_id, context)
        return outcome_answer(stored, replay=context.idempotent_replay)

    async def status(self, command_id: UUID, actor: Actor) -> Answer:
        """GET /commands/{id}: pending until the worker's outcome is known, then that outcome."""
        # Row-level security shows the outcome to its issuer and to whoever may act for its order.
        result = await self.outcomes.command_result(command_id, actor)
        if result is None and await self.claims.caller_of(command_id) != caller_of(actor):
            raise ProblemError(404, "command-not-found", "Command not found")
        return command_state(command_id, result)
