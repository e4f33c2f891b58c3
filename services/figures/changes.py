"""What the figures app reads off the wire, reduced to the fields it aggregates.

Events: the CloudEvents contract (services/core/events.py, docs/consuming-events.md); results: the
`CommandResult` of every command. Anything else raises ValueError and is skipped (and counted)."""

from __future__ import annotations

from dataclasses import dataclass

from services.core.events import decode_cloud_event
from services.core.messages import Outcome, decode_result
from services.core.statuses import OrderStatus


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
    """An order CloudEvent (structured JSON mode); ValueError on anything else."""
    event = decode_cloud_event(raw)
    data = event.data
    return Change(
        order_id=str(data.order_id),
        restaurant_id=str(data.restaurant_id),
        from_status=data.from_status,
        to_status=data.to_status,
        version=data.version,
        at=event.time.timestamp(),
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
