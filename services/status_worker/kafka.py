"""Kafka adapter for the worker: a read_committed consumer and a transactional producer whose
transactions carry both the outcomes and the consumed offsets (send_offsets_to_transaction)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from services.adapters.kafka_records import position
from services.status_worker import metrics

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, str | bytes | None]]


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    key: bytes
    value: bytes
    headers: Headers
    partition: int | None = None
    """None: the producer's partitioner (by key) chooses."""


class TransactionAborted(Exception):
    """The Kafka transaction was aborted: nothing of it is visible; the batch must be redone."""


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


RESTART_EXIT_CODE = 75
"""Exit status (EX_TEMPFAIL) of a worker whose Kafka client cannot go on: its supervisor restarts
it, and the new instance fences what the old one left open."""
STUCK_GRACE_S = 5.0


def _end_stuck_process(call: str, waited_s: float) -> None:
    log.critical(
        "kafka call overran its timeout: exiting for a restart",
        extra={"evt": "kafka_call_stuck", "call": call, "waited_s": waited_s},
    )
    logging.shutdown()
    os._exit(RESTART_EXIT_CODE)


class TransactionalPublisher:
    def __init__(
        self,
        producer: Producer,
        consumer: Consumer,
        timeout: float = 30.0,
        stuck_after_s: float | None = None,
    ) -> None:
        self.producer = producer
        self.consumer = consumer
        self.timeout = timeout
        self.stuck_after_s = stuck_after_s or timeout + STUCK_GRACE_S

    def init(self) -> None:
        self.producer.init_transactions(self.timeout)

    def _bounded(self, name: str, call: Callable[[], None]) -> None:
        """Runs a blocking transactional call; ends the process if it is still blocked after
        `stuck_after_s`. librdkafka can block forever in send_offsets_to_transaction when the
        group coordinator goes away mid-call, ignoring its timeout (confluentinc/librdkafka#5456),
        and nothing can interrupt it. The restarted worker fences the stuck transaction and redoes
        the batch; the inbox makes the redo change nothing twice."""
        waited_s = self.stuck_after_s
        watchdog = threading.Timer(waited_s, _end_stuck_process, args=(name, waited_s))
        watchdog.daemon = True
        watchdog.start()
        try:
            call()
        finally:
            watchdog.cancel()

    def partitions_of(self, topic: str) -> int:
        """How many partitions `topic` has (0 when the broker does not say)."""
        metadata = self.producer.list_topics(topic, timeout=self.timeout).topics.get(topic)
        return len(metadata.partitions) if metadata is not None and metadata.error is None else 0

    def publish(self, records: Sequence[OutRecord], offsets: list[TopicPartition]) -> None:
        """Publishes `records` and commits `offsets` atomically, or raises TransactionAborted."""
        try:
            self.producer.begin_transaction()
            for record in records:
                self._produce(record)
            self._bounded(
                "send_offsets_to_transaction",
                lambda: self.producer.send_offsets_to_transaction(
                    offsets, self.consumer.consumer_group_metadata(), self.timeout
                ),
            )
            self._before_commit()
            self._retrying(
                lambda: self._bounded(
                    "commit_transaction", lambda: self.producer.commit_transaction(self.timeout)
                )
            )
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

    def _before_commit(self) -> None:
        """Nothing: the place where tests inject faults (services/status_worker/faults.py)."""

    def _produce(self, record: OutRecord) -> None:
        while True:
            try:
                if record.partition is None:
                    self.producer.produce(
                        record.topic,
                        key=record.key,
                        value=record.value,
                        headers=list(record.headers),
                    )
                else:
                    self.producer.produce(
                        record.topic,
                        key=record.key,
                        value=record.value,
                        headers=list(record.headers),
                        partition=record.partition,
                    )
                return
            except BufferError:
                self.producer.poll(0.05)

    def _abort(self) -> None:
        try:
            self._retrying(
                lambda: self._bounded(
                    "abort_transaction", lambda: self.producer.abort_transaction(self.timeout)
                )
            )
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


def departed_slots(seen: set[str], members: set[str], own: str) -> list[str]:
    """The worker slots (group.instance.id = transactional.id) that were members of the group at an
    earlier assignment and are not now: their last transaction may still be open."""
    return sorted(seen - members - {own})


class SlotFencer:
    """On each partition assignment, fences the transactional ids of worker slots that have left
    the group: `init_transactions` under a departed slot's transactional.id aborts its open
    transaction at once, so the partitions taken over are readable (read_committed) now rather
    than at transaction.timeout.ms. Slots are known from the group's own member list (static
    membership: group.instance.id is the slot's transactional.id), remembered between assignments;
    a live member is never fenced. Limits and trade-offs: docs/instances.md."""

    def __init__(
        self,
        admin: AdminClient,
        group_id: str,
        own_slot: str,
        producer_config: dict[str, object],
        timeout: float = 10.0,
    ) -> None:
        self.admin = admin
        self.group_id = group_id
        self.own_slot = own_slot
        self.producer_config = producer_config
        self.timeout = timeout
        """Per call, short: this runs in the assignment callback, and a fence that cannot be made
        only leaves the transaction to its own timeout."""
        self.seen: set[str] = set()

    def members(self) -> set[str] | None:
        """The group.instance.ids of the group's members now, or None when the broker does not say."""
        try:
            futures = self.admin.describe_consumer_groups(
                [self.group_id], request_timeout=self.timeout
            )
            group = futures[self.group_id].result()
        except KafkaException as exc:
            log.warning("group members unknown", extra={"error": str(exc.args[0])})
            return None
        return {m.group_instance_id for m in group.members if m.group_instance_id}

    def after_assignment(self) -> list[str]:
        """Fences every slot seen before and gone now; returns them."""
        members = self.members()
        if members is None:
            return []
        gone = departed_slots(self.seen, members, self.own_slot)
        for slot in gone:
            self.fence(slot)
        self.seen = members | {self.own_slot}
        return gone

    def fence(self, slot: str) -> None:
        started = time.monotonic()
        producer = Producer({**self.producer_config, "transactional.id": slot})
        try:
            producer.init_transactions(self.timeout)
        except KafkaException as exc:  # the slot stays unfenced: its transaction times out
            log.warning(
                "fencing a departed worker slot failed",
                extra={"evt": "worker_slot_fence_failed", "slot": slot, "error": str(exc)},
            )
            return
        finally:
            producer.flush(0)
        metrics.FENCED_SLOTS.inc()
        log.info(
            "departed worker slot fenced: its open transaction is aborted",
            extra={
                "evt": "worker_slot_fenced",
                "slot": slot,
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
