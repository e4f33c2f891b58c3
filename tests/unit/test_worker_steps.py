"""The worker's broker-free steps: decoding a consumed message (command or dead letter) and the
offsets to commit or rewind to. Messages are real confluent_kafka.Message objects built in memory."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import UUID

import pytest
from confluent_kafka import Message, TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from services.core.messages import (
    ChangeStatus,
    CommandResult,
    CreateOrder,
    Outcome,
    encode,
)
from services.core.topics import HEADER_COMMAND_ID, HEADER_REQUEST_ID
from services.status_worker.batch import DeadLetter, Incoming
from services.status_worker.decode import MAX_COMMAND_BYTES, decode
from services.status_worker.kafka import first_offsets, next_offsets
from tests.unit.strategies import CHANGE_STATUS_EXAMPLE, UNIT_SETTINGS, commands

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
TOPIC = "unit.commands"
COMMAND_ID = UUID("6f1c2a4e-1b7e-4a53-9d2c-9a1b2c3d4e5f")
ORDER_ID = UUID("0b8a3c1d-2e4f-4a6b-8c9d-0e1f2a3b4c5d")

Headers = list[tuple[str, str | bytes | None]]
ORDER_KEY = str(ORDER_ID).encode()


def message(
    value: bytes | None,
    key: bytes | None = None,
    headers: Headers | None = None,
    partition: int = 3,
    offset: int = 41,
    topic: str = TOPIC,
) -> Message:
    return Message(
        topic=topic, partition=partition, offset=offset, key=key, value=value, headers=headers
    )


def answerable(value: bytes | None, rid: bytes | None = b"req-1") -> Message:
    """A message whose key and headers let the worker answer the caller whatever its value."""
    headers: Headers = [(HEADER_COMMAND_ID, str(COMMAND_ID).encode()), (HEADER_REQUEST_ID, rid)]
    return message(value, key=ORDER_KEY, headers=headers)


def example_with(**changes: object) -> bytes:
    """The example command with some fields replaced, as raw bytes."""
    return json.dumps(CHANGE_STATUS_EXAMPLE | changes).encode()


# ---- decode: commands ---------------------------------------------------------------------------


@UNIT_SETTINGS
@given(command=commands, partition=st.integers(0, 1000), offset=st.integers(0, 2**62))
def test_a_valid_command_becomes_incoming_with_its_position(
    command: CreateOrder | ChangeStatus, partition: int, offset: int
) -> None:
    decoded = decode(message(encode(command), partition=partition, offset=offset), NOW)
    assert decoded == Incoming(command, partition, offset)


def test_a_command_of_exactly_the_size_limit_is_decoded() -> None:
    raw = example_with()
    padded = raw + b" " * (MAX_COMMAND_BYTES - len(raw))
    assert len(padded) == MAX_COMMAND_BYTES
    assert isinstance(decode(message(padded), NOW), Incoming)


# ---- decode: dead letters ----------------------------------------------------------------------


def test_one_byte_over_the_size_limit_is_dead_lettered_as_oversize() -> None:
    raw = example_with()
    padded = raw + b" " * (MAX_COMMAND_BYTES + 1 - len(raw))
    source = message(padded)
    decoded = decode(source, NOW)
    assert isinstance(decoded, DeadLetter)
    assert decoded.reason == f"oversize: {MAX_COMMAND_BYTES + 1} bytes"
    assert decoded.message is source
    assert decoded.result is None


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"\x00\xff garbage",
        b'{"type": "change_status"',
        example_with(schema_version=2),
        example_with(type="refund"),
        example_with(surprise=1),
        example_with(status="shipped"),
        # A naive timestamp would break the worker's latency arithmetic after the commit.
        example_with(issued_at="2030-01-01T00:00"),
    ],
    ids=[
        "none",
        "empty",
        "binary",
        "truncated",
        "schema-v2",
        "unknown-type",
        "extra-field",
        "unknown-status",
        "naive-issued-at",
    ],
)
def test_an_undecodable_command_is_dead_lettered_with_an_invalid_result(
    value: bytes | None,
) -> None:
    source = answerable(value)
    decoded = decode(source, NOW)
    assert isinstance(decoded, DeadLetter)
    assert decoded.reason.startswith("undecodable: ")
    assert decoded.message is source
    assert decoded.result == CommandResult(
        command_id=COMMAND_ID,
        order_id=ORDER_ID,
        command_type="unknown",
        outcome=Outcome.INVALID,
        detail=decoded.reason,
        rid="req-1",
        processed_at=NOW,
    )


def test_an_oversize_command_is_answered_too() -> None:
    decoded = decode(answerable(b"x" * (MAX_COMMAND_BYTES + 1)), NOW)
    assert isinstance(decoded, DeadLetter) and decoded.result is not None
    assert decoded.result.outcome is Outcome.INVALID
    assert decoded.result.detail == decoded.reason


def test_an_empty_value_is_reported_as_such() -> None:
    decoded = decode(message(None), NOW)
    assert isinstance(decoded, DeadLetter)
    assert decoded.reason == "undecodable: empty message value"


@pytest.mark.parametrize(
    ("key", "headers"),
    [
        (ORDER_KEY, None),
        (ORDER_KEY, []),
        (ORDER_KEY, [(HEADER_REQUEST_ID, b"req-1")]),
        (ORDER_KEY, [(HEADER_COMMAND_ID, b"not-a-uuid")]),
        (ORDER_KEY, [(HEADER_COMMAND_ID, b"\xff\xfe")]),
        (ORDER_KEY, [(HEADER_COMMAND_ID, None)]),
        (None, [(HEADER_COMMAND_ID, str(COMMAND_ID).encode())]),
        (b"order-7", [(HEADER_COMMAND_ID, str(COMMAND_ID).encode())]),
        (b"\xff" * 16, [(HEADER_COMMAND_ID, str(COMMAND_ID).encode())]),
    ],
    ids=[
        "no-headers",
        "empty-headers",
        "no-command-id",
        "command-id-not-uuid",
        "command-id-not-utf8",
        "command-id-null",
        "no-key",
        "key-not-uuid",
        "key-not-utf8",
    ],
)
def test_no_result_when_the_message_does_not_say_whom_to_answer(
    key: bytes | None, headers: Headers | None
) -> None:
    decoded = decode(message(b"garbage", key=key, headers=headers), NOW)
    assert isinstance(decoded, DeadLetter)
    assert decoded.result is None


@pytest.mark.parametrize(
    ("rid", "expected"),
    [
        (b"", ""),
        (None, ""),
        (b"\xffbad", "\ufffdbad"),
        (b"r" * 500, "r" * 200),
    ],
    ids=["empty", "null", "not-utf8", "too-long"],
)
def test_the_request_id_of_an_invalid_result_is_clean_text(
    rid: bytes | None, expected: str
) -> None:
    decoded = decode(answerable(b"garbage", rid), NOW)
    assert isinstance(decoded, DeadLetter) and decoded.result is not None
    assert decoded.result.rid == expected


keys = st.none() | st.binary(max_size=40) | st.uuids().map(lambda u: str(u).encode())
header_values = keys | st.text(max_size=40) | st.uuids().map(str)


@UNIT_SETTINGS
@given(
    value=st.none() | st.binary(max_size=512),
    key=keys,
    headers=st.none()
    | st.lists(
        st.tuples(st.sampled_from([HEADER_COMMAND_ID, HEADER_REQUEST_ID, "other"]), header_values),
        max_size=4,
    ),
)
def test_decode_never_raises_and_answers_exactly_when_it_can(
    value: bytes | None, key: bytes | None, headers: Headers | None
) -> None:
    decoded = decode(message(value, key=key, headers=headers), NOW)
    assert isinstance(decoded, DeadLetter)  # random bytes are never a command
    command_id = next((v for k, v in headers or [] if k == HEADER_COMMAND_ID), None)
    assert (decoded.result is not None) is (is_uuid(command_id) and is_uuid(key))


def is_uuid(raw: str | bytes | None) -> bool:
    """Whether `raw` names an id (the worker needs a command id and an order id to answer)."""
    if raw is None:
        return False
    try:
        UUID(raw.decode() if isinstance(raw, bytes) else raw)
    except ValueError:
        return False
    return True


# ---- offsets ------------------------------------------------------------------------------------


def positions(partitions: list[TopicPartition]) -> set[tuple[str, int, int]]:
    return {(tp.topic, tp.partition, tp.offset) for tp in partitions}


def at(topic: str, partition: int, offset: int) -> Message:
    return message(b"", topic=topic, partition=partition, offset=offset)


def test_offsets_of_no_messages_are_empty() -> None:
    assert next_offsets([]) == []
    assert first_offsets([]) == []


def test_offsets_are_per_topic_and_partition() -> None:
    batch = [at("a", 0, 5), at("a", 1, 9), at("a", 0, 7), at("b", 0, 2), at("a", 0, 6)]
    assert positions(next_offsets(batch)) == {("a", 0, 8), ("a", 1, 10), ("b", 0, 3)}
    assert positions(first_offsets(batch)) == {("a", 0, 5), ("a", 1, 9), ("b", 0, 2)}


def test_offset_zero_is_a_real_offset() -> None:
    assert positions(next_offsets([at("a", 0, 0)])) == {("a", 0, 1)}
    assert positions(first_offsets([at("a", 0, 0)])) == {("a", 0, 0)}


@UNIT_SETTINGS
@given(
    batch=st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 3), st.integers(0, 2**40)),
        max_size=40,
    )
)
def test_commit_after_the_last_and_rewind_to_the_first_of_each_partition(
    batch: list[tuple[str, int, int]],
) -> None:
    messages = [at(*position) for position in batch]
    partitions = {(topic, partition) for topic, partition, _ in batch}
    offsets_of = {
        tp: [offset for topic, partition, offset in batch if (topic, partition) == tp]
        for tp in partitions
    }
    committed, rewound = next_offsets(messages), first_offsets(messages)
    assert len(committed) == len(rewound) == len(partitions)
    assert positions(committed) == {(t, p, max(offsets_of[t, p]) + 1) for t, p in partitions}
    assert positions(rewound) == {(t, p, min(offsets_of[t, p])) for t, p in partitions}
