"""Kafka adapter of the API: publishes commands and waits for their results (request-reply).

Each API process reads every partition of the results topic (read_committed, from the end as of its
start) and hands each result to the request waiting for that command id. Results nobody waits for
are skipped here; they stay in `command_outcomes` for later lookups."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from services.core.messages import ChangeStatus, CommandResult, CreateOrder, decode_result, encode
from services.core.settings import Settings
from services.core.topics import HEADER_COMMAND_ID, HEADER_REQUEST_ID

log = logging.getLogger(__name__)


class PublishFailed(Exception):
    """The command was not accepted by Kafka: nothing will happen to the order."""


class OutcomeTimeout(Exception):
    """The command was accepted but its outcome did not arrive within the deadline."""


class CommandBus:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = settings.topics
        self._pending: dict[bytes, asyncio.Future[CommandResult]] = {}
        self._running = threading.Event()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        publish_ms = int(settings.api_publish_timeout_s * 1000)
        self._producer = Producer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 1,
                "message.timeout.ms": publish_ms,
                "socket.connection.setup.timeout.ms": publish_ms,
                "client.id": "command-api",
            }
        )
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "group.id": f"command-api-{uuid.uuid4()}",  # never joined or committed: assign only
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 10,
                "client.id": "command-api-results",
            }
        )

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._assign_results_at_end)
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

    def _assign_results_at_end(self) -> None:
        """Explicit offsets, so the position is fixed before the first command is sent."""
        topic = self.topics.results
        metadata = self._consumer.list_topics(topic, timeout=10)
        partitions = metadata.topics[topic].partitions
        if not partitions:
            raise RuntimeError(f"topic {topic} has no partitions; run `orderstatus topics`")
        assignment = []
        for partition in partitions:
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10
            )
            assignment.append(TopicPartition(topic, partition, high))
        self._consumer.assign(assignment)

    async def execute(self, command: CreateOrder | ChangeStatus) -> CommandResult:
        """Publishes `command` and returns its outcome; raises PublishFailed or OutcomeTimeout."""
        loop = asyncio.get_running_loop()
        key = str(command.command_id).encode()
        outcome: asyncio.Future[CommandResult] = loop.create_future()
        delivered: asyncio.Future[None] = loop.create_future()
        self._pending[key] = outcome

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            loop.call_soon_threadsafe(_settle, delivered, error)

        try:
            try:
                self._producer.produce(
                    self.topics.commands,
                    key=str(command.order_id).encode(),
                    value=encode(command),
                    headers=[(HEADER_COMMAND_ID, key), (HEADER_REQUEST_ID, command.rid.encode())],
                    on_delivery=on_delivery,
                )
            except (BufferError, KafkaException) as exc:
                raise PublishFailed(str(exc)) from exc
            try:
                await asyncio.wait_for(delivered, self.settings.api_publish_timeout_s + 1)
            except TimeoutError as exc:
                raise PublishFailed("no delivery report") from exc
            try:
                return await asyncio.wait_for(outcome, self.settings.api_reply_timeout_s)
            except TimeoutError as exc:
                raise OutcomeTimeout(str(command.command_id)) from exc
        finally:
            self._pending.pop(key, None)

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
            for message in self._consumer.consume(500, 0.05):
                if message.error() is not None:
                    continue
                command_id = _header(message, HEADER_COMMAND_ID)
                if command_id is not None and command_id in self._pending:
                    loop.call_soon_threadsafe(self._resolve, command_id, message.value())

    def _resolve(self, command_id: bytes, raw: bytes) -> None:
        future = self._pending.get(command_id)
        if future is not None and not future.done():
            try:
                future.set_result(decode_result(raw))
            except ValueError as exc:
                future.set_exception(exc)


def _settle(future: asyncio.Future[None], error: Any) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(PublishFailed(str(error)))


def _header(message: Message, name: str) -> bytes | None:
    for key, value in message.headers() or ():
        if key == name:
            return value  # type: ignore[no-any-return]
    return None
