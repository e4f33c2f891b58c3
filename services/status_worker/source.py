"""The command source: the worker's read_committed consumer behind the few things the pipeline asks
of it. Polls batches from the partitions it owns, rewinds a batch to be redone, pauses while the
database is away, and reads the group's committed offsets to tell what a transaction really did."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from services.adapters.kafka_records import poll_batch, position
from services.status_worker import metrics
from services.status_worker.kafka import first_offsets, next_offsets

log = logging.getLogger(__name__)

POLL_TIMEOUT_S = 0.5
MAX_PAUSE_S = 5.0


class RewindFailed(RuntimeError):
    """A partition could not be put back to where its batch must be redone: polling on would skip
    the batch, so the worker ends for a restart (which starts at the committed offsets)."""


class CommandSource:
    def __init__(self, consumer: Consumer, topic: str, batch_max: int) -> None:
        self.consumer = consumer
        self.topic = topic
        self.batch_max = batch_max
        self.assigned: set[tuple[str, int]] = set()
        self.before_revoke: Callable[[], None] = lambda: None
        """Called before partitions are taken away: the pipeline settles its batch in flight."""
        self.after_assign: Callable[[], object] = lambda: None
        """Called when partitions are given, before they are fetched: the first time, the
        producer's init_transactions; each time, departed slots fenced (main.OnAssignment)."""

    def subscribe(self) -> None:
        self.consumer.subscribe(
            [self.topic], on_assign=self.on_assign, on_revoke=self.on_revoke, on_lost=self.on_revoke
        )

    # Rebalance callbacks: processing happens between polls, and a batch whose transaction is in
    # flight is settled first (before_revoke), so partitions change hands between transactions.
    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.after_assign()  # before anything is fetched from the partitions
        self.assigned = {(tp.topic, tp.partition) for tp in partitions}
        metrics.ASSIGNED_PARTITIONS.set(len(self.assigned))
        log.info(
            "partitions assigned",
            extra={"evt": "partitions_assigned", "partitions": sorted(p for _, p in self.assigned)},
        )

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.before_revoke()
        self.assigned -= {(tp.topic, tp.partition) for tp in partitions}
        metrics.ASSIGNED_PARTITIONS.set(len(self.assigned))
        log.info(
            "partitions revoked",
            extra={
                "evt": "partitions_revoked",
                "partitions": sorted(tp.partition for tp in partitions),
            },
        )

    def poll(self, limit: int | None = None) -> list[Message]:
        """The next batch (up to `limit` messages, batch_max by default): what arrives within the
        poll timeout, and what else is already fetched."""
        messages = poll_batch(self.consumer, limit or self.batch_max, POLL_TIMEOUT_S)
        return [m for m in messages if self._usable(m)]

    def _usable(self, message: Message) -> bool:
        error = message.error()
        if error is not None:
            # A fatal consumer state arrives as an event whose code is _FATAL but whose fatal()
            # is False (e.g. "static consumer fenced" after a broker restart): polling on would
            # hang the worker with no partitions, so it ends (main.py: exit for a restart).
            if error.fatal() or error.code() == KafkaError._FATAL:
                raise KafkaException(error)
            log.warning(
                "consumer error", extra={"evt": "kafka_consumer_error", "error": str(error)}
            )
            return False
        # A partition revoked while the batch was being fetched belongs to another worker now.
        topic, partition, _ = position(message)
        return (topic, partition) in self.assigned

    def committed(self, partitions: list[TopicPartition]) -> dict[tuple[str, int], int] | None:
        """The group's committed offsets, stable ones only (a read_committed consumer waits for
        pending transactional commits), or None when the coordinator does not say."""
        try:
            committed = self.consumer.committed(partitions, timeout=10)
        except KafkaException as exc:
            log.warning("committed offsets unknown", extra={"error": str(exc.args[0])})
            return None
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in committed
            if tp.error is None and tp.offset >= 0
        }

    def commit_took_effect(self, messages: Sequence[Message]) -> bool:
        """Offsets commit atomically with the outcomes, so they tell whether a transaction that
        Kafka reported as committed really was (around a coordinator restart it may not be)."""
        expected = next_offsets(messages)
        committed = self.committed(expected)
        if committed is None:  # cannot check: Kafka's own report is all there is
            return True
        if all(committed.get((tp.topic, tp.partition), -1) >= tp.offset for tp in expected):
            return True
        log.error(
            "a transaction reported as committed did not take effect: redoing the batch",
            extra={"evt": "kafka_commit_not_visible"},
        )
        return False

    def rewind(self, messages: Sequence[Message]) -> None:
        """Seeks each partition of the batch to where its committed offset says processing stands:
        the batch start after a real abort, past the batch when a commit reported as failed went
        through after all. Unknown offsets fall back to the batch start: the inbox answers a redo,
        at worst republishing outcomes (never losing one). Raises RewindFailed."""
        starts = [tp for tp in first_offsets(messages) if (tp.topic, tp.partition) in self.assigned]
        committed = self.committed(starts) or {}
        for tp in starts:
            offset = max(tp.offset, committed.get((tp.topic, tp.partition), tp.offset))
            self._seek(TopicPartition(tp.topic, tp.partition, offset))

    def _seek(self, tp: TopicPartition) -> None:
        try:
            self.consumer.seek(tp)
        except KafkaException as exc:
            log.error(
                "seek failed: exiting for a restart",
                extra={"evt": "kafka_seek_failed", "error": str(exc), "partition": tp.partition},
            )
            raise RewindFailed(f"seek of partition {tp.partition} to {tp.offset} failed") from exc

    def paused(self, delay: float, ready: Callable[[], bool], stop: threading.Event) -> None:
        """Pauses fetching, keeps serving the group protocol, and returns once `ready()` (checked
        after each wait, the waits doubling from `delay`) or `stop` is set."""
        self.consumer.pause(self.consumer.assignment())
        try:
            while not stop.is_set():
                message = self.consumer.poll(delay)
                if message is not None and message.error() is None:
                    # From a partition assigned during the pause: put it back, keep it paused.
                    tp = TopicPartition(*position(message))
                    self._seek(tp)
                    self.consumer.pause([tp])
                if ready():
                    return
                delay = min(delay * 2, MAX_PAUSE_S)
        finally:
            self.consumer.resume(self.consumer.assignment())
