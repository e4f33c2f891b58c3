"""Reading whole topics back, for checks of what the system published."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from services.adapters import kafka_config, kafka_records
from services.adapters.command_signing import Purpose, SigningKeys, signature_headers, signing_keys
from services.adapters.kafka_records import CommandRecord, read_to_end
from services.adapters.settings import Settings
from services.core.messages import Actor, ChangeStatus, CreateOrder, Role
from services.core.statuses import OrderStatus
from services.core.topics import HEADER_COMMAND_ID

RawRecord = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]

TEST_KEYS: SigningKeys = signing_keys(Settings(environment="test"))
"""The keys the test stack's API and worker hold (COMMAND_SIGNING_KEYS, else the dev key)."""


def command_record(command: CreateOrder | ChangeStatus) -> CommandRecord:
    """A command record signed as the API signs it: what a test producing commands sends."""
    return kafka_records.command_record(command, TEST_KEYS)


def signed(
    record: RawRecord, keys: SigningKeys = TEST_KEYS, purpose: Purpose = Purpose.COMMAND
) -> RawRecord:
    """Raw bytes signed as a command (or a result): a malformed record from a trusted producer."""
    key, value, headers = record
    command_id = next((v for k, v in headers if k == HEADER_COMMAND_ID), None)
    return key, value, [*headers, *signature_headers(keys, purpose, key, command_id, value)]


def read_topic(settings: Settings, topic: str, *, committed_only: bool = True) -> list[Message]:
    """Every message now in `topic`, partition by partition in offset order."""
    return read_to_end(settings, topic, committed_only=committed_only)


def high_watermarks(settings: Settings, topic: str) -> int:
    consumer = Consumer(
        kafka_config.assign_only_reader(settings, "test-watermarks", committed_only=False)
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
    finally:
        consumer.close()


def produce(
    settings: Settings,
    topic: str,
    records: list[RawRecord],
    partition: int | None = None,
) -> None:
    """Writes raw records straight into a topic, bypassing the API (as a buggy client might)."""
    producer = Producer({**kafka_config.client(settings), "acks": "all"})
    for key, value, headers in records:
        kwargs = {"partition": partition} if partition is not None else {}
        producer.produce(topic, key=key, value=value, headers=headers, **kwargs)
    assert producer.flush(30) == 0


SERVICE_ACTOR = Actor(sub="test-pos", role=Role.SERVICE_ROLE)


def create_command(restaurant_id: uuid.UUID, order_id: uuid.UUID | None = None) -> CreateOrder:
    return CreateOrder(
        command_id=uuid.uuid4(),
        order_id=order_id or uuid.uuid4(),
        restaurant_id=restaurant_id,
        actor=SERVICE_ACTOR,
        rid=uuid.uuid4().hex,
        issued_at=datetime.now(UTC),
    )


def change_command(
    order_id: uuid.UUID, status: str, expected_version: int | None = None
) -> ChangeStatus:
    return ChangeStatus(
        command_id=uuid.uuid4(),
        order_id=order_id,
        status=OrderStatus(status),
        expected_version=expected_version,
        actor=SERVICE_ACTOR,
        rid=uuid.uuid4().hex,
        issued_at=datetime.now(UTC),
    )
