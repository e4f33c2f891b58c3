"""Hypothesis strategies for the wire contracts and the domain, shared by the unit tests.

Runs are derandomized by default so the suite is reproducible in CI; set HYPOTHESIS_EXPLORE=1 to
search with fresh random examples (and more of them) while developing."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from services.core.decision import OrderState
from services.core.events import cloud_event_of
from services.core.messages import (
    REASON_MAX_LENGTH,
    Actor,
    ChangeStatus,
    CommandResult,
    ConflictType,
    CreateOrder,
    OrderEvent,
    Outcome,
    Role,
)
from services.core.statuses import OrderStatus

CHANGE_STATUS_EXAMPLE = {
    "schema_version": 1,
    "type": "change_status",
    "command_id": "6f1c2a4e-1b7e-4a53-9d2c-9a1b2c3d4e5f",
    "order_id": "0b8a3c1d-2e4f-4a6b-8c9d-0e1f2a3b4c5d",
    "actor": {"sub": "staff", "role": "authenticated", "restaurant_ids": []},
    "issued_at": "2030-01-01T00:00:00Z",
    "status": "accepted",
}
"""One valid command as it travels, for tests that break it one field at a time."""

EXPLORE = os.environ.get("HYPOTHESIS_EXPLORE") == "1"

UNIT_SETTINGS = settings(
    max_examples=1000 if EXPLORE else 60,
    derandomize=not EXPLORE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

statuses = st.sampled_from(list(OrderStatus))

# Whole-minute UTC offsets: an offset with seconds is not representable in RFC 3339 and no real
# clock produces one.
offsets = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
aware_datetimes = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=offsets | st.just(UTC)
)


# PostgreSQL text cannot hold NUL, so the contracts refuse it (TEXT_PATTERN): generate text without.
def stored_text(min_size: int = 0, max_size: int = 200) -> st.SearchStrategy[str]:
    return st.text(
        st.characters(codec="utf-8", exclude_characters="\x00"),
        min_size=min_size,
        max_size=max_size,
    )


short_text = stored_text()
versions = st.integers(min_value=1, max_value=2**31)

actors = st.builds(
    Actor,
    sub=stored_text(min_size=1),
    role=st.sampled_from(list(Role)),
    restaurant_ids=st.lists(st.uuids(), max_size=4).map(tuple),
)

command_envelope: dict[str, st.SearchStrategy[Any]] = {
    "command_id": st.uuids(),
    "order_id": st.uuids(),
    "actor": actors,
    "rid": short_text,
    "issued_at": aware_datetimes,
}
"""The fields every command carries."""

create_orders = st.builds(CreateOrder, **command_envelope, restaurant_id=st.uuids())

change_statuses = st.builds(
    ChangeStatus,
    **command_envelope,
    status=statuses,
    expected_version=st.none() | versions,
    reason=st.none() | stored_text(max_size=REASON_MAX_LENGTH),
)

commands = create_orders | change_statuses

order_states = st.builds(
    OrderState,
    order_id=st.uuids(),
    restaurant_id=st.uuids(),
    status=statuses,
    version=versions,
    updated_at=aware_datetimes,
)

command_results = st.builds(
    CommandResult,
    command_id=st.uuids(),
    order_id=st.uuids(),
    command_type=st.sampled_from(["create_order", "change_status", "unknown"]),
    outcome=st.sampled_from(list(Outcome)),
    conflict=st.none() | st.sampled_from(list(ConflictType)),
    order=st.none() | order_states.map(OrderState.view),
    detail=st.text(max_size=300),
    rid=short_text,
    processed_at=aware_datetimes,
)

order_events = st.builds(
    OrderEvent,
    event_id=st.uuids(),
    type=st.sampled_from(["order.created", "order.status_changed"]),
    order_id=st.uuids(),
    restaurant_id=st.uuids(),
    from_status=st.none() | statuses,
    to_status=statuses,
    version=versions,
    actor_sub=short_text,
    reason=st.none() | stored_text(max_size=REASON_MAX_LENGTH),
    rid=short_text,
    occurred_at=aware_datetimes,
)

cloud_events = order_events.map(cloud_event_of)
"""Public CloudEvents, as the worker publishes them."""
