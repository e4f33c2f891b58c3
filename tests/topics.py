"""Reading whole topics back, for checks of what the system published."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, Message, TopicPartition

from services.core.settings import Settings


def read_topic(settings: Settings, topic: str, *, committed_only: bool = True) -> list[Message]:
    """Every message now in `topic`, partition by partition in offset order."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"test-reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if committed_only else "read_uncommitted",
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends: dict[int, int] = {}
        assignment = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                assignment.append(TopicPartition(topic, p, low))
        consumer.assign(assignment)
        messages: list[Message] = []
        done: set[int] = set()
        idle = 0
        while len(done) < len(ends) and idle < 20:
            batch = consumer.consume(1000, 0.5)
            idle = 0 if batch else idle + 1
            for message in batch:
                if message.error() is not None:
                    continue
                messages.append(message)
                if message.offset() >= ends[message.partition()] - 1:
                    done.add(message.partition())
            # A partition whose tail is transaction markers never yields its last offset.
            for p in set(ends) - done:
                position = consumer.position([TopicPartition(topic, p)])[0].offset
                if position >= ends[p]:
                    done.add(p)
        return messages
    finally:
        consumer.close()


def high_watermarks(settings: Settings, topic: str) -> int:
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "test-watermarks"}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
    finally:
        consumer.close()


def header(message: Message, name: str) -> bytes | None:
    for key, value in message.headers() or ():
        if key == name:
            return value  # type: ignore[no-any-return]
    return None
