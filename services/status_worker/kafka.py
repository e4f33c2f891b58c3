"""Kafka adapter for the worker: a read_committed consumer and a transactional producer whose
transactions carry both the outcomes and the consumed offsets (send_offsets_to_transaction)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from services.core.kafka_records import position
from services.core.settings import Settings

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, str | bytes | None]]


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    key: bytes
    value: bytes
    headers: Headers


class TransactionAborted(Exception):
    """The Kafka transaction was aborted: nothing of it is visible; the batch must be redone."""


def consumer_config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": settings.worker_group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": settings.worker_session_timeout_ms,
        "heartbeat.interval.ms": max(1000, settings.worker_session_timeout_ms // 3),
        "fetch.wait.max.ms": 100,
        "client.id": f"status-worker-{settings.worker_id}",
    }
    if settings.worker_static_membership:
        # A restarted worker (same WORKER_ID) takes its partitions back at once, with no rebalance.
        config["group.instance.id"] = f"{settings.worker_group_id}.{settings.worker_id}"
    return config


def producer_config(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        # Stable per worker slot: a restarted worker fences and aborts its predecessor's open
        # transaction at once instead of leaving it to block read_committed readers until timeout.
        "transactional.id": f"{settings.worker_group_id}.{settings.worker_id}",
        "transaction.timeout.ms": settings.worker_transaction_timeout_ms,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 1,
        "client.id": f"status-worker-{settings.worker_id}",
    }


def next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    """The offsets to commit after `messages`: per partition, the last offset plus one."""
    latest: dict[tuple[str, int], int] = {}
    for message in messages:
        topic, partition, offset = position(message)
        latest[(topic, partition)] = max(latest.get((topic, partition), -1), offset)
    return [TopicPartition(topic, part, offset + 1) for (topic, part), offset in latest.items()]


def first_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    earliest: dict[tuple[str, int], int] = {}
    for message in messages:
        topic, partition, offset = position(message)
        earliest[(topic, partition)] = min(earliest.get((topic, partition), offset), offset)
    return [TopicPartition(topic, part, offset) for (topic, part), offset in earliest.items()]


class TransactionalPublisher:
    def __init__(self, producer: Producer, consumer: Consumer, timeout: float = 30.0) -> None:
        self.producer = producer
        self.consumer = consumer
        self.timeout = timeout

    def init(self) -> None:
        self.producer.init_transactions(self.timeout)

    def publish(
        self,
        records: Sequence[OutRecord],
        offsets: list[TopicPartition],
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        """Publishes `records` and commits `offsets` atomically, or raises TransactionAborted."""
        try:
            self.producer.begin_transaction()
            for record in records:
                self._produce(record)
            self.producer.send_offsets_to_transaction(
                offsets, self.consumer.consumer_group_metadata(), self.timeout
            )
            if before_commit is not None:
                before_commit()
            self._retrying(lambda: self.producer.commit_transaction(self.timeout))
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.fatal():
                raise
            log.warning(
                "kafka transaction aborted",
                extra={"evt": "kafka_transaction_aborted", "error": str(error)},
            )
            self._abort()
            raise TransactionAborted(str(error)) from exc

    def _produce(self, record: OutRecord) -> None:
        while True:
            try:
                self.producer.produce(
                    record.topic, key=record.key, value=record.value, headers=list(record.headers)
                )
                return
            except BufferError:
                self.producer.poll(0.05)

    def _abort(self) -> None:
        try:
            self._retrying(lambda: self.producer.abort_transaction(self.timeout))
        except KafkaException as exc:
            if exc.args[0].fatal():
                raise
            log.warning("abort_transaction failed", extra={"error": str(exc.args[0])})

    @staticmethod
    def _retrying(call: Callable[[], None], attempts: int = 5) -> None:
        for attempt in range(attempts):
            try:
                call()
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if not error.retriable() or attempt == attempts - 1:
                    raise
                time.sleep(0.1 * (attempt + 1))
