"""The staff feeds' tokens (services/command_api/feed_tokens.py): what is encoded decodes back,
and anything else is refused with ValueError."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.command_api.feed_tokens import (
    OrderCursor,
    decode_cursor,
    decode_positions,
    encode_cursor,
    encode_positions,
    merged,
)
from tests.unit.strategies import UNIT_SETTINGS, aware_datetimes, statuses

positions = st.dictionaries(st.integers(0, 999), st.integers(0, 2**62), max_size=64)
cursors = st.builds(OrderCursor, statuses, aware_datetimes, st.uuids())


@UNIT_SETTINGS
@given(at=positions)
def test_positions_round_trip_on_one_printable_line(at: dict[int, int]) -> None:
    text = encode_positions(at)
    assert "\n" not in text and "\r" not in text and text.isprintable()
    if at:
        assert decode_positions(text) == at


@pytest.mark.parametrize(
    "text", ["", "yesterday", "0:1,", "0:1,0:2", "-1:3", "0:1;1:2", "0:1\n1:2", "1:" + "9" * 20]
)
def test_a_malformed_position_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        decode_positions(text)


def test_merged_takes_the_furthest_offset_per_partition() -> None:
    assert merged({0: 5, 1: 2}, {1: 7, 2: 1}, {}) == {0: 5, 1: 7, 2: 1}


@UNIT_SETTINGS
@given(cursor=cursors)
def test_a_cursor_round_trips(cursor: OrderCursor) -> None:
    decoded = decode_cursor(encode_cursor(cursor))
    assert decoded == cursor


@UNIT_SETTINGS
@given(text=st.text(max_size=80))
def test_random_text_is_no_cursor_or_a_valid_one(text: str) -> None:
    try:
        cursor = decode_cursor(text)
    except ValueError:
        return
    assert isinstance(cursor, OrderCursor) and cursor.created_at.tzinfo is not None


@pytest.mark.parametrize(
    "raw",
    [
        '["shipped","2026-01-01T00:00:00+00:00","00000000-0000-0000-0000-000000000000"]',
        '["pending","2026-01-01T00:00:00","00000000-0000-0000-0000-000000000000"]',
        '["pending","2026-01-01T00:00:00+00:00","x"]',
        '["pending","2026-01-01T00:00:00+00:00"]',
        '{"status":"pending"}',
        "null",
    ],
)
def test_a_forged_cursor_is_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        decode_cursor(base64.urlsafe_b64encode(raw.encode()).decode())
