"""The unit of work: a batch of commands applied in one PostgreSQL transaction.

Each command's outcome is recorded in `command_outcomes` (the inbox) in the same transaction as its
change, so a redelivered command is answered from there and changes nothing twice. Each command is
looked up and written as its caller (services/core/tenancy.py), so row-level security decides what
it may see and change; the inbox and analytics are written as the worker itself."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from services.core.decision import HIDDEN, Decision, Lookup, OrderState, decide
from services.core.messages import (
    ChangeStatus,
    CommandResult,
    CreateOrder,
    OrderEvent,
    OrderView,
    Outcome,
)
from services.core.statuses import OrderStatus
from services.core.tenancy import acting_as
from services.status_worker import queries

log = logging.getLogger(__name__)

ANALYTICS_TYPES = {
    Outcome.CONFLICT: "order_status_conflict",
    Outcome.FORBIDDEN: "order_status_forbidden",
}


@dataclass(frozen=True, slots=True)
class Incoming:
    """A decoded command and where in the commands topic it came from."""

    command: CreateOrder | ChangeStatus
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Processed:
    result: CommandResult
    event: OrderEvent | None
    source: tuple[int, int]
    """Partition and offset of the message that first produced this outcome. When it differs from
    the message at hand, this message is a second copy of an already applied command."""
    failure: str | None = None
    """Why the command could not be applied (outcome `error`): it is also dead-lettered."""


class WorkerDatabase:
    """One connection, reopened after a failure. Server-side prepared statements kick in by reuse."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None

    def connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url, autocommit=False, connect_timeout=5)
        return self._conn

    def reset(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None

    def ping(self) -> None:
        conn = self.connection()
        conn.execute(queries.PING)
        conn.rollback()


class CommandFailed(Exception):
    """A command the database refused for a reason that retrying will not cure."""


def apply_batch(
    conn: psycopg.Connection[Any], batch: Sequence[Incoming], now: datetime, *, isolate: bool
) -> list[Processed]:
    """Applies `batch` in order in one transaction. With `isolate`, each command runs in a savepoint
    and one the database refuses gets an `error` outcome instead of failing the batch."""
    with conn.transaction():
        stored = _stored_outcomes(conn, [item.command.command_id for item in batch])
        processed: list[Processed] = []
        for item in batch:
            seen = stored.get(item.command.command_id)
            if seen is not None:
                processed.append(seen)
                continue
            outcome = (
                _apply_isolated(conn, item, now) if isolate else apply_command(conn, item, now)
            )
            stored[item.command.command_id] = outcome
            processed.append(outcome)
        return processed


# SQLSTATE classes that depend on one command's data: data exceptions, integrity violations and
# errors raised by PL/pgSQL. Anything else (connection, privileges, missing schema, resources,
# deadlocks) concerns the whole system: the batch waits and is retried, no command is failed for it.
COMMAND_ERROR_CLASSES = ("22", "23", "P0")


def refuses_only_this_command(exc: Exception) -> bool:
    """True for failures tied to one command: its data, or a bug its content triggers."""
    if not isinstance(exc, psycopg.Error):
        return True
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):  # also when raised client-side
        return True
    return (exc.sqlstate or "")[:2] in COMMAND_ERROR_CLASSES


def _apply_isolated(conn: psycopg.Connection[Any], item: Incoming, now: datetime) -> Processed:
    try:
        with conn.transaction():
            return apply_command(conn, item, now)
    except Exception as exc:
        if not refuses_only_this_command(exc):
            raise
        log.error(
            "command could not be applied",
            extra={"evt": "order_status_exception", "command_id": str(item.command.command_id)},
            exc_info=True,
        )
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        failed = _result(item.command, Decision(Outcome.ERROR, detail=type(exc).__name__), now)
        _record(conn, item, failed, None, now)
        return Processed(failed, None, (item.partition, item.offset), failure=reason)


def apply_command(conn: psycopg.Connection[Any], item: Incoming, now: datetime) -> Processed:
    command = item.command
    # Pipelined: the switch to the caller's role travels with the lookup and the switch back with
    # the bookkeeping, so acting as the caller costs no extra round trips.
    with conn.pipeline():
        with acting_as(conn, command.actor):
            decision = decide(_lookup(conn, command.order_id), command, now)
            if decision.applied:
                decision = _write_as_permitted(conn, command, decision, now)
        result = _result(command, decision, now)
        event = _event(command, decision) if decision.applied else None
        analytics = ANALYTICS_TYPES.get(decision.outcome)
        if analytics is not None:
            _record_analytics(conn, analytics, command, decision, now)
        _record(conn, item, result, event, now)
    return Processed(result, event, (item.partition, item.offset))


def _stored_outcomes(conn: psycopg.Connection[Any], ids: list[UUID]) -> dict[UUID, Processed]:
    rows = conn.execute(queries.STORED_OUTCOMES, {"ids": ids}).fetchall()
    return {
        row[0]: Processed(
            CommandResult.model_validate(row[1]),
            OrderEvent.model_validate(row[2]) if row[2] is not None else None,
            (row[3], row[4]),
        )
        for row in rows
    }


def _lookup(conn: psycopg.Connection[Any], order_id: UUID) -> Lookup:
    """What the caller's policies let it see: the order, HIDDEN (exists, not the caller's), or None.
    An UPDATE of a hidden row would silently match nothing, so the two cases are told apart here."""
    row = conn.execute(queries.LOCK_ORDER, {"order_id": order_id}).fetchone()
    if row is not None:
        return OrderState(row[0], row[1], OrderStatus(row[2]), row[3], row[4])
    exists = conn.execute(queries.ORDER_EXISTS, {"order_id": order_id}).fetchone()
    return HIDDEN if exists is not None and exists[0] else None


def _write_as_permitted(
    conn: psycopg.Connection[Any],
    command: CreateOrder | ChangeStatus,
    decision: Decision,
    now: datetime,
) -> Decision:
    """Writes the change. A new order is the one write whose permission the lookup cannot tell:
    when the insert policy refuses it (a restaurant the caller may not act for), nothing is written
    and the outcome is `forbidden`, decided by PostgreSQL. A change was permitted by the lookup
    (`FOR UPDATE` applies the update policy)."""
    if isinstance(command, ChangeStatus):
        _write_change(conn, command, decision, now)
        return decision
    try:
        with conn.transaction():
            _write_change(conn, command, decision, now)
    except psycopg.errors.InsufficientPrivilege:
        return Decision(Outcome.FORBIDDEN, detail="caller may not act for this restaurant")
    return decision


def _write_change(
    conn: psycopg.Connection[Any],
    command: CreateOrder | ChangeStatus,
    decision: Decision,
    now: datetime,
) -> None:
    order, change = decision.order, decision.change
    assert order is not None and change is not None
    if isinstance(command, CreateOrder):
        conn.execute(
            queries.INSERT_ORDER,
            {
                "order_id": order.order_id,
                "restaurant_id": order.restaurant_id,
                "status": order.status.value,
                "version": order.version,
                "now": now,
            },
        )
        return
    updated = conn.execute(
        queries.UPDATE_ORDER_STATUS,
        {
            "order_id": order.order_id,
            "status": order.status.value,
            "version": order.version,
            "previous_version": order.version - 1,
            "now": now,
        },
    )
    matched = len(updated.fetchall())  # RETURNING: a row count that pipeline mode also gives
    if matched != 1:
        # The row was locked above, so this means a policy or a concurrent writer outside the
        # worker interfered: never report an update that did not happen.
        raise CommandFailed(f"update of order {order.order_id} matched {matched} rows")
    conn.execute(
        queries.INSERT_STATUS_EVENT,
        {
            "order_id": order.order_id,
            "restaurant_id": order.restaurant_id,
            "from_status": change.from_status.value if change.from_status else None,
            "to_status": change.to_status.value,
            "version": change.version,
            "command_id": command.command_id,
            "actor": command.actor.sub,
            "reason": command.reason,
            "now": now,
        },
    )


def _record_analytics(
    conn: psycopg.Connection[Any],
    analytics_type: str,
    command: CreateOrder | ChangeStatus,
    decision: Decision,
    now: datetime,
) -> None:
    order = decision.order
    conn.execute(
        queries.INSERT_WIDGET_EVENT,
        {
            "type": analytics_type,
            "restaurant_id": _restaurant_of(command, decision.order),
            "order_id": command.order_id,
            "command_id": command.command_id,
            "payload": Jsonb(
                {
                    "conflict": decision.conflict.value if decision.conflict else None,
                    "requested": getattr(command, "status", None),
                    "current_status": order.status.value if order else None,
                    "actor": command.actor.sub,
                    "actor_role": command.actor.role.value,
                }
            ),
            "now": now,
        },
    )


def _record(
    conn: psycopg.Connection[Any],
    item: Incoming,
    result: CommandResult,
    event: OrderEvent | None,
    now: datetime,
) -> None:
    command = item.command
    conn.execute(
        queries.INSERT_OUTCOME,
        {
            "command_id": command.command_id,
            "order_id": command.order_id,
            "restaurant_id": _restaurant_of(command, result.order),
            "command_type": command.type,
            "outcome": result.outcome.value,
            "result": Jsonb(result.model_dump(mode="json")),
            "event": Jsonb(event.model_dump(mode="json")) if event else None,
            "partition": item.partition,
            "offset": item.offset,
            "actor_sub": command.actor.sub,
            "actor_role": command.actor.role.value,
            "now": now,
        },
    )


def _restaurant_of(
    command: CreateOrder | ChangeStatus, order: OrderState | OrderView | None
) -> UUID | None:
    """The order's restaurant when the caller could see it, else the one a create asked for; never
    the restaurant of an order the policies hid from the caller."""
    if order is not None:
        return order.restaurant_id
    return command.restaurant_id if isinstance(command, CreateOrder) else None


def _result(
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


def _event(command: CreateOrder | ChangeStatus, decision: Decision) -> OrderEvent:
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
