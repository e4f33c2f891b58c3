"""What a decision answers: the command's result for its caller and, for an applied change, the
event for everyone downstream. Pure, beside `decide` (services/core/decision.py)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from services.core.decision import Decision, OrderState
from services.core.messages import ChangeStatus, CommandResult, CreateOrder, OrderEvent, OrderView


def result_of(
    command: CreateOrder | ChangeStatus, decision: Decision, now: datetime
) -> CommandResult:
    return CommandResult(
        command_id=command.command_id,
        order_id=command.order_id,
        command_type=command.type,
        outcome=decision.outcome,
        conflict=decision.conflict,
        order=decision.order.view() if decision.order else None,
        detail=decision.detail,
        rid=command.rid,
        processed_at=now,
    )


def event_of(command: CreateOrder | ChangeStatus, decision: Decision) -> OrderEvent:
    """The applied change as an event; `decision` must be applied."""
    order, change = decision.order, decision.change
    assert order is not None and change is not None
    return OrderEvent(
        event_id=command.command_id,
        type="order.created" if isinstance(command, CreateOrder) else "order.status_changed",
        order_id=order.order_id,
        restaurant_id=order.restaurant_id,
        from_status=change.from_status,
        to_status=change.to_status,
        version=change.version,
        actor_sub=command.actor.sub,
        reason=command.reason if isinstance(command, ChangeStatus) else None,
        rid=command.rid,
        occurred_at=order.updated_at,
    )


def restaurant_of(
    command: CreateOrder | ChangeStatus, order: OrderState | OrderView | None
) -> UUID | None:
    """The order's restaurant when the caller could see it, else the one a create asked for; never
    the restaurant of an order the policies hid from the caller."""
    if order is not None:
        return order.restaurant_id
    return command.restaurant_id if isinstance(command, CreateOrder) else None
