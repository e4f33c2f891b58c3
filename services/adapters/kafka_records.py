"""Typed access to confluent-kafka messages: where a consumed message sits, its headers, and
reading a whole topic back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import NamedTuple

from confluent_kafka import Consumer, Message, TopicPartition

from services.adapters.command_signing import (
    HEADER_KEY_ID,
    HEADER_SIGNATURE,
    Purpose,
    SigningKeys,
    signature_headers,
    verification_failure,
)
from services.adapters.kafka_config import assign_only_reader
from services.adapters.settings import Settings
from services.core.messages import ChangeStatus, CreateOrder, encode
from services.core.topics import HEADER_COMMAND_ID, HEADER_REQUEST_ID


class Position(NamedTuple):
    topic: str
    partition: int
    offset: int


def position(message: Message) -> Position:
    """Topic, partition and offset of a consumed message (always set on those)."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None
    return Position(topic, partition, offset)


def header(message: Message, name: str) -> bytes | None:
    headers = message.headers() or []
    for key, value in headers.items() if isinstance(headers, dict) else headers:
        if key == name:
            return value.encode() if isinstance(value, str) else value
    return None


def poll_batch(consumer: Consumer, max_messages: int, timeout: float) -> list[Message]:
    """Waits up to `timeout` for one message, then takes what else is already fetched, so an idle
    system answers at once and a busy one amortises the transaction over a batch."""
    first = consumer.poll(timeout)
    if first is None:
        return []
    rest: list[Message] = consumer.consume(max_messages - 1, 0) if max_messages > 1 else []
    return [first, *rest]


class NotReadToEnd(TimeoutError):
    """The topic was not read to its end in time; `unread` bounds the messages left."""

    def __init__(self, topic: str, deadline_s: float, unread: int) -> None:
        super().__init__(f"{topic} not read to its end within {deadline_s}s")
        self.unread = unread


def messages_to_end(
    settings: Settings,
    topic: str,
    *,
    committed_only: bool = True,
    deadline_s: float = 30.0,
    client_id: str = "orderstatus-reader",
) -> Iterator[Message]:
    """Every message now in `topic`, as consumed (in offset order per partition). The ends are
    fixed first; transaction markers take offsets too, so a partition is done when the reader's
    position reaches its end, not when its last message arrives. Raises NotReadToEnd past
    `deadline_s`."""
    consumer = Consumer(assign_only_reader(settings, client_id, committed_only=committed_only))
    try:
        ends: dict[int, int] = {}
        assignment = []
        for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                assignment.append(TopicPartition(topic, p, low))
        consumer.assign(assignment)
        stop_at = time.monotonic() + deadline_s
        while ends:
            if time.monotonic() > stop_at:
                unread = sum(ends[p] - max(_position(consumer, topic, p), 0) for p in ends)
                raise NotReadToEnd(topic, deadline_s, unread)
            yield from (m for m in consumer.consume(1000, 0.2) if m.error() is None)
            for p in list(ends):
                if _position(consumer, topic, p) >= ends[p]:
                    del ends[p]
    finally:
        consumer.close()


def _position(consumer: Consumer, topic: str, partition: int) -> int:
    return int(consumer.position([TopicPartition(topic, partition)])[0].offset)


def read_to_end(
    settings: Settings, topic: str, *, committed_only: bool = True, deadline_s: float = 30.0
) -> list[Message]:
    """messages_to_end, partition by partition in offset order."""
    messages = messages_to_end(
        settings, topic, committed_only=committed_only, deadline_s=deadline_s
    )
    return sorted(messages, key=position)


class CommandRecord(NamedTuple):
    """A command as it travels on the commands topic: keyed by order id (so one order's commands
    share a partition), its id and request id in headers (readable without decoding the value), and
    its signature (services/adapters/command_signing.py)."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def command_record(command: CreateOrder | ChangeStatus, keys: SigningKeys) -> CommandRecord:
    """The one place a command record is built: every producer of commands signs with `keys`."""
    key, value, command_id = str(command.order_id).encode(), encode(command), command.command_id
    command_id_header = str(command_id).encode()
    return CommandRecord(
        key,
        value,
        [
            (HEADER_COMMAND_ID, command_id_header),
            (HEADER_REQUEST_ID, command.rid.encode()),
            *signature_headers(keys, Purpose.COMMAND, key, command_id_header, value),
        ],
    )


def signature_failure(message: Message, keys: SigningKeys, purpose: Purpose) -> str | None:
    """Why a consumed record does not prove its issuer (command_signing), or None when it does."""
    return verification_failure(
        keys,
        purpose,
        _as_bytes(message.key()),
        header(message, HEADER_COMMAND_ID),
        _as_bytes(message.value()),
        header(message, HEADER_KEY_ID),
        header(message, HEADER_SIGNATURE),
    )


def _as_bytes(raw: bytes | str | None) -> bytes | None:
    return raw.encode() if isinstance(raw, str) else raw


def watermarks(consumer: Consumer, topic: str, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """Each partition's (low, high) watermarks now; a read_committed consumer's high is the last
    stable offset, so nothing before it is still in an open transaction."""
    partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
    if not partitions:
        raise RuntimeError(f"topic {topic} has no partitions; run `orderstatus topics`")
    return {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
        for p in partitions
    }
