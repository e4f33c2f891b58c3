"""The opaque tokens of the staff feeds, as text a client hands back: the keyset cursor of
`GET /orders` and the resume position of the event stream (SSE `id`, sent back as `Last-Event-ID`).

Both are refused with ValueError unless well formed; neither grants anything (row-level security
and the membership check apply to whatever they point at)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from services.core.statuses import OrderStatus

Positions = dict[int, int]
"""Partition -> offset of the events topic: every event before it has been sent to the client."""

POSITIONS_PATTERN = re.compile(r"^\d{1,6}:\d{1,19}(,\d{1,6}:\d{1,19})*$")
POSITIONS_MAX_LENGTH = 1024 * 27
"""Room for 1024 partitions; a longer text is no position of ours."""
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"
"""Unpadded URL-safe base64."""


def encode_positions(positions: Positions) -> str:
    """`0:17,1:4,…`: short, printable, no newline (it travels in an SSE `id:` line)."""
    return ",".join(f"{p}:{o}" for p, o in sorted(positions.items()))


def decode_positions(text: str) -> Positions:
    if len(text) > POSITIONS_MAX_LENGTH or not POSITIONS_PATTERN.match(text.strip()):
        raise ValueError("not a stream position")
    positions: Positions = {}
    for pair in text.strip().split(","):
        partition, offset = pair.split(":")
        if int(partition) in positions:
            raise ValueError("a partition appears twice")
        positions[int(partition)] = int(offset)
    return positions


def merged(*positions: Positions) -> Positions:
    """The furthest of several positions, per partition."""
    result: Positions = {}
    for each in positions:
        for partition, offset in each.items():
            result[partition] = max(offset, result.get(partition, offset))
    return result


@dataclass(frozen=True, slots=True)
class OrderCursor:
    """The last order of a page, in the listing's order (status, created_at, id)."""

    status: OrderStatus
    created_at: datetime
    order_id: UUID


def encode_cursor(cursor: OrderCursor) -> str:
    raw = json.dumps(
        [cursor.status.value, cursor.created_at.isoformat(), str(cursor.order_id)],
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> OrderCursor:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        status, created_at, order_id = json.loads(raw)
        cursor = OrderCursor(
            OrderStatus(status), datetime.fromisoformat(created_at), UUID(order_id)
        )
    except (binascii.Error, ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError("not a cursor of this listing") from exc
    if cursor.created_at.tzinfo is None:
        raise ValueError("not a cursor of this listing")
    return cursor
