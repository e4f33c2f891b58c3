"""The public event contract (docs/consuming-events.md): a CloudEvents 1.0 envelope built from the
worker's internal record, encoded and decoded losslessly; anything else is refused with ValueError."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.events import (
    CLOUDEVENTS_CONTENT_TYPE,
    EVENT_SOURCE,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_STATUS_CHANGED,
    OrderCloudEvent,
    cloud_event_of,
    decode_cloud_event,
    encode_cloud_event,
)
from services.core.messages import OrderEvent
from tests.unit.strategies import UNIT_SETTINGS, cloud_events, order_events

EXAMPLE: dict[str, Any] = {
    "specversion": "1.0",
    "id": "6f1c2a4e-1b7e-4a53-9d2c-9a1b2c3d4e5f",
    "source": "/order-status/status-worker",
    "type": "com.orderstatus.order.status_changed.v1",
    "subject": "0b8a3c1d-2e4f-4a6b-8c9d-0e1f2a3b4c5d",
    "time": "2026-12-01T20:00:00.123456Z",
    "datacontenttype": "application/json",
    "data": {
        "order_id": "0b8a3c1d-2e4f-4a6b-8c9d-0e1f2a3b4c5d",
        "restaurant_id": "1c9b4d2e-3f50-4b7c-9d0e-1f2a3b4c5d6e",
        "from_status": "pending",
        "to_status": "accepted",
        "version": 2,
        "command_id": "6f1c2a4e-1b7e-4a53-9d2c-9a1b2c3d4e5f",
        "actor": "staff-1",
        "reason": None,
        "rid": "r-1",
    },
}
"""The contract's example event (EVENT_CONTRACT.md), exactly as it travels."""


def refused(raw: Any) -> bool:
    try:
        decode_cloud_event(raw)
    except ValueError:
        return True
    return False


def test_the_documented_example_decodes_and_encodes_back_byte_for_byte() -> None:
    raw = json.dumps(EXAMPLE, separators=(",", ":")).encode()
    event = decode_cloud_event(raw)
    assert event.data.version == 2 and event.data.from_status == "pending"
    assert encode_cloud_event(event) == raw


@UNIT_SETTINGS
@given(internal=order_events)
def test_the_cloud_event_carries_the_change(internal: OrderEvent) -> None:
    event = cloud_event_of(internal)
    assert event.specversion == "1.0" and event.source == EVENT_SOURCE
    assert event.id == str(internal.event_id) == str(event.data.command_id)
    assert event.subject == str(internal.order_id) == str(event.data.order_id)
    assert event.type == (
        EVENT_TYPE_CREATED if internal.type == "order.created" else EVENT_TYPE_STATUS_CHANGED
    )
    assert event.time == internal.occurred_at
    assert (event.data.from_status, event.data.to_status) == (
        internal.from_status,
        internal.to_status,
    )
    assert (event.data.version, event.data.actor, event.data.reason, event.data.rid) == (
        internal.version,
        internal.actor_sub,
        internal.reason,
        internal.rid,
    )


@UNIT_SETTINGS
@given(internal=order_events)
def test_the_same_change_always_gets_the_same_event(internal: OrderEvent) -> None:
    """A redone batch rebuilds the event from the same record: same id, same bytes."""
    assert encode_cloud_event(cloud_event_of(internal)) == encode_cloud_event(
        cloud_event_of(OrderEvent.model_validate_json(internal.model_dump_json()))
    )


@UNIT_SETTINGS
@given(event=cloud_events)
def test_a_cloud_event_round_trips(event: OrderCloudEvent) -> None:
    assert decode_cloud_event(encode_cloud_event(event)) == event


@UNIT_SETTINGS
@given(event=cloud_events)
def test_time_is_utc_with_microseconds(event: OrderCloudEvent) -> None:
    time = json.loads(encode_cloud_event(event))["time"]
    assert time.endswith("Z") and len(time) == len("2026-12-01T20:00:00.123456Z")


def test_the_content_type_is_structured_mode() -> None:
    assert CLOUDEVENTS_CONTENT_TYPE == "application/cloudevents+json"


@pytest.mark.parametrize(
    "change",
    [
        {"specversion": "0.3"},
        {"type": "com.orderstatus.order.created"},
        {"type": "order.status_changed"},
        {"id": ""},
        {"subject": "another-order"},
        {"time": "2026-12-01T20:00:00"},  # no offset
        {"datacontenttype": "text/plain"},
        {"data": None},
    ],
    ids=lambda change: f"{next(iter(change))}={next(iter(change.values()))!r}",
)
def test_a_broken_envelope_is_refused(change: dict[str, Any]) -> None:
    assert not refused(json.dumps(EXAMPLE).encode())
    assert refused(json.dumps(EXAMPLE | change).encode())


@pytest.mark.parametrize(
    "change",
    [
        {"to_status": "shipped"},
        {"version": 0},
        {"order_id": "not-a-uuid"},
        {"command_id": None},
        {"reason": 7},
    ],
    ids=lambda change: next(iter(change)),
)
def test_broken_data_is_refused(change: dict[str, Any]) -> None:
    assert refused(json.dumps(EXAMPLE | {"data": EXAMPLE["data"] | change}).encode())


def test_unknown_members_are_ignored_so_additions_do_not_break_older_consumers() -> None:
    extended = EXAMPLE | {"traceparent": "00-abc-01", "data": EXAMPLE["data"] | {"eta": 5}}
    event = decode_cloud_event(json.dumps(extended).encode())
    assert event == decode_cloud_event(json.dumps(EXAMPLE).encode())


def test_the_old_internal_format_is_refused() -> None:
    """A consumer of the public contract never mistakes an internal record for an event."""
    internal = OrderEvent.model_validate(
        {
            "event_id": EXAMPLE["id"],
            "type": "order.status_changed",
            "order_id": EXAMPLE["subject"],
            "restaurant_id": EXAMPLE["data"]["restaurant_id"],
            "from_status": "pending",
            "to_status": "accepted",
            "version": 2,
            "actor_sub": "staff-1",
            "occurred_at": EXAMPLE["time"],
        }
    )
    assert refused(internal.model_dump_json().encode())


@UNIT_SETTINGS
@given(raw=st.binary(max_size=2048))
def test_random_bytes_are_refused(raw: bytes) -> None:
    assert refused(raw)


@pytest.mark.parametrize("raw", [None, "{}", 7])
def test_a_value_that_is_not_bytes_is_refused(raw: Any) -> None:
    assert refused(raw)


@UNIT_SETTINGS
@given(event=cloud_events, data=st.data())
def test_truncated_events_are_refused(event: OrderCloudEvent, data: st.DataObject) -> None:
    raw = encode_cloud_event(event)
    assert refused(raw[: data.draw(st.integers(0, len(raw) - 1), label="cut")])
