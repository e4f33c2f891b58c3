"""The worker's processing steps: poll a batch -> decode -> apply in PostgreSQL -> publish outcomes
and commit offsets in one Kafka transaction. Any failure rewinds the batch; the inbox makes the redo
change nothing twice."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from pydantic import ValidationError

from services.core.events import (
    CLOUDEVENTS_CONTENT_TYPE,
    HEADER_CONTENT_TYPE,
    cloud_event_of,
    encode_cloud_event,
)
from services.core.jsonlog import OUTCOME_EVENTS
from services.core.kafka_records import header, poll_batch, position
from services.core.messages import CommandResult, Outcome, decode_command, encode
from services.core.settings import Settings
from services.core.topics import (
    HEADER_COMMAND_ID,
    HEADER_DLQ_OFFSET,
    HEADER_DLQ_PARTITION,
    HEADER_DLQ_REASON,
    HEADER_DLQ_TOPIC,
    HEADER_REQUEST_ID,
    Topics,
)
from services.status_worker import metrics
from services.status_worker.db import (
    Incoming,
    Processed,
    WorkerDatabase,
    apply_batch,
    refuses_only_this_command,
)
from services.status_worker.guards import DeadLetterGuard, DeadLetterRatioExceeded
from services.status_worker.kafka import (
    Headers,
    OutRecord,
    TransactionAborted,
    TransactionalPublisher,
    first_offsets,
    next_offsets,
)

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message: Message
    reason: str
    result: CommandResult | None
    """An `invalid` outcome for the caller, when the message names its command id and order."""


def decode(message: Message, now: datetime) -> Incoming | DeadLetter:
    value = message.value()
    if value is not None and len(value) > MAX_COMMAND_BYTES:
        return _dead_letter(message, f"oversize: {len(value)} bytes", now)
    try:
        command = decode_command(value)
    except ValidationError as exc:
        return _dead_letter(message, f"undecodable: {_validation_summary(exc)}", now)
    except ValueError as exc:
        return _dead_letter(message, f"undecodable: {_first_line(exc)}", now)
    where = position(message)
    return Incoming(command, where.partition, where.offset)


def _dead_letter(message: Message, reason: str, now: datetime) -> DeadLetter:
    command_id = _uuid(header(message, HEADER_COMMAND_ID))
    order_id = _uuid(message.key())
    result = None
    if command_id is not None and order_id is not None:
        result = CommandResult(
            command_id=command_id,
            order_id=order_id,
            command_type="unknown",
            outcome=Outcome.INVALID,
            detail=reason,
            rid=(header(message, HEADER_REQUEST_ID) or b"").decode(errors="replace")[:200],
            processed_at=now,
        )
    return DeadLetter(message, reason, result)


def _uuid(raw: bytes | str | None) -> UUID | None:
    if raw is None:
        return None
    try:
        return UUID(raw.decode() if isinstance(raw, bytes) else raw)
    except (ValueError, UnicodeDecodeError):
        return None


def _validation_summary(exc: ValidationError) -> str:
    """Which fields were wrong and why, e.g. `create_order.schema_version: Input should be 1`."""
    parts = [
        f"{'.'.join(str(part) for part in error['loc']) or 'message'}: {error['msg']}"
        for error in exc.errors(include_url=False)[:3]
    ]
    return "; ".join(parts)[:500]


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


class StatusWorker:
    def __init__(
        self,
        settings: Settings,
        consumer: Consumer,
        publisher: TransactionalPublisher,
        database: WorkerDatabase,
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.topics: Topics = settings.topics
        self.consumer = consumer
        self.publisher = publisher
        self.database = database
        self.stop = stop
        self.assigned: set[tuple[str, int]] = set()
        self.guard = DeadLetterGuard(
            settings.worker_dead_letter_window, settings.worker_dead_letter_max_ratio
        )
        self.batches = 0
        self.database_backoff = 0.0

    # Rebalance callbacks: processing happens between polls, so no batch is ever in flight here.
    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned = {(tp.topic, tp.partition) for tp in partitions}
        metrics.ASSIGNED_PARTITIONS.set(len(self.assigned))
        log.info(
            "partitions assigned",
            extra={"evt": "partitions_assigned", "partitions": sorted(p for _, p in self.assigned)},
        )

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned -= {(tp.topic, tp.partition) for tp in partitions}
        metrics.ASSIGNED_PARTITIONS.set(len(self.assigned))
        log.info(
            "partitions revoked",
            extra={
                "evt": "partitions_revoked",
                "partitions": sorted(tp.partition for tp in partitions),
            },
        )

    def run(self) -> None:
        self.consumer.subscribe(
            [self.topics.commands],
            on_assign=self.on_assign,
            on_revoke=self.on_revoke,
            on_lost=self.on_revoke,
        )
        while not self.stop.is_set():
            messages = poll_batch(self.consumer, self.settings.worker_batch_max, 0.5)
            usable = [m for m in messages if self._usable(m)]
            if usable:
                self.process(usable)

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

    def process(self, messages: Sequence[Message]) -> None:
        now = datetime.now(UTC)
        decoded = [decode(m, now) for m in messages]
        incoming = [d for d in decoded if isinstance(d, Incoming)]
        started = time.perf_counter()
        processed = self._apply(incoming, messages, now)
        if processed is None:
            return
        self.batches += 1
        self._inject_fault("crash_after_db_commit")
        applied_at = time.perf_counter()
        metrics.DB_SECONDS.observe(applied_at - started)
        by_position = {
            (p.result.command_id, i.partition, i.offset): p
            for i, p in zip(incoming, processed, strict=True)
        }
        records: list[OutRecord] = []
        finished: list[tuple[Incoming, Processed, bool]] = []
        dead: list[DeadLetter] = []
        for message, item in zip(messages, decoded, strict=True):
            if isinstance(item, DeadLetter):
                records.extend(self._dead_letter_records(item))
                dead.append(item)
                self.guard.observe(True)
                continue
            outcome = by_position[(item.command.command_id, item.partition, item.offset)]
            duplicate = outcome.source != (item.partition, item.offset)
            records.extend(self._outcome_records(outcome, duplicate))
            finished.append((item, outcome, duplicate))
            failed = outcome.failure is not None and not duplicate
            if failed:
                # Answered with `error`, and kept aside to be replayed once the cause is fixed.
                letter = DeadLetter(message, f"error: {outcome.failure}", None)
                records.extend(self._dead_letter_records(letter))
                dead.append(letter)
            self.guard.observe(failed)
        if self.guard.tripped:
            # Divert nothing more: leave this batch uncommitted and stop for a person to look.
            self._rewind(messages)
            raise DeadLetterRatioExceeded(
                f"{self.guard.ratio:.0%} of the last {self.guard.window} commands were "
                f"dead-lettered (limit {self.guard.max_ratio:.0%})"
            )
        try:
            self.publisher.publish(
                records,
                next_offsets(messages),
                before_commit=self._before_commit,
            )
        except TransactionAborted:
            metrics.TRANSACTION_ABORTS.inc()
            self._rewind(messages)
            return
        if self._fault_due("false_abort"):  # the client reports a failure; the commit went through
            metrics.TRANSACTION_ABORTS.inc()
            self._rewind(messages)
            return
        if not self._commit_took_effect(messages):
            metrics.TRANSACTION_ABORTS.inc()
            self._rewind(messages)
            return
        published_at = time.perf_counter()
        metrics.PUBLISH_SECONDS.observe(published_at - applied_at)
        metrics.BATCH_SIZE.observe(len(messages))
        self._report(finished, dead, datetime.now(UTC))
        metrics.trace_batch(messages, finished, now)

    def _fault_due(self, point: str) -> bool:
        """Test-only faults (WORKER_FAULT), to prove each loses and repeats nothing."""
        due = (
            self.settings.worker_fault == point and self.batches == self.settings.worker_fault_batch
        )
        if due:
            log.warning("injected fault", extra={"evt": "fault_injected", "point": point})
        return due

    def _inject_fault(self, point: str) -> None:
        if self._fault_due(point):
            self.publisher.producer.flush(5)  # make the open transaction's records hit the log
            os._exit(70)

    def _before_commit(self) -> None:
        self._inject_fault("crash_before_kafka_commit")
        if self._fault_due("silent_abort"):
            # What a coordinator restart can do: the transaction is gone, the commit "succeeds".
            self.publisher.producer.abort_transaction(10)
            self.publisher.producer.begin_transaction()

    def _apply(
        self, incoming: list[Incoming], messages: Sequence[Message], now: datetime
    ) -> list[Processed] | None:
        """Outcomes for `incoming`, or None when the batch was rewound to be redone later."""
        if not incoming:
            return []
        isolate = False
        while True:
            try:
                processed = apply_batch(self.database.connection(), incoming, now, isolate=isolate)
                self.database_backoff = 0.0
                return processed
            except Exception as exc:
                if refuses_only_this_command(exc) and not isolate:
                    log.warning(
                        "batch refused by the database: redoing it command by command",
                        extra={"evt": "batch_isolated", "error": _first_line(exc)},
                    )
                    isolate = True
                    continue
                if refuses_only_this_command(exc):
                    raise  # isolated mode turns these into outcomes: this is a bug of ours
                # Unreachable, misconfigured or overloaded: no command is to blame. Keep the
                # batch, pause, and retry it in order once the database answers again.
                log.warning(
                    "database unavailable: pausing partitions",
                    extra={
                        "evt": "database_unavailable",
                        "error": _first_line(exc),
                        "sqlstate": getattr(exc, "sqlstate", None),
                    },
                )
                metrics.DATABASE_UNAVAILABLE.inc()
                self.database.reset()
                self._rewind(messages)
                self._wait_for_database()
                return None

    def _committed(self, partitions: list[TopicPartition]) -> dict[tuple[str, int], int] | None:
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

    def _commit_took_effect(self, messages: Sequence[Message]) -> bool:
        """Offsets commit atomically with the outcomes, so they tell whether a transaction that
        Kafka reported as committed really was (around a coordinator restart it may not be)."""
        expected = next_offsets(messages)
        committed = self._committed(expected)
        if committed is None:  # cannot check: Kafka's own report is all there is
            return True
        if all(committed.get((tp.topic, tp.partition), -1) >= tp.offset for tp in expected):
            return True
        log.error(
            "a transaction reported as committed did not take effect: redoing the batch",
            extra={"evt": "kafka_commit_not_visible"},
        )
        return False

    def _rewind(self, messages: Sequence[Message]) -> None:
        """Seeks each partition of the batch to where its committed offset says processing stands:
        the batch start after a real abort, past the batch when a commit reported as failed went
        through after all. Unknown offsets fall back to the batch start: the inbox answers a redo,
        at worst republishing outcomes (never losing one)."""
        starts = [tp for tp in first_offsets(messages) if (tp.topic, tp.partition) in self.assigned]
        committed = self._committed(starts) or {}
        for tp in starts:
            offset = max(tp.offset, committed.get((tp.topic, tp.partition), tp.offset))
            try:
                self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
            except KafkaException as exc:
                log.warning("seek failed", extra={"error": str(exc), "partition": tp.partition})

    def _wait_for_database(self) -> None:
        """Pauses fetching, keeps serving the group protocol, and resumes once PostgreSQL answers."""
        self.consumer.pause(self.consumer.assignment())
        # Grows while retries keep failing, even when a ping succeeds (e.g. missing privileges).
        self.database_backoff = min(max(self.database_backoff * 2, 0.2), 10.0)
        delay = self.database_backoff
        try:
            while not self.stop.is_set():
                message = self.consumer.poll(delay)
                if message is not None and message.error() is None:
                    # From a partition assigned during the pause: put it back, keep it paused.
                    tp = TopicPartition(*position(message))
                    self.consumer.seek(tp)
                    self.consumer.pause([tp])
                try:
                    self.database.ping()
                    log.info("database reachable again", extra={"evt": "database_available"})
                    return
                except psycopg.OperationalError:
                    self.database.reset()
                    delay = min(delay * 2, 5.0)
        finally:
            self.consumer.resume(self.consumer.assignment())

    def _outcome_records(self, processed: Processed, duplicate: bool) -> list[OutRecord]:
        result = processed.result
        key = str(result.order_id).encode()
        headers = [
            (HEADER_COMMAND_ID, str(result.command_id).encode()),
            (HEADER_REQUEST_ID, result.rid.encode()),
        ]
        if duplicate:
            # A second copy of an applied command: answer it, but downstream saw the event already.
            return [
                OutRecord(self.topics.results, key, encode(result), [*headers, ("duplicate", b"1")])
            ]
        records = [OutRecord(self.topics.results, key, encode(result), headers)]
        if processed.event is not None:
            value = encode_cloud_event(cloud_event_of(processed.event))
            cloud = [(HEADER_CONTENT_TYPE, CLOUDEVENTS_CONTENT_TYPE.encode()), *headers]
            records.append(OutRecord(self.topics.events, key, value, cloud))
        return records

    def _dead_letter_records(self, dead: DeadLetter) -> list[OutRecord]:
        message = dead.message
        source = position(message)
        headers: Headers = [
            *(message.headers() or []),
            (HEADER_DLQ_REASON, dead.reason.encode()),
            (HEADER_DLQ_TOPIC, source.topic.encode()),
            (HEADER_DLQ_PARTITION, str(source.partition).encode()),
            (HEADER_DLQ_OFFSET, str(source.offset).encode()),
        ]
        records = [
            OutRecord(
                self.topics.dead_letters, message.key() or b"", message.value() or b"", headers
            )
        ]
        if dead.result is not None:
            result = dead.result
            records.append(
                OutRecord(
                    self.topics.results,
                    str(result.order_id).encode(),
                    encode(result),
                    [
                        (HEADER_COMMAND_ID, str(result.command_id).encode()),
                        (HEADER_REQUEST_ID, result.rid.encode()),
                    ],
                )
            )
        return records

    def _report(
        self,
        finished: list[tuple[Incoming, Processed, bool]],
        dead: list[DeadLetter],
        now: datetime,
    ) -> None:
        for letter in dead:
            reason = letter.reason.split(":", 1)[0]
            metrics.DEAD_LETTERS.labels(reason).inc()
            log.warning(
                "command dead-lettered",
                extra={
                    "evt": "command_dead_lettered",
                    "reason": letter.reason,
                    "partition": letter.message.partition(),
                    "offset": letter.message.offset(),
                },
            )
        for item, processed, duplicate in finished:
            result = processed.result
            if duplicate:
                metrics.DUPLICATES.inc()
                continue
            command = item.command
            e2e = (now - command.issued_at).total_seconds()
            metrics.COMMANDS.labels(result.outcome.value).inc()
            metrics.COMMAND_E2E_SECONDS.observe(max(e2e, 0.0))
            log.log(
                logging.ERROR if result.outcome is Outcome.ERROR else logging.INFO,
                "command processed",
                extra={
                    "evt": OUTCOME_EVENTS[result.outcome],
                    "rid": command.rid,
                    "duration_ms": round(e2e * 1000, 2),
                    "command_id": str(command.command_id),
                    "order_id": str(command.order_id),
                    "restaurant_id": str(result.order.restaurant_id) if result.order else None,
                    "status": result.order.status.value if result.order else None,
                    "outcome": result.outcome.value,
                    "conflict": result.conflict.value if result.conflict else None,
                    "partition": item.partition,
                    "offset": item.offset,
                },
            )
