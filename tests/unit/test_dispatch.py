"""The API's service layer (services/command_api/dispatch.py) against in-memory neighbours: no
Kafka, PostgreSQL or HTTP. Each neighbour is a plain dict-backed stand-in for the pure logic only."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from services.command_api.answers import COMMAND_ID_HEADER
from services.command_api.dispatch import CommandDispatch, IdempotencyKey, Mode, caller_of
from services.command_api.idempotency import KeyHolder
from services.command_api.kafka import OutcomeTimeout, PublishFailed, UndecodableResult
from services.command_api.problems import Problem, ProblemError
from services.core.messages import (
    Actor,
    ChangeStatus,
    CommandResult,
    ConflictType,
    CreateOrder,
    OrderView,
    Outcome,
    Role,
)
from services.core.statuses import OrderStatus

ACTOR = Actor(sub="staff-1", role=Role.AUTHENTICATED)
RESTAURANT = uuid.uuid4()
Command = CreateOrder | ChangeStatus


class Worker:
    """Decides outcomes the way a test wants them."""

    def __init__(self) -> None:
        self.outcome = Outcome.APPLIED

    def apply(self, command: Command) -> CommandResult:
        created = isinstance(command, CreateOrder)
        order = OrderView(
            order_id=command.order_id,
            restaurant_id=RESTAURANT,
            status=OrderStatus.PENDING if created else OrderStatus.ACCEPTED,
            version=1 if created else 2,
            updated_at=datetime.now(UTC),
        )
        return CommandResult(
            command_id=command.command_id,
            order_id=command.order_id,
            command_type=command.type,
            outcome=self.outcome,
            conflict=ConflictType.STALE_VERSION if self.outcome is Outcome.CONFLICT else None,
            order=order if self.outcome in (Outcome.APPLIED, Outcome.CONFLICT) else None,
            processed_at=datetime.now(UTC),
        )


class Pending:
    def __init__(self, bus: MemoryBus, command_id: UUID) -> None:
        self.bus, self.command_id = bus, command_id

    async def wait(self) -> CommandResult:
        if self.bus.undecodable:
            raise UndecodableResult("garbage")
        result = self.bus.store.get(self.command_id)
        if result is None:
            raise OutcomeTimeout(str(self.command_id))
        return result


class MemoryBus:
    """Publishes into a list; the 'worker' applies each command id once (its inbox) and stores
    the outcome at once, unless told to stall."""

    def __init__(self, worker: Worker, store: dict[UUID, CommandResult]) -> None:
        self.worker, self.store = worker, store
        self.published: list[Command] = []
        self.failure: PublishFailed | None = None
        self.stall = False
        self.undecodable = False

    async def publish(self, command: Command) -> None:
        if self.failure is not None:
            raise self.failure
        self.published.append(command)
        if not self.stall and command.command_id not in self.store:
            self.store[command.command_id] = self.worker.apply(command)

    @contextmanager
    def listening(self, command_id: UUID) -> Iterator[Pending]:
        yield Pending(self, command_id)


class MemoryOutcomes:
    def __init__(self, store: dict[UUID, CommandResult]) -> None:
        self.store = store

    async def command_result(self, command_id: UUID, actor: Actor) -> CommandResult | None:
        return self.store.get(command_id)


class MemoryClaims:
    def __init__(self) -> None:
        self.keys: dict[tuple[str, str], KeyHolder] = {}
        self.callers: dict[UUID, str] = {}

    async def claim(
        self,
        *,
        caller: str,
        key: str,
        fingerprint: str,
        command_id: UUID,
        order_id: UUID,
        issued_at: datetime | None = None,
    ) -> KeyHolder | None:
        held = self.keys.get((caller, key))
        if held is not None:
            return held
        self.keys[(caller, key)] = KeyHolder(command_id, order_id, fingerprint, False, issued_at)
        self.callers[command_id] = caller
        return None

    async def release(self, command_id: UUID) -> None:
        self.keys = {k: h for k, h in self.keys.items() if h.command_id != command_id}
        self.callers.pop(command_id, None)

    async def mark_published(self, command_id: UUID) -> None:
        for held, holder in self.keys.items():
            if holder.command_id == command_id:
                self.keys[held] = replace(holder, published=True)

    async def record(self, *, caller: str, command_id: UUID, order_id: UUID) -> None:
        self.callers.setdefault(command_id, caller)

    async def caller_of(self, command_id: UUID) -> str | None:
        return self.callers.get(command_id)


class System:
    def __init__(self) -> None:
        self.store: dict[UUID, CommandResult] = {}
        self.worker = Worker()
        self.bus = MemoryBus(self.worker, self.store)
        self.claims = MemoryClaims()
        self.dispatch = CommandDispatch(self.bus, MemoryOutcomes(self.store), self.claims)


def change(order_id: UUID | None = None, actor: Actor = ACTOR) -> ChangeStatus:
    return ChangeStatus(
        command_id=uuid.uuid4(),
        order_id=order_id or uuid.uuid4(),
        status=OrderStatus.ACCEPTED,
        actor=actor,
        issued_at=datetime.now(UTC),
    )


def create() -> CreateOrder:
    return CreateOrder(
        command_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        restaurant_id=RESTAURANT,
        actor=ACTOR,
        issued_at=datetime.now(UTC),
    )


def run(coroutine: Awaitable[Any]) -> Any:
    async def wrapped() -> Any:
        return await coroutine

    return asyncio.run(wrapped())


def test_an_applied_change_answers_200_with_the_order_and_its_log_context() -> None:
    system = System()
    command = change()
    answer = run(system.dispatch.submit(command, None, Mode.WAIT))
    assert answer.status == 200
    assert answer.body["order_id"] == str(command.order_id)
    assert answer.headers[COMMAND_ID_HEADER] == str(command.command_id)
    assert answer.context.evt == "order_status_success"
    assert answer.context.restaurant_id == str(RESTAURANT)
    assert answer.context.status == "accepted"


def test_a_creation_answers_201_with_its_location() -> None:
    system = System()
    command = create()
    answer = run(system.dispatch.submit(command, None, Mode.WAIT))
    assert answer.status == 201
    assert answer.headers["Location"] == f"/orders/{command.order_id}"


@pytest.mark.parametrize(
    ("outcome", "status", "kind"),
    [
        (Outcome.CONFLICT, 409, "stale-version"),
        (Outcome.FORBIDDEN, 403, "order-status-forbidden"),
        (Outcome.NOT_FOUND, 404, "order-not-found"),
        (Outcome.INVALID, 422, "invalid-command"),
        (Outcome.ERROR, 500, "order-status-exception"),
    ],
)
def test_a_refused_command_answers_its_problem(outcome: Outcome, status: int, kind: str) -> None:
    system = System()
    system.worker.outcome = outcome
    answer = run(system.dispatch.submit(change(), None, Mode.WAIT))
    assert answer.status == status
    assert isinstance(answer.body, Problem)
    body = answer.body.body("/orders/x/status")
    assert body["type"] == f"/problems/{kind}" and body["status"] == status
    assert body["instance"] == "/orders/x/status"
    if outcome is Outcome.CONFLICT:
        assert body["current_version"] == 2


def test_a_retry_with_the_same_key_is_answered_from_the_first_command() -> None:
    system = System()
    key = IdempotencyKey("k-1", "fp")
    first = run(system.dispatch.submit(change(), key, Mode.WAIT))
    again = change()
    second = run(system.dispatch.submit(again, key, Mode.WAIT))
    assert len(system.bus.published) == 1
    assert second.headers[COMMAND_ID_HEADER] == first.headers[COMMAND_ID_HEADER]
    assert second.context.idempotent_replay
    assert second.status == first.status == 200


def test_a_key_reused_for_another_request_is_refused() -> None:
    system = System()
    run(system.dispatch.submit(change(), IdempotencyKey("k", "one"), Mode.WAIT))
    with pytest.raises(ProblemError) as refused:
        run(system.dispatch.submit(change(), IdempotencyKey("k", "two"), Mode.WAIT))
    assert refused.value.problem.status == 422
    assert len(system.bus.published) == 1


def test_respond_async_answers_202_and_the_issuer_can_look_it_up() -> None:
    system = System()
    system.bus.stall = True
    command = change()
    answer = run(system.dispatch.submit(command, None, Mode.RESPOND_ASYNC))
    assert answer.status == 202
    assert answer.headers["Location"] == f"/commands/{command.command_id}"
    pending = run(system.dispatch.status(command.command_id, ACTOR))
    assert pending.body["state"] == "pending"
    system.store[command.command_id] = system.worker.apply(command)
    completed = run(system.dispatch.status(command.command_id, ACTOR))
    assert completed.body["state"] == "completed" and completed.body["status_code"] == 200


def test_someone_else_cannot_see_a_pending_command() -> None:
    system = System()
    system.bus.stall = True
    command = change()
    run(system.dispatch.submit(command, None, Mode.RESPOND_ASYNC))
    other = Actor(sub="staff-2", role=Role.AUTHENTICATED)
    with pytest.raises(ProblemError) as hidden:
        run(system.dispatch.status(command.command_id, other))
    assert hidden.value.problem.status == 404


def test_kafka_refusing_the_command_is_503_nothing_changed_and_the_key_is_held() -> None:
    system = System()
    system.bus.failure = PublishFailed("queue full", definite=True)
    key = IdempotencyKey("k", "fp")
    command = create()
    answer = run(system.dispatch.submit(command, key, Mode.WAIT))
    assert answer.status == 503 and answer.headers["Retry-After"] == "1"
    assert answer.context.evt == "order_status_unavailable"
    assert isinstance(answer.body, Problem) and answer.body.extra["may_be_applied"] is False
    system.bus.failure = None
    retry = create()  # a POST /orders without order_id mints a new one on each attempt
    answered = run(system.dispatch.submit(retry, key, Mode.WAIT))
    assert answered.status == 201
    assert answered.body["order_id"] == str(command.order_id)
    assert [c.command_id for c in system.bus.published] == [command.command_id]


def test_an_unconfirmed_publish_is_503_maybe_applied_and_a_retry_applies_it_once() -> None:
    system = System()
    command = create()
    key = IdempotencyKey("k", "fp")
    system.bus.failure = PublishFailed("no delivery report", definite=False)
    answer = run(system.dispatch.submit(command, key, Mode.WAIT))
    assert answer.status == 503
    assert isinstance(answer.body, Problem) and answer.body.extra["may_be_applied"] is True
    assert "same Idempotency-Key" in answer.body.detail
    system.bus.failure = None
    system.store[command.command_id] = system.worker.apply(command)  # it had been stored
    for _ in range(2):
        retry = run(system.dispatch.submit(create(), key, Mode.WAIT))
        assert retry.status == 201 and retry.body["order_id"] == str(command.order_id)
    assert {c.command_id for c in system.bus.published} == {command.command_id}
    assert len(system.store) == 1


def test_an_unconfirmed_publish_without_a_key_says_where_to_look() -> None:
    system = System()
    system.bus.failure = PublishFailed("no delivery report", definite=False)
    command = change()
    answer = run(system.dispatch.submit(command, None, Mode.WAIT))
    assert answer.status == 503
    assert answer.headers["Location"] == f"/commands/{command.command_id}"
    assert system.claims.callers[command.command_id] == caller_of(ACTOR)


def test_a_claim_never_published_is_published_by_the_retry() -> None:
    system = System()
    key = IdempotencyKey("k", "fp")
    claimed = create()
    run(
        system.claims.claim(
            caller=caller_of(ACTOR),
            key=key.value,
            fingerprint=key.fingerprint,
            command_id=claimed.command_id,
            order_id=claimed.order_id,
        )
    )  # ... and the API died before publishing
    retry = run(system.dispatch.submit(create(), key, Mode.WAIT))
    assert retry.status == 201
    assert retry.headers[COMMAND_ID_HEADER] == str(claimed.command_id)
    assert retry.body["order_id"] == str(claimed.order_id)
    assert all(h.published for h in system.claims.keys.values())


def test_a_republished_claim_keeps_the_issued_at_it_was_claimed_with() -> None:
    """issued_at is the inbox's partition key (migration 0015): every copy of one command id must
    carry the same, or the inbox could store it twice in two partitions."""
    system = System()
    key = IdempotencyKey("k", "fp")
    first = create().model_copy(update={"issued_at": datetime(2026, 1, 1, 23, 59, 59, tzinfo=UTC)})
    system.bus.failure = PublishFailed("no delivery report", definite=False)
    run(system.dispatch.submit(first, key, Mode.WAIT))
    system.bus.failure = None
    run(system.dispatch.submit(create(), key, Mode.WAIT))  # a day later, say
    assert [(c.command_id, c.issued_at) for c in system.bus.published] == [
        (first.command_id, first.issued_at)
    ]


def test_an_undecodable_result_is_answered_from_the_stored_outcome() -> None:
    system = System()
    system.bus.undecodable = True
    answer = run(system.dispatch.submit(change(), None, Mode.WAIT))
    assert answer.status == 200


def test_scoped_tokens_of_one_sub_are_different_callers() -> None:
    first = Actor(sub="s", role=Role.AUTHENTICATED, restaurant_ids=(uuid.uuid4(),))
    second = Actor(sub="s", role=Role.AUTHENTICATED, restaurant_ids=(uuid.uuid4(),))
    assert len({caller_of(first), caller_of(second), caller_of(ACTOR)}) == 3
    assert caller_of(Actor(sub="s", role=Role.AUTHENTICATED)) == "authenticated:s"


def test_no_outcome_in_time_is_504_and_the_command_stays_findable() -> None:
    system = System()
    system.bus.stall = True
    command = change()
    answer = run(system.dispatch.submit(command, None, Mode.WAIT))
    assert answer.status == 504
    assert answer.context.evt == "order_status_timeout"
    assert system.claims.callers[command.command_id] == caller_of(ACTOR)


def test_a_concurrent_retry_waits_for_the_publication_under_way() -> None:
    system = System()
    key = IdempotencyKey("k", "fp")
    release = asyncio.Event()
    publish = system.bus.publish

    async def slow_publish(command: Command) -> None:
        await release.wait()
        await publish(command)

    system.bus.publish = slow_publish  # type: ignore[method-assign]

    async def both() -> list[Any]:
        first = asyncio.create_task(system.dispatch.submit(create(), key, Mode.WAIT))
        await asyncio.sleep(0)
        second = asyncio.create_task(system.dispatch.submit(create(), key, Mode.WAIT))
        await asyncio.sleep(0.01)
        release.set()
        return list(await asyncio.gather(first, second))

    answers = run(both())
    assert [a.status for a in answers] == [201, 201]
    assert len(system.bus.published) == 1


def test_a_retry_whose_claim_returns_first_waits_for_the_claimers_publication() -> None:
    """The claimer's claim is stored, but its round trip comes back after the retry's: the retry
    sees an unpublished claim before the claimer resumes, and must not send a copy."""
    system = System()
    key = IdempotencyKey("k", "fp")
    claim = system.claims.claim
    stored = asyncio.Event()
    resume = asyncio.Event()

    async def late_answer(**kwargs: Any) -> KeyHolder | None:
        holder = await claim(**kwargs)
        if holder is None:  # the claimer: stored now, answered later
            stored.set()
            await resume.wait()
        return holder

    system.claims.claim = late_answer  # type: ignore[method-assign]

    async def both() -> list[Any]:
        first = asyncio.create_task(system.dispatch.submit(create(), key, Mode.WAIT))
        await stored.wait()
        second = asyncio.create_task(system.dispatch.submit(create(), key, Mode.WAIT))
        await asyncio.sleep(0.01)
        resume.set()
        return list(await asyncio.gather(first, second))

    answers = run(both())
    assert [a.status for a in answers] == [201, 201]
    assert len(system.bus.published) == 1
