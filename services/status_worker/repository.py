"""The worker's repositories: orders and their history, the inbox (`command_outcomes`) and the
dead-letter guard's trips. Named queries (queries.py); rows read by column name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString
from uuid import UUID

import psycopg
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message
from psycopg import Cursor
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from services.adapters.kafka_records import position
from services.core.decision import HIDDEN, Decision, Lookup, OrderState
from services.core.messages import ChangeStatus, Command, CommandResult, CreateOrder, OrderEvent
from services.core.results import restaurant_of
from services.core.statuses import OrderStatus
from services.status_worker import queries
from services.status_worker.batch import DeadLetter, Incoming, Processed
from services.status_worker.bulk import Sightings, Writes

INBOX_LOOKBACK = timedelta(hours=24)
"""How much earlier than a batch's commands the inbox lookup reaches (queries.STORED_OUTCOMES;
WORKER_INBOX_LOOKBACK_S): the Idempotency-Key lifetime, over which an API from before migration
0016 could republish a claimed command under a later issued_at. Copies from a current API or
replay carry the first's."""
CLOCK_MARGIN = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Sighting:
    """An order as the caller sees it, and whether the caller may create one for the restaurant
    a create names (False for changes)."""

    lookup: Lookup
    may_create: bool


class Repository:
    """Reads and writes of one unit of work, on its connection (pipeline mode too)."""

    def __init__(
        self, conn: psycopg.Connection[Any], inbox_lookback: timedelta = INBOX_LOOKBACK
    ) -> None:
        self.conn = conn
        self.inbox_lookback = inbox_lookback

    def _rows(self, query: LiteralString, params: dict[str, Any]) -> list[DictRow]:
        return self.conn.cursor(row_factory=dict_row).execute(query, params).fetchall()

    def stored_outcomes(self, commands: Sequence[Command]) -> dict[UUID, Processed]:
        """The inbox's answers to those of `commands` that already have one."""
        if not commands:
            return {}
        issued = [command.issued_at for command in commands]
        params = {
            "ids": [command.command_id for command in commands],
            "earliest": min(issued) - self.inbox_lookback,
            # Rows moved in by migration 0015 carry their created_at: before the worker's now
            # (a minute's margin for the database's clock).
            "latest": max(*issued, datetime.now(UTC)) + CLOCK_MARGIN,
        }
        return {
            row["command_id"]: Processed(
                CommandResult.model_validate(row["result"]),
                OrderEvent.model_validate(row["event"]) if row["event"] is not None else None,
                (row["source_partition"], row["source_offset"]),
                failure=row["failure"],
            )
            for row in self._rows(queries.STORED_OUTCOMES, params)
        }

    def lookup(self, order_id: UUID, creating_for: UUID | None = None) -> Sighting:
        """What the caller's policies let it see: the order, HIDDEN (exists, not the caller's), or
        None. An UPDATE of a hidden row would silently match nothing, so the two are told apart.
        With `creating_for`, also whether the insert policy lets the caller create an order for
        that restaurant. A create's questions travel together (one round trip in pipeline mode):
        its order is seldom visible; a change asks whether a hidden order exists only when it
        sees none."""
        locked = self._send(queries.LOCK_ORDER, {"order_id": order_id})
        exists = allowed = None
        if creating_for is not None:
            exists = self._send(queries.ORDER_EXISTS, {"order_id": order_id})
            allowed = self._send(queries.MAY_ACT_FOR, {"restaurant_id": creating_for})
        rows = locked.fetchall()
        may_create = bool(allowed.fetchall()[0]["may_act"]) if allowed is not None else False
        if rows:
            return Sighting(state_of(rows[0]), may_create)
        exists = exists or self._send(queries.ORDER_EXISTS, {"order_id": order_id})
        found = exists.fetchall()
        return Sighting(HIDDEN if found and found[0]["order_exists"] else None, may_create)

    def _send(self, query: LiteralString, params: dict[str, Any]) -> Cursor[DictRow]:
        """Sends `query`; its rows are read later (in pipeline mode, without a round trip each)."""
        cursor = self.conn.cursor(row_factory=dict_row)
        cursor.execute(query, params)
        return cursor

    def insert_order(self, order: OrderState, now: datetime) -> None:
        self.conn.execute(
            queries.INSERT_ORDER,
            {
                "order_id": order.order_id,
                "restaurant_id": order.restaurant_id,
                "status": order.status.value,
                "version": order.version,
                "now": now,
            },
        )

    def update_status(self, order: OrderState, now: datetime) -> Callable[[], int]:
        """Moves the order to `order`'s status and version; returns how to count the rows it
        matched (in pipeline mode, counting waits for the result: call it after a sync)."""
        updated = self.conn.execute(
            queries.UPDATE_ORDER_STATUS,
            {
                "order_id": order.order_id,
                "status": order.status.value,
                "version": order.version,
                "previous_version": order.version - 1,
                "now": now,
            },
        )
        return lambda: len(updated.fetchall())  # RETURNING: a count pipeline mode also gives

    def insert_status_event(self, command: ChangeStatus, decision: Decision, now: datetime) -> None:
        self.conn.execute(
            queries.INSERT_STATUS_EVENT, {**status_event_row(command, decision), "now": now}
        )

    def record_analytics(
        self,
        analytics_type: str,
        command: CreateOrder | ChangeStatus,
        decision: Decision,
        now: datetime,
    ) -> None:
        row = analytics_row(analytics_type, command, decision)
        self.conn.execute(queries.INSERT_WIDGET_EVENT, {**row, "now": now})

    def record_outcome(self, item: Incoming, processed: Processed, now: datetime) -> None:
        """The inbox row: a refused command keeps its reason and the command itself."""
        self.conn.execute(queries.INSERT_OUTCOME, {**outcome_row(item, processed), "now": now})

    # ---- a batch's writes, one statement per table (bulk.py) ----------------------------------

    def sightings(self, order_ids: list[UUID], creating_for: list[UUID]) -> Sightings:
        """`lookup` for many orders at once, in one round trip (pipeline mode)."""
        locked = self._send(queries.LOCK_ORDERS, {"ids": order_ids})
        existing = self._send(queries.ORDERS_EXISTING, {"ids": order_ids})
        allowed = None
        if creating_for:
            allowed = self._send(queries.MAY_ACT_FOR_EACH, {"restaurant_ids": creating_for})
        visible = {row["id"]: state_of(row) for row in locked.fetchall()}
        found = frozenset(row["id"] for row in existing.fetchall())
        rows = allowed.fetchall() if allowed is not None else []
        return Sightings(visible, found, {r["restaurant_id"]: bool(r["may_act"]) for r in rows})

    def write_changes(self, writes: Writes, now: datetime) -> Callable[[], None]:
        """Creates, updates and history rows of one group; returns the check of the update's row
        count, to call once the pipeline synced (raises CommandFailed)."""
        if writes.created:
            created = [order_row(order) for order in writes.created]
            self.conn.execute(queries.INSERT_ORDERS, {**transposed(created), "now": now})
        expected = len(writes.updated)
        updated = None
        if expected:
            rows = [
                {**order_row(order), "previous_version": before}
                for order, before in writes.updated.values()
            ]
            updated = self.conn.execute(queries.UPDATE_ORDERS, {**transposed(rows), "now": now})
        if writes.changes:
            events = [status_event_row(command, decision) for command, decision in writes.changes]
            self.conn.execute(queries.INSERT_STATUS_EVENTS, {**transposed(events), "now": now})
        return lambda: _matched(len(updated.fetchall()) if updated else 0, expected)

    def record_outcomes(self, done: list[tuple[Incoming, Processed]], now: datetime) -> None:
        """The batch's inbox rows, as one JSON document: far cheaper to send than arrays of jsonb."""
        if done:
            rows = [outcome_document(item, processed) for item, processed in done]
            self.conn.execute(queries.INSERT_OUTCOMES, {"rows": Jsonb(rows), "now": now})

    def record_analytics_rows(self, rows: list[dict[str, Any]], now: datetime) -> None:
        if rows:
            self.conn.execute(queries.INSERT_WIDGET_EVENTS, {**transposed(rows), "now": now})

    def record_invalid(self, letter: DeadLetter, now: datetime) -> None:
        """An undecodable command's `invalid` outcome, readable by its issuer when known."""
        result = letter.result
        assert result is not None
        _, partition, offset = position(letter.message)
        issued_at = record_time(letter.message) or now
        self.conn.execute(
            queries.INSERT_INVALID_OUTCOME,
            {
                "command_id": result.command_id,
                "order_id": result.order_id,
                "result": Jsonb(result.model_dump(mode="json")),
                "partition": partition,
                "offset": offset,
                "actor_sub": letter.actor.sub if letter.actor else None,
                "actor_role": letter.actor.role.value if letter.actor else None,
                "failure": letter.reason,
                "issued_at": issued_at,
                "now": now,
            },
        )


def record_time(message: Message) -> datetime | None:
    """A record's timestamp: an undecodable command's stand-in for its issued_at, the same on
    every redelivery of the record."""
    kind, millis = message.timestamp()
    return None if kind == TIMESTAMP_NOT_AVAILABLE else datetime.fromtimestamp(millis / 1000, UTC)


class CommandFailed(Exception):
    """A command the database refused for a reason that retrying will not cure."""


def matched_one(matched: int) -> None:
    _matched(matched, 1)


def _matched(matched: int, expected: int) -> None:
    if matched != expected:
        # The rows were locked as the caller, so this means a policy or a concurrent writer
        # outside the worker interfered: never report an update that did not happen.
        raise CommandFailed(f"update of {expected} orders matched {matched} rows")


def state_of(row: DictRow) -> OrderState:
    status = OrderStatus(row["status"])
    return OrderState(row["id"], row["restaurant_id"], status, row["version"], row["updated_at"])


def transposed(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rows as one list per column: the parameters of an `unnest(...)` statement."""
    return {name: [row[name] for row in rows] for name in rows[0]}


def order_row(order: OrderState) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "restaurant_id": order.restaurant_id,
        "status": order.status.value,
        "version": order.version,
    }


def status_event_row(command: ChangeStatus, decision: Decision) -> dict[str, Any]:
    order, change = decision.order, decision.change
    assert order is not None and change is not None
    return {
        "order_id": order.order_id,
        "restaurant_id": order.restaurant_id,
        "from_status": change.from_status.value if change.from_status else None,
        "to_status": change.to_status.value,
        "version": change.version,
        "command_id": command.command_id,
        "actor": command.actor.sub,
        "reason": command.reason,
    }


def analytics_row(
    analytics_type: str, command: CreateOrder | ChangeStatus, decision: Decision
) -> dict[str, Any]:
    order = decision.order
    payload = {
        "conflict": decision.conflict.value if decision.conflict else None,
        "requested": getattr(command, "status", None),
        "current_status": order.status.value if order else None,
        "actor": command.actor.sub,
        "actor_role": command.actor.role.value,
    }
    return {
        "type": analytics_type,
        "restaurant_id": restaurant_of(command, decision.order),
        "order_id": command.order_id,
        "command_id": command.command_id,
        "payload": Jsonb(payload),
    }


def outcome_document(item: Incoming, processed: Processed) -> dict[str, Any]:
    """An inbox row as JSON values: a refused command keeps its reason and the command itself."""
    command, result, event = item.command, processed.result, processed.event
    restaurant_id = restaurant_of(command, result.order)
    return {
        "command_id": str(command.command_id),
        "order_id": str(command.order_id),
        "restaurant_id": str(restaurant_id) if restaurant_id else None,
        "command_type": command.type,
        "issued_at": command.issued_at.isoformat(),
        "outcome": result.outcome.value,
        "result": result.model_dump(mode="json"),
        "event": event.model_dump(mode="json") if event else None,
        "source_partition": item.partition,
        "source_offset": item.offset,
        "actor_sub": command.actor.sub,
        "actor_role": command.actor.role.value,
        "failure": processed.failure,
        "command": command.model_dump(mode="json") if processed.failure is not None else None,
    }


def outcome_row(item: Incoming, processed: Processed) -> dict[str, Any]:
    """outcome_document as statement parameters."""
    row = outcome_document(item, processed)
    for name in ("result", "event", "command"):
        row[name] = Jsonb(row[name]) if row[name] is not None else None
    row["issued_at"] = item.command.issued_at
    return row


class GuardTrips:
    """Trips of the dead-letter guard of one consumer group, kept until an operator resets them."""

    def __init__(self, conn: psycopg.Connection[Any], group_id: str, worker_id: str = "") -> None:
        self.conn = conn
        self.group_id = group_id
        self.worker_id = worker_id

    def open_trip(self) -> str | None:
        """Why and when the group's guard tripped, while no operator has reset it."""
        with self.conn.transaction():
            cursor = self.conn.cursor(row_factory=dict_row)
            row = cursor.execute(queries.OPEN_GUARD_TRIP, {"group_id": self.group_id}).fetchone()
        return None if row is None else describe_trip(row)

    def record(self, reason: str) -> None:
        with self.conn.transaction():
            self.conn.execute(
                queries.RECORD_GUARD_TRIP,
                {"group_id": self.group_id, "worker_id": self.worker_id, "reason": reason},
            )

    def reset(self) -> list[str]:
        """Resets the open trips (as the owner); what each one was."""
        with self.conn.transaction():
            cursor = self.conn.cursor(row_factory=dict_row)
            rows = cursor.execute(queries.RESET_GUARD_TRIPS, {"group_id": self.group_id})
            return [describe_trip(row) for row in rows.fetchall()]


def describe_trip(row: DictRow) -> str:
    return f"tripped at {row['tripped_at']:%Y-%m-%d %H:%M:%S%z} by worker {row['worker_id']}: {row['reason']}"
