"""Typed access to confluent-kafka messages: where a consumed message sits, its headers, and
reading a whole topic back."""

from __future__ import annotations

import time
import uuid
from typing import NamedTuple

from confluent_kafka import Consumer, Message, TopicPartition

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


def read_to_end(
    bootstrap_servers: str, topic: str, *, committed_only: bool = True, deadline_s: float = 30.0
) -> list[Message]:
    """Every message now in `topic`, partition by partition in offset order. The ends are fixed
    first; transaction markers take offsets too, so a partition is done when the reader's position
    reaches its end, not when its last message arrives. Raises TimeoutError past `deadline_s`."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"orderstatus-reader-{uuid.uuid4().hex[:8]}",  # assigns only, never commits
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if committed_only else "read_uncommitted",
        }
    )
    try:
        ends: dict[int, int] = {}
        assignment = []
        for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                assignment.append(TopicPartition(topic, p, low))
        consumer.assign(assignment)
        messages: list[Message] = []
        stop_at = time.monotonic() + deadline_s
        while ends:
            if time.monotonic() > stop_at:
                raise TimeoutError(f"{topic} not read to its end within {deadline_s}s")
            messages += [m for m in consumer.consume(1000, 0.2) if m.error() is None]
            for p in list(ends):
                if consumer.position([TopicPartition(topic, p)])[0].offset >= ends[p]:
                    del ends[p]
        return sorted(messages, key=position)
    finally:
        consumer.close()


class CommandRecord(NamedTuple):
    """A command as it travels on the commands topic: keyed by order id (so one order's commands
    share a partition), its id and request id in headers (readable without decoding the value)."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def command_record(command: CreateOrder | ChangeStatus) -> CommandRecord:
    return CommandRecord(
        str(command.order_id).encode(),
        encode(command),
        [
            (HEADER_COMMAND_ID, str(command.command_id).encode()),
            (HEADER_REQUEST_ID, command.rid.encode()),
        ],
    )


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
