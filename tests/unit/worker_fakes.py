"""In-memory neighbours of the worker's steps: a consumer that records seeks and pauses, a unit of
work over dicts, a publisher that records transactions. For tests of pure step logic only."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from services.core.decision import Decision, OrderState
from services.core.messages import Actor, ChangeStatus, CreateOrder
from services.status_worker.batch import DeadLetter, Incoming, Processed
from services.status_worker.bulk import Sightings, Writes
from services.status_worker.repository import Sighting


class FakeConsumer:
    def __init__(self, committed: dict[tuple[str, int], int] | None = None) -> None:
        self.committed_offsets = committed if committed is not None else {}
        self.seeks: list[tuple[str, int, int]] = []
        self.failing_seeks = False
        self.paused: list[tuple[str, int]] = []
        self.resumed = 0
        self.queue: list[Message] = []

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic, tp.partition, self.committed_offsets.get((tp.topic, tp.partition), -1001)
            )
            for tp in partitions
        ]

    def seek(self, tp: TopicPartition) -> None:
        if self.failing_seeks:
            raise KafkaException(KafkaError(KafkaError._STATE, "Erroneous state"))
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("unit.commands", 0)]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused += [(tp.topic, tp.partition) for tp in partitions]

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.resumed += 1

    def poll(self, timeout: float) -> Message | None:
        return self.queue.pop(0) if self.queue else None

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        taken, self.queue = self.queue[:num_messages], self.queue[num_messages:]
        return taken


@dataclass
class FakeRepository:
    """Orders and the inbox in dicts; `refuse` names commands whose writes the 'database' refuses."""

    orders: dict[UUID, OrderState] = field(default_factory=dict)
    inbox: dict[UUID, Processed] = field(default_factory=dict)
    invalid: dict[UUID, DeadLetter] = field(default_factory=dict)
    events: list[tuple[UUID, int]] = field(default_factory=list)
    analytics: list[str] = field(default_factory=list)
    refuse: set[UUID] = field(default_factory=set)
    forbidden: set[UUID | None] = field(default_factory=set)
    """Restaurants the caller may not create orders for."""

    def stored_outcomes(
        self, commands: Sequence[CreateOrder | ChangeStatus]
    ) -> dict[UUID, Processed]:
        ids = [command.command_id for command in commands]
        return {i: self.inbox[i] for i in ids if i in self.inbox}

    def lookup(self, order_id: UUID, creating_for: UUID | None = None) -> Sighting:
        return Sighting(self.orders.get(order_id), creating_for not in self.forbidden)

    def insert_order(self, order: OrderState, now: datetime) -> None:
        self.orders[order.order_id] = order

    def update_status(self, order: OrderState, now: datetime) -> Callable[[], int]:
        self.orders[order.order_id] = order
        return lambda: 1

    def insert_status_event(self, command: ChangeStatus, decision: Decision, now: datetime) -> None:
        if command.command_id in self.refuse:
            raise ValueError("refused by the fake database")
        assert decision.order is not None
        self.events.append((command.order_id, decision.order.version))

    def record_analytics(
        self, kind: str, command: CreateOrder | ChangeStatus, decision: Decision, now: datetime
    ) -> None:
        self.analytics.append(kind)

    def record_outcome(self, item: Incoming, processed: Processed, now: datetime) -> None:
        self.inbox[item.command.command_id] = processed

    def sightings(self, order_ids: list[UUID], creating_for: list[UUID]) -> Sightings:
        visible = {i: self.orders[i] for i in order_ids if i in self.orders}
        allowed = {r: r not in self.forbidden for r in creating_for}
        return Sightings(visible, frozenset(visible), allowed)

    def write_changes(self, writes: Writes, now: datetime) -> Callable[[], None]:
        for order in writes.created:
            self.orders[order.order_id] = order
        for command, decision in writes.changes:
            self.insert_status_event(command, decision, now)
        for order, before in writes.updated.values():
            assert self.orders[order.order_id].version == before
            self.orders[order.order_id] = order
        return lambda: None

    def record_outcomes(self, done: list[tuple[Incoming, Processed]], now: datetime) -> None:
        for item, processed in done:
            self.record_outcome(item, processed, now)

    def record_analytics_rows(self, rows: list[dict[str, Any]], now: datetime) -> None:
        self.analytics += [row["type"] for row in rows]

    def record_invalid(self, letter: DeadLetter, now: datetime) -> None:
        assert letter.result is not None
        self.invalid.setdefault(letter.result.command_id, letter)


class FakeUnitOfWork:
    """Commits by copying; an exception leaves the repository as it was (a rolled-back batch)."""

    def __init__(self, repository: FakeRepository) -> None:
        self.committed = repository
        self.repository = repository
        self.acted_as: list[str] = []
        self.commits = 0

    def __enter__(self) -> FakeUnitOfWork:
        self._snapshot = _copy(self.committed)
        return self

    def __exit__(self, kind: Any, *rest: Any) -> None:
        if kind is not None:
            _restore(self.committed, self._snapshot)
        else:
            self.commits += 1

    @contextlib.contextmanager
    def acting_as(self, actor: Actor) -> Iterator[None]:
        self.acted_as.append(actor.sub)
        yield

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        snapshot = _copy(self.repository)
        try:
            yield
        except Exception:
            _restore(self.repository, snapshot)
            raise

    @contextlib.contextmanager
    def pipeline(self) -> Iterator[None]:
        yield


def _copy(repository: FakeRepository) -> dict[str, Any]:
    return {
        name: value.copy()
        for name, value in vars(repository).items()
        if name not in ("refuse", "forbidden")
    }


def _restore(repository: FakeRepository, snapshot: dict[str, Any]) -> None:
    for name, value in snapshot.items():
        setattr(repository, name, value)


@dataclass
class FakeTrips:
    trip: str | None = None
    recorded: list[str] = field(default_factory=list)

    def open_trip(self) -> str | None:
        return self.trip

    def record(self, reason: str) -> None:
        self.recorded.append(reason)
        self.trip = reason


@dataclass
class Transaction:
    records: Sequence[Any]
    offsets: list[tuple[str, int, int]]
