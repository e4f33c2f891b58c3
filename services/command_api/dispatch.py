"""The one path every command takes, free of HTTP: Idempotency-Key, publish, then wait for the
outcome (or answer 202 at once when the caller asked to respond asynchronously). A status change
whose conflict the committed order already fixes for good (an `expected_version` below the order's,
or a final order) is answered 409 before any of that (`_settled_refusal`, early_refusals.py; why
that is safe: docs/delivery-guarantees.md).

`CommandDispatch` talks to its neighbours through the protocols below, so its tests run against
in-memory ones (tests/unit/test_dispatch.py); the composition root (app.py) passes the Kafka bus
and the PostgreSQL stores."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol
from uuid import UUID

from services.command_api.answers import (
    Answer,
    LogContext,
    accepted,
    command_state,
    early_conflict,
    outcome_answer,
    outcome_reply,
    outcome_timeout,
    unavailable,
)
from services.command_api.db import StoreUnavailable
from services.command_api.early_refusals import KnownOrders, settled_refusal
from services.command_api.idempotency import KeyHolder
from services.command_api.kafka import OutcomeTimeout, PublishFailed, UndecodableResult
from services.command_api.problems import ProblemError
from services.core.messages import Actor, ChangeStatus, CommandResult, CreateOrder, OrderView

__all__ = ["CommandDispatch", "IdempotencyKey", "Mode", "caller_of", "outcome_reply"]

Command = CreateOrder | ChangeStatus

log = logging.getLogger(__name__)


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


class PendingOutcome(Protocol):
    async def wait(self) -> CommandResult:
        """Raises OutcomeTimeout, or UndecodableResult when the result could not be read."""
        ...


class Bus(Protocol):
    async def publish(self, command: Command) -> None:
        """Raises PublishFailed."""
        ...

    def listening(self, command_id: UUID) -> AbstractContextManager[PendingOutcome]: ...


class Outcomes(Protocol):
    async def command_result(self, command_id: UUID, actor: Actor) -> CommandResult | None: ...


class CurrentOrders(Protocol):
    async def order(self, order_id: UUID, actor: Actor) -> OrderView | None:
        """The committed order as `actor` may see it (None: absent or not theirs). Raises
        StoreUnavailable."""
        ...


class Claims(Protocol):
    async def claim(
        self,
        *,
        caller: str,
        key: str,
        fingerprint: str,
        command_id: UUID,
        order_id: UUID,
        issued_at: datetime | None = None,
    ) -> KeyHolder | None: ...

    async def release(self, command_id: UUID) -> None: ...

    async def mark_published(self, command_id: UUID) -> None: ...

    async def record(self, *, caller: str, command_id: UUID, order_id: UUID) -> None: ...

    async def caller_of(self, command_id: UUID) -> str | None: ...


def caller_of(actor: Actor) -> str:
    """Whom Idempotency-Keys and pending lookups belong to: `role:sub`, and for a token narrowed
    to restaurants, those too (one person's tokens for different restaurants share nothing). A
    newline separates them: a token's `sub` cannot hold one (auth.actor_of), so no two callers collide."""
    caller = f"{actor.role.value}:{actor.sub}"
    if actor.restaurant_ids:
        caller += "\n" + ",".join(sorted(str(r) for r in actor.restaurant_ids))
    return caller


class CommandDispatch:
    def __init__(
        self,
        bus: Bus,
        outcomes: Outcomes,
        claims: Claims,
        *,
        orders: CurrentOrders | None = None,
        known: KnownOrders | None = None,
    ) -> None:
        self.bus = bus
        self.outcomes = outcomes
        self.claims = claims
        self.orders = orders
        """Where a settled conflict is confirmed before publishing; None: nothing is refused early
        (every command goes to the worker)."""
        self.known = known if known is not None else KnownOrders()
        """What was seen of each order answered here: which requests are worth the read."""
        self._publishing: dict[UUID, asyncio.Future[bool]] = {}
        """Keyed commands this process is publishing now: a concurrent retry waits for the
        publication instead of sending a copy (another process's retry sends one: harmless)."""

    async def submit(self, command: Command, key: IdempotencyKey | None, mode: Mode) -> Answer:
        if key is None and mode is Mode.WAIT and isinstance(command, ChangeStatus):
            refusal = await self._settled_refusal(command)
            if refusal is not None:
                return refusal
        caller = caller_of(command.actor)
        if key is not None:
            # Announced before the claim's round trip: a concurrent retry whose claim returns
            # first (before this coroutine resumes) must find the publication under way.
            flight = self._announce(command.command_id)
            try:
                holder = await self.claims.claim(
                    caller=caller,
                    key=key.value,
                    fingerprint=key.fingerprint,
                    command_id=command.command_id,
                    order_id=command.order_id,
                    issued_at=command.issued_at,
                )
            except BaseException:
                self._settle(command.command_id, flight, published=False)
                raise
            if holder is not None:
                self._settle(command.command_id, flight, published=False)
                return await self._replay(holder, key, command, mode)
        elif mode is Mode.RESPOND_ASYNC:
            await self._record(command)
        return await self._send(command, mode, keyed=key is not None)

    async def _send(
        self, command: Command, mode: Mode, *, keyed: bool, replay: bool = False
    ) -> Answer:
        """Publishes `command` and answers with its outcome (or 202, 503, 504)."""
        context = LogContext(
            command_id=str(command.command_id),
            order_id=str(command.order_id),
            idempotent_replay=replay,
        )
        with self.bus.listening(command.command_id) as outcome:
            try:
                await self._publish(command, keyed=keyed)
            except PublishFailed as failed:
                return await self._not_published(command, failed, mode, keyed=keyed)
            if mode is Mode.RESPOND_ASYNC:
                return accepted(command.command_id, context)
            try:
                return self._answer(await outcome.wait(), replay=replay)
            except (OutcomeTimeout, UndecodableResult):
                if not keyed:
                    await self._quietly(self._record(command))
                return await self._stored_or_timeout(command.command_id, command.actor, context)

    def _answer(self, result: CommandResult, *, replay: bool) -> Answer:
        """The answer to a known outcome; its order's state is remembered (KnownOrders)."""
        self.known.observe(result.order)
        return outcome_answer(result, replay=replay)

    async def _settled_refusal(self, command: ChangeStatus) -> Answer | None:
        """409 without publishing, when this process has seen the order final or past the expected
        version and PostgreSQL's committed row, read as the caller, confirms that the conflict is
        settled: the worker would answer this same conflict whenever it got the command. Anything
        else (nothing seen, not visible to the caller, PostgreSQL away) goes to the worker."""
        if self.orders is None or not self.known.worth_checking(
            command.order_id, command.expected_version
        ):
            return None
        try:
            order = await self.orders.order(command.order_id, command.actor)
        except StoreUnavailable:
            return None
        if order is None:  # absent or another restaurant's: the worker answers 404 or 403
            return None
        self.known.observe(order)
        refusal = settled_refusal(order, command)
        return early_conflict(refusal) if refusal is not None else None

    async def _publish(self, command: Command, *, keyed: bool) -> None:
        """Publishes; a keyed command's claim then records that Kafka has it."""
        if not keyed:
            await self.bus.publish(command)
            return
        flight = self._publishing.get(command.command_id) or self._announce(command.command_id)
        published = False
        try:
            await self.bus.publish(command)
            await self._quietly(self.claims.mark_published(command.command_id))
            published = True
        finally:
            self._settle(command.command_id, flight, published=published)

    def _announce(self, command_id: UUID) -> asyncio.Future[bool]:
        """This process is about to publish `command_id` (a keyed command)."""
        flight: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        return self._publishing.setdefault(command_id, flight)

    def _settle(self, command_id: UUID, flight: asyncio.Future[bool], *, published: bool) -> None:
        if not flight.done():
            flight.set_result(published)
        if self._publishing.get(command_id) is flight:
            del self._publishing[command_id]

    async def _published_meanwhile(self, holder: KeyHolder) -> bool:
        """Whether the claim's command is published, waiting for this process's own publication
        of it if one is under way."""
        if holder.published:
            return True
        flight = self._publishing.get(holder.command_id)
        return flight is not None and await asyncio.shield(flight)

    async def _not_published(
        self, command: Command, failed: PublishFailed, mode: Mode, *, keyed: bool
    ) -> Answer:
        """503, saying whether the command may still be applied. A key stays held either way: a
        retry with it publishes this same command, so it is never applied twice."""
        context = LogContext(command_id=str(command.command_id), order_id=str(command.order_id))
        if failed.definite and not keyed and mode is Mode.RESPOND_ASYNC:
            await self.claims.release(command.command_id)
        elif not failed.definite and not keyed:
            await self._quietly(self._record(command))
        return unavailable(command.command_id, context, definite=failed.definite, keyed=keyed)

    async def _record(self, command: Command) -> None:
        """Remembers who issued `command`, so its issuer can look it up while it is pending."""
        await self.claims.record(
            caller=caller_of(command.actor),
            command_id=command.command_id,
            order_id=command.order_id,
        )

    @staticmethod
    async def _quietly(bookkeeping: Awaitable[None]) -> None:
        """Bookkeeping after the command was published: PostgreSQL failing here must not turn
        the answer into 'nothing happened' (a retry with the key republishes, harmlessly)."""
        try:
            await bookkeeping
        except StoreUnavailable:
            log.warning("bookkeeping skipped: database unavailable", exc_info=True)

    async def _replay(
        self, holder: KeyHolder, key: IdempotencyKey, command: Command, mode: Mode
    ) -> Answer:
        """A retry with a known key: the first request's answer, never a second command. A claim
        not known to be published is published again, as the same command (same ids)."""
        if holder.fingerprint != key.fingerprint:
            raise ProblemError(
                422,
                "idempotency-key-reused",
                "Idempotency-Key reused",
                "This key was used for a different request.",
            )
        if not await self._published_meanwhile(holder):
            # As first issued: issued_at is the inbox's partition key (migration 0015).
            first = {"issued_at": holder.issued_at} if holder.issued_at is not None else {}
            claimed = command.model_copy(
                update={"command_id": holder.command_id, "order_id": holder.order_id, **first}
            )
            return await self._send(claimed, mode, keyed=True, replay=True)
        command_id = holder.command_id
        context = LogContext(command_id=str(command_id), idempotent_replay=True)
        if mode is Mode.RESPOND_ASYNC:
            return accepted(command_id, context)
        with self.bus.listening(command_id) as outcome:
            stored = await self.outcomes.command_result(command_id, command.actor)
            if stored is not None:
                return self._answer(stored, replay=True)
            try:
                return self._answer(await outcome.wait(), replay=True)
            except (OutcomeTimeout, UndecodableResult):
                return await self._stored_or_timeout(command_id, command.actor, context)

    async def _stored_or_timeout(
        self, command_id: UUID, actor: Actor, context: LogContext
    ) -> Answer:
        try:
            stored = await self.outcomes.command_result(command_id, actor)
        except StoreUnavailable:
            stored = None  # published: the outcome will come; 504 says so, 503 would not
        if stored is None:
            return outcome_timeout(command_id, context)
        return self._answer(stored, replay=context.idempotent_replay)

    async def status(self, command_id: UUID, actor: Actor) -> Answer:
        """GET /commands/{id}: pending until the worker's outcome is known, then that outcome."""
        # Row-level security shows the outcome to its issuer and to whoever may act for its order.
        result = await self.outcomes.command_result(command_id, actor)
        if result is None and await self.claims.caller_of(command_id) != caller_of(actor):
            raise ProblemError(404, "command-not-found", "Command not found")
        return command_state(command_id, result)
