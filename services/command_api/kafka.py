"""Kafka adapter of the API: publishes commands and waits for their results (request-reply).

Each API process reads the results topic (read_committed, from the end as of its start): its own
reply partition, which each command names in a header so the worker produces the result there
(API_RESULTS_PARTITION, services/command_api/reply_partition.py), or every partition. It hands each
result to the request waiting for that command id, once its signature shows a worker made it
(services/adapters/command_signing.py): a forged result is logged, counted and ignored, so the request
still gets its real answer (or times out). Results nobody waits for are skipped here unchecked; they
stay in `command_outcomes` for later lookups. Every command published is signed (command_record)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter

from services.adapters.command_signing import Purpose, signing_keys
from services.adapters.kafka_records import command_record, header, poll_batch, signature_failure
from services.adapters.settings import Settings
from services.core.messages import ChangeStatus, CommandResult, CreateOrder, decode_result
from services.core.topics import HEADER_COMMAND_ID, HEADER_REPLY_PARTITION
from services.observability.sentry import trace_headers

log = logging.getLogger(__name__)

UNAUTHENTICATED_RESULTS = Counter(
    "orderstatus_api_unauthenticated_results_total",
    "Result records for a waiting command without a valid signature: ignored (forged or signed "
    "with a key this API does not hold)",
    registry=None,  # registered by the composition root (app.py), not at import
)


class PublishFailed(Exception):
    """Kafka did not confirm the command. `definite`: it was never handed to Kafka, so nothing
    will happen; otherwise (no or a failed delivery report) it may still have been stored."""

    def __init__(self, reason: str, *, definite: bool) -> None:
        super().__init__(reason)
        self.definite = definite


class UndecodableResult(Exception):
    """The command's result arrived but could not be read: its outcome is known, look it up."""


class OutcomeTimeout(Exception):
    """The command was accepted but its outcome did not arrive within the deadline."""


_NO_LEADER_YET = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
)


@dataclass(eq=False)
class _Waiting:
    """The outcome of one command id, and how many requests wait for it (idempotent retries)."""

    outcome: asyncio.Future[CommandResult]
    requests: int = 0


@dataclass(frozen=True, slots=True)
class PendingOutcome:
    _waiting: _Waiting
    _timeout_s: float

    async def wait(self) -> CommandResult:
        """The outcome; raises OutcomeTimeout past the reply timeout, UndecodableResult."""
        try:
            # asyncio.timeout rather than wait_for: no extra task per request. Shielded: a timeout
            # must not cancel the outcome other requests for this command id may be waiting for.
            async with asyncio.timeout(self._timeout_s):
                return await asyncio.shield(self._waiting.outcome)
        except TimeoutError as exc:
            raise OutcomeTimeout("no outcome within the reply timeout") from exc


class CommandBus:
    def __init__(self, settings: Settings, producer: Producer, consumer: Consumer) -> None:
        """`producer` publishes commands; `consumer` reads results (kafka_config builds both)."""
        self.settings = settings
        self.topics = settings.topics
        self._keys = signing_keys(settings)
        self._pending: dict[bytes, _Waiting] = {}
        self._running = threading.Event()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._producer = producer
        self._consumer = consumer
        self._reply_headers: list[tuple[str, bytes]] = []

    async def results_partitions(self) -> int:
        """How many partitions the results topic has (one per API process at most)."""
        return len(await asyncio.to_thread(self._results_partitions))

    def _results_partitions(self) -> list[int]:
        topic = self.topics.results
        partitions = list(self._consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        if not partitions:
            raise RuntimeError(f"topic {topic} has no partitions; run `orderstatus topics`")
        return sorted(partitions)

    async def start(self, reply_partition: int | None = None) -> None:
        """Reads results from their end as of now: of `reply_partition` only, which every command
        then names for the worker (HEADER_REPLY_PARTITION), or of every partition when None."""
        self._loop = asyncio.get_running_loop()
        if reply_partition is not None:
            self._reply_headers = [(HEADER_REPLY_PARTITION, str(reply_partition).encode())]
        await asyncio.to_thread(self._assign_results_at_end, reply_partition)
        self._running.set()
        for target, name in ((self._serve_producer, "producer"), (self._read_results, "results")):
            thread = threading.Thread(target=target, name=f"command-bus-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    async def stop(self) -> None:
        self._running.clear()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 5)
        await asyncio.to_thread(self._producer.flush, 5)
        await asyncio.to_thread(self._consumer.close)

    def _assign_results_at_end(self, reply_partition: int | None) -> None:
        """Explicit offsets, so the position is fixed before the first command is sent."""
        topic = self.topics.results
        partitions = self._results_partitions()
        if reply_partition is not None:
            if reply_partition not in partitions:
                raise RuntimeError(f"{topic} has no partition {reply_partition}")
            partitions = [reply_partition]
        assignment = [TopicPartition(topic, p, self._end_of(topic, p)) for p in partitions]
        self._consumer.assign(assignment)

    def _end_of(self, topic: str, partition: int, deadline_s: float = 10.0) -> int:
        """The partition's end offset; a topic created a moment ago may not have a leader yet."""
        stop_at = time.monotonic() + deadline_s
        while True:
            try:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=deadline_s
                )
                return int(high)
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() not in _NO_LEADER_YET or time.monotonic() > stop_at:
                    raise
                time.sleep(0.2)

    @contextmanager
    def listening(self, command_id: UUID) -> Iterator[PendingOutcome]:
        """Listens for `command_id`'s outcome for the block: start before publishing (or before
        looking the outcome up), so an outcome in between is not missed."""
        key = self._expect(command_id)
        try:
            yield PendingOutcome(self._pending[key], self.settings.api_reply_timeout_s)
        finally:
            self._forget(key)

    async def publish(self, command: CreateOrder | ChangeStatus) -> None:
        """Returns once Kafka has the command (acks=all); raises PublishFailed otherwise."""
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[None] = loop.create_future()

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            loop.call_soon_threadsafe(_settle, delivered, error)

        record = command_record(command, self._keys)
        try:
            self._producer.produce(
                self.topics.commands,
                key=record.key,
                value=record.value,
                headers=[*record.headers, *self._reply_headers, *trace_headers()],
                on_delivery=on_delivery,
            )
        except (BufferError, KafkaException) as exc:
            raise PublishFailed(str(exc), definite=True) from exc
        try:
            async with asyncio.timeout(self.settings.api_publish_timeout_s + 1):
                await delivered
        except TimeoutError as exc:
            raise PublishFailed("no delivery report", definite=False) from exc

    def _expect(self, command_id: UUID) -> bytes:
        key = str(command_id).encode()
        waiting = self._pending.get(key)
        if waiting is None:
            self._pending[key] = waiting = _Waiting(asyncio.get_running_loop().create_future())
        waiting.requests += 1
        return key

    def _forget(self, key: bytes) -> None:
        waiting = self._pending.get(key)
        if waiting is not None:
            waiting.requests -= 1
            if waiting.requests <= 0:
                del self._pending[key]

    def kafka_reachable(self, timeout: float = 2.0) -> bool:
        try:
            self._producer.list_topics(self.topics.commands, timeout=timeout)
            return True
        except Exception:
            return False

    def _serve_producer(self) -> None:
        while self._running.is_set():
            self._producer.poll(0.05)

    def _read_results(self) -> None:
        loop = self._loop
        assert loop is not None
        while self._running.is_set():
            for message in poll_batch(self._consumer, 500, 0.05):
                if message.error() is not None:
                    continue
                command_id = header(message, HEADER_COMMAND_ID)
                value = message.value()
                if command_id is None or value is None or command_id not in self._pending:
                    continue
                if self._authentic(message, command_id):
                    loop.call_soon_threadsafe(self._resolve, command_id, value)

    def _authentic(self, message: Message, command_id: bytes) -> bool:
        failure = signature_failure(message, self._keys, Purpose.RESULT)
        if failure is None:
            return True
        UNAUTHENTICATED_RESULTS.inc()
        log.warning(
            "result without a valid signature ignored",
            extra={
                "evt": "result_unauthenticated",
                "command_id": command_id.decode(errors="replace"),
                "reason": failure,
                "partition": message.partition(),
                "offset": message.offset(),
            },
        )
        return False

    def _resolve(self, command_id: bytes, raw: bytes) -> None:
        waiting = self._pending.get(command_id)
        future = waiting.outcome if waiting is not None else None
        if future is not None and not future.done():
            try:
                future.set_result(decode_result(raw))
            except ValueError as exc:
                log.warning(
                    "undecodable result",
                    extra={"evt": "result_undecodable", "command_id": command_id.decode()},
                )
                future.set_exception(UndecodableResult(str(exc)))


def _settle(future: asyncio.Future[None], error: Any) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(PublishFailed(str(error), definite=False))
