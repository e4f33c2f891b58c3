"""Typed access to confluent-kafka messages: where a consumed message sits, and its headers."""

from __future__ import annotations

from typing import NamedTuple

from confluent_kafka import Consumer, Message


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
