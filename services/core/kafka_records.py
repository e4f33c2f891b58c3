"""Typed access to confluent-kafka messages: where a consumed message sits, and its headers."""

from __future__ import annotations

from typing import NamedTuple

from confluent_kafka import Message


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
