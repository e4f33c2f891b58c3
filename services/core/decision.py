"""The decision: current order + command -> outcome. Pure: no I/O, no clock, no randomness."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

from services.core.messages import (
    ChangeStatus,
    ConflictType,
    CreateOrder,
    OrderView,
    Outcome,
)
from services.core.statuses import OrderStatus, can_transition


@dataclass(frozen=True, slots=True)
class OrderState:
    order_id: UUID
    restaurant_id: UUID
    status: OrderStatus
    version: int
    updated_at: datetime

    def view(self) -> OrderView:
        return OrderView(
            order_id=self.order_id,
            restaurant_id=self.restaurant_id,
            status=self.status,
            version=self.version,
            updated_at=self.updated_at,
        )


class _Hidden:
    """The order exists but the caller may not see it (row-level security filtered it out)."""

    def __repr__(self) -> str:
        return "HIDDEN"


HIDDEN: Final = _Hidden()

Lookup = OrderState | _Hidden | None


@dataclass(frozen=True, slots=True)
class StatusChange:
    from_status: OrderStatus | None
    to_status: OrderStatus
    version: int


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    conflict: ConflictType | None = None
    order: OrderState | None = None
    """State after the command when applied; the current state when visible otherwise."""
    change: StatusChange | None = None
    detail: str = ""

    @property
    def applied(self) -> bool:
        return self.outcome is Outcome.APPLIED


def decide(lookup: Lookup, command: CreateOrder | ChangeStatus, now: datetime) -> Decision:
    if isinstance(command, CreateOrder):
        return _decide_create(lookup, command, now)
    return _decide_change(lookup, command, now)


def _decide_create(lookup: Lookup, command: CreateOrder, now: datetime) -> Decision:
    # Who may create for which restaurant is not decided here but by the insert policy when the
    # worker writes the order (a refused insert becomes `forbidden`). An id taken by an order the
    # policies hide is a conflict that shows nothing of it.
    if lookup is HIDDEN:
        return Decision(Outcome.CONFLICT, ConflictType.ORDER_EXISTS, detail="order id is taken")
    if isinstance(lookup, OrderState):
        return Decision(
            Outcome.CONFLICT, ConflictType.ORDER_EXISTS, order=lookup, detail="order exists"
        )
    created = OrderState(command.order_id, command.restaurant_id, OrderStatus.PENDING, 1, now)
    return Decision(
        Outcome.APPLIED, order=created, change=StatusChange(None, OrderStatus.PENDING, 1)
    )


def _decide_change(lookup: Lookup, command: ChangeStatus, now: datetime) -> Decision:
    if lookup is None:
        return Decision(Outcome.NOT_FOUND, detail="no such order")
    if lookup is HIDDEN or not isinstance(lookup, OrderState):
        return Decision(Outcome.FORBIDDEN, detail="caller may not act for this order's restaurant")
    # Visible means the policies let the caller act for it: row-level security, not this code,
    # decides tenancy (services/status_worker/db.py looks the order up as the caller).
    order = lookup
    if command.expected_version is not None and command.expected_version != order.version:
        return Decision(
            Outcome.CONFLICT,
            ConflictType.STALE_VERSION,
            order=order,
            detail=f"expected version {command.expected_version}, order is at {order.version}",
        )
    if not can_transition(order.status, command.status):
        return Decision(
            Outcome.CONFLICT,
            ConflictType.INVALID_TRANSITION,
            order=order,
            detail=f"cannot go from {order.status} to {command.status}",
        )
    changed = OrderState(
        order.order_id, order.restaurant_id, command.status, order.version + 1, now
    )
    return Decision(
        Outcome.APPLIED,
        order=changed,
        change=StatusChange(order.status, command.status, changed.version),
    )
