"""What the figures app reads off the wire, reduced to the fields it aggregates.

Events: the CloudEvents contract (docs/consuming-events.md, EVENT_CONTRACT); results: the
`CommandResult` of every command. Anything else raises ValueError and is skipped (and counted)."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import orjson
from pydantic import AwareDatetime, BaseModel, TypeAdapter

from services.core.messages import OrderEvent, Outcome, decode_event, decode_result
from services.core.statuses import OrderStatus

CLOUDEVENT_TYPES = {
    "com.orderstatus.order.created.v1",
    "com.orderstatus.order.status_changed.v1",
}


@dataclass(frozen=True)
class Change:
    """One applied change of one order: creation has no `from_status`."""

    order_id: str
    restaurant_id: str
    from_status: OrderStatus | None
    to_status: OrderStatus
    version: int
    at: float
    """When the change was applied (epoch seconds): the same instant as the row's created_at."""


@dataclass(frozen=True)
class Refusal:
    """A conflict or forbidden outcome. `restaurant_id` is the one the result shows, if any."""

    order_id: str
    restaurant_id: str | None
    outcome: Outcome
    at: float


def decode_change(raw: bytes) -> Change:
    """A CloudEvents order event (structured JSON mode), or the worker's internal `OrderEvent`
    that the events topic carried before the CloudEvents contract."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    if document.get("specversion") is None:
        legacy = decode_event(raw)
        return _change(legacy, legacy.occurred_at.timestamp())
    if document.get("type") not in CLOUDEVENT_TYPES:
        raise ValueError(f"not an order CloudEvent: type {document.get('type')!r}")
    return _CLOUD_EVENT.validate_python(document).change()


class _CloudData(BaseModel):
    order_id: UUID
    restaurant_id: UUID
    from_status: OrderStatus | None
    to_status: OrderStatus
    version: int


class _CloudEvent(BaseModel):
    """The fields of the CloudEvents contract (services/core/events.py) that figures use."""

    time: AwareDatetime
    data: _CloudData

    def change(self) -> Change:
        return _change(self.data, self.time.timestamp())


_CLOUD_EVENT = TypeAdapter(_CloudEvent)


def _change(data: _CloudData | OrderEvent, at: float) -> Change:
    return Change(
        order_id=str(data.order_id),
        restaurant_id=str(data.restaurant_id),
        from_status=data.from_status,
        to_status=data.to_status,
        version=data.version,
        at=at,
    )


REFUSALS = frozenset({Outcome.CONFLICT, Outcome.FORBIDDEN})


def decode_refusal(raw: bytes) -> Refusal | None:
    """The result's refusal, or None for any other outcome. Raises ValueError on a bad record."""
    result = decode_result(raw)
    if result.outcome not in REFUSALS:
        return None
    return Refusal(
        order_id=str(result.order_id),
        restaurant_id=str(result.order.restaurant_id) if result.order else None,
        outcome=result.outcome,
        at=result.processed_at.timestamp(),
    )
