"""The wire codecs: every message survives encode -> decode unchanged, and anything malformed is
refused with pydantic's ValidationError or ValueError, never another exception (the worker
dead-letters exactly those two)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import BaseModel

from services.core.messages import (
    REASON_MAX_LENGTH,
    SCHEMA_VERSION,
    ChangeStatus,
    CommandResult,
    CreateOrder,
    OrderEvent,
    decode_command,
    decode_event,
    decode_result,
    encode,
)
from tests.unit.strategies import (
    CHANGE_STATUS_EXAMPLE,
    UNIT_SETTINGS,
    command_results,
    commands,
    order_events,
)

Decoder = Callable[[bytes], BaseModel]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def payload(command: CreateOrder | ChangeStatus) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(encode(command))
    return loaded


def refused(raw: bytes | None, decoder: Callable[[bytes], Any] = decode_command) -> bool:
    """True when `decoder` refuses `raw` the documented way; any other exception propagates."""
    try:
        decoder(raw)  # type: ignore[arg-type]
    except ValueError:  # pydantic.ValidationError is a ValueError
        return True
    return False


# ---- round trips -------------------------------------------------------------------------------


@UNIT_SETTINGS
@given(command=commands)
def test_a_command_round_trips(command: CreateOrder | ChangeStatus) -> None:
    decoded = decode_command(encode(command))
    assert type(decoded) is type(command)
    assert decoded == command


@UNIT_SETTINGS
@given(result=command_results)
def test_a_command_result_round_trips(result: CommandResult) -> None:
    assert decode_result(encode(result)) == result


@UNIT_SETTINGS
@given(event=order_events)
def test_an_order_event_round_trips(event: OrderEvent) -> None:
    assert decode_event(encode(event)) == event


@UNIT_SETTINGS
@given(message=commands | command_results | order_events)
def test_every_message_is_a_json_object_stamped_with_the_schema_version(message: BaseModel) -> None:
    raw = encode(message)
    assert isinstance(raw, bytes)
    assert json.loads(raw)["schema_version"] == SCHEMA_VERSION


# ---- malformed input ---------------------------------------------------------------------------


def test_a_missing_value_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="empty message value"):
        decode_command(None)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b" ",
        b"null",
        b"[]",
        b"{}",
        b'"create_order"',
        b"\xff\xfe\x00",
        b"{" * 100_000,
        b"[" * 100_000,
        b'{"type": "create_order"' + b', "a": 1' * 10_000,
        b"1e999999",
        b'{"type": "change_status", "status": "pending"}',
    ],
    ids=lambda raw: repr(raw[:24]),
)
def test_known_garbage_is_refused(raw: bytes) -> None:
    assert refused(raw)


@UNIT_SETTINGS
@given(raw=st.binary(max_size=2048))
def test_random_bytes_are_refused(raw: bytes) -> None:
    assert refused(raw)
    assert refused(raw, decode_result)
    assert refused(raw, decode_event)


@UNIT_SETTINGS
@given(command=commands, data=st.data())
def test_truncated_json_is_refused(
    command: CreateOrder | ChangeStatus, data: st.DataObject
) -> None:
    raw = encode(command)
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
    assert refused(raw[:cut])


@UNIT_SETTINGS
@given(
    command=commands,
    version=st.integers().filter(lambda v: v != 1)
    | st.floats().filter(lambda v: v != 1)
    | st.text(max_size=5)
    | st.none()
    | st.lists(st.integers(), max_size=2),
)
def test_a_wrong_schema_version_is_refused(
    command: CreateOrder | ChangeStatus, version: object
) -> None:
    body = payload(command) | {"schema_version": version}
    assert refused(json.dumps(body).encode())


@UNIT_SETTINGS
@given(command=commands, kind=json_values)
def test_an_unknown_command_type_is_refused(
    command: CreateOrder | ChangeStatus, kind: object
) -> None:
    assume(kind not in ("create_order", "change_status"))
    body = payload(command) | {"type": kind}
    assert refused(json.dumps(body).encode())


@UNIT_SETTINGS
@given(command=commands, name=st.text(min_size=1, max_size=20), value=json_values)
def test_an_extra_field_is_refused(
    command: CreateOrder | ChangeStatus, name: str, value: object
) -> None:
    body = payload(command)
    assume(name not in body)
    assert refused(json.dumps(body | {name: value}).encode())
    actor = body["actor"]
    assume(name not in actor)
    assert refused(json.dumps(body | {"actor": actor | {name: value}}).encode())


@UNIT_SETTINGS
@given(command=commands, data=st.data())
def test_a_missing_required_field_is_refused(
    command: CreateOrder | ChangeStatus, data: st.DataObject
) -> None:
    body = payload(command)
    required = [name for name, field in type(command).model_fields.items() if field.is_required()]
    dropped = data.draw(st.sampled_from([*required, "type"]), label="dropped")
    del body[dropped]
    assert refused(json.dumps(body).encode())


SAMPLE_CHANGE = ChangeStatus.model_validate(CHANGE_STATUS_EXAMPLE)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "shipped"),
        ("status", "PENDING"),
        ("status", None),
        ("expected_version", 0),
        ("expected_version", -1),
        ("expected_version", 1.5),
        ("expected_version", "two"),
        ("reason", "x" * (REASON_MAX_LENGTH + 1)),
        ("rid", "r" * 201),
        ("order_id", "not-a-uuid"),
        ("order_id", 42),
        ("command_id", ""),
        ("issued_at", "yesterday"),
        ("issued_at", "2030-01-01T00:00:00"),
        ("actor", {"sub": "", "role": "authenticated"}),
        ("actor", {"sub": "s" * 201, "role": "authenticated"}),
        ("actor", {"sub": "someone", "role": "admin"}),
        ("actor", {"sub": "someone", "role": "authenticated", "restaurant_ids": ["nope"]}),
        ("actor", None),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None,
)
def test_a_field_out_of_its_contract_is_refused(field: str, value: object) -> None:
    assert not refused(encode(SAMPLE_CHANGE))
    body = payload(SAMPLE_CHANGE) | {field: value}
    assert refused(json.dumps(body).encode())


def mutate(raw: bytes, position: int, operation: str, byte: int) -> bytes:
    at = position % (len(raw) + 1)
    if operation == "flip":
        at = min(at, len(raw) - 1)
        return raw[:at] + bytes([raw[at] ^ (byte or 1)]) + raw[at + 1 :]
    if operation == "insert":
        return raw[:at] + bytes([byte]) + raw[at:]
    return raw[:at] + raw[at + 1 :]


@UNIT_SETTINGS
@given(
    command=commands,
    edits=st.lists(
        st.tuples(
            st.integers(0, 10_000),
            st.sampled_from(["flip", "insert", "delete"]),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_a_mutated_command_decodes_or_is_refused_never_anything_else(
    command: CreateOrder | ChangeStatus, edits: list[tuple[int, str, int]]
) -> None:
    raw = encode(command)
    for position, operation, byte in edits:
        raw = mutate(raw, position, operation, byte)
    if not refused(raw):
        # A mutation that still decodes (a changed digit of an id, a letter of a text) must yield
        # a whole, valid command.
        assert isinstance(decode_command(raw), CreateOrder | ChangeStatus)


@UNIT_SETTINGS
@given(
    message=st.sampled_from(["result", "event"]),
    data=st.data(),
)
def test_a_mutated_result_or_event_decodes_or_is_refused(message: str, data: st.DataObject) -> None:
    strategy = command_results if message == "result" else order_events
    decoder: Decoder = decode_result if message == "result" else decode_event
    raw = encode(data.draw(strategy))
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
    assert refused(raw[:cut], decoder)
    body = json.loads(raw) | {"schema_version": 2}
    assert refused(json.dumps(body).encode(), decoder)
    body = json.loads(raw) | {"unexpected": True}
    assert refused(json.dumps(body).encode(), decoder)
