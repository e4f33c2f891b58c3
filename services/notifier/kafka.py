"""Kafka adapter of the notifier: a read_committed consumer of the events topic whose offsets are
committed by hand, only after the batch's deliveries are in PostgreSQL; and the few fields of a
CloudEvent the notifier routes by (the body itself is forwarded as it was on the topic)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from confluent_kafka import Consumer, Message, TopicPartition
from pydantic import BaseModel, ConfigDict, ValidationError

from services.adapters import kafka_config
from services.adapters.settings import Settings
from services.status_worker.kafka import next_offsets

log = logging.getLogger(__name__)


class _Data(BaseModel):
    model_config = ConfigDict(extra="ignore")
    order_id: UUID
    restaurant_id: UUID
    version: int


class _Envelope(BaseModel):
    """The routing part of the events contract (EVENT_CONTRACT.md); other fields are ignored so
    additive changes to the contract pass through untouched."""

    model_config = ConfigDict(extra="ignore")
    specversion: str
    id: str
    type: str
    time: datetime
    data: _Data


@dataclass(frozen=True, slots=True)
class RoutedEvent:
    event_id: str
    event_type: str
    order_id: UUID
    restaurant_id: UUID
    version: int
    time: datetime
    body: bytes


def routed_event(raw: bytes | None) -> RoutedEvent:
    """Raises ValueError for anything that is not a CloudEvent of the contract."""
    if not raw:
        raise ValueError("empty event")
    try:
        envelope = _Envelope.model_validate_json(raw)
    except ValidationError as exc:
        raise ValueError(f"not an order CloudEvent: {exc.error_count()} errors") from exc
    if envelope.specversion != "1.0":
        raise ValueError(f"CloudEvents specversion {envelope.specversion!r}")
    return RoutedEvent(
        event_id=envelope.id,
        event_type=envelope.type,
        order_id=envelope.data.order_id,
        restaurant_id=envelope.data.restaurant_id,
        version=envelope.data.version,
        time=envelope.time,
        body=raw,
    )


class EventSource:
    """The consumer, used from one thread at a time (the ingest loop's)."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = Consumer(kafka_config.notifier_consumer(settings))
        self.topic = settings.topics.events
        self.assigned: list[TopicPartition] = []

    def subscribe(self) -> None:
        def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            self.assigned = list(partitions)
            log.info(
                "partitions assigned",
                extra={
                    "evt": "partitions_assigned",
                    "partitions": [p.partition for p in partitions],
                },
            )

        def on_revoke(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            self.assigned = []
            log.info("partitions revoked", extra={"evt": "partitions_revoked"})

        self.consumer.subscribe([self.topic], on_assign=on_assign, on_revoke=on_revoke)

    def poll(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Returns as soon as one record is there, with up to `max_messages` of those already
        fetched (consume() would wait out `timeout_s` for a batch under max_messages)."""
        first: Message | None = self.consumer.poll(timeout_s)
        if first is None:
            return []
        messages: list[Message] = [first, *self.consumer.consume(max_messages - 1, 0)]
        good = []
        for message in messages:
            if message.error() is not None:
                log.warning(
                    "consumer error", extra={"evt": "kafka_error", "error": str(message.error())}
                )
                continue
            good.append(message)
        return good

    def commit(self, messages: Sequence[Message]) -> None:
        """Asynchronous: called only once the batch's deliveries are stored, so a commit that is
        lost (a crash right after) only makes the next notifier re-read rows it already has."""
        if messages:
            self.consumer.commit(offsets=next_offsets(messages), asynchronous=True)

    def close(self) -> None:
        self.consumer.close()
