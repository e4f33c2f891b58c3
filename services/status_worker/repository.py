"""The worker's repositories: orders and their history, the inbox (`command_outcomes`) and the
dead-letter guard's trips. Named queries (queries.py); rows read by column name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString
from uuid import UUID

import psycopg
from psycopg import Cursor
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from services.core.decision import HIDDEN, Decision, Lookup, OrderState
from services.core.kafka_records import position
from services.core.messages import ChangeStatus, CommandResult, CreateOrder, OrderEvent
from services.core.results import restaurant_of
from services.core.statuses import OrderStatus
from services.status_worker import queries
from services.status_worker.batch import DeadLetter, Incoming, Processed


@dataclass(frozen=True, slots=True)
class Sighting:
    """An order as the caller sees it, and whether the caller may create one for the restaurant
    a create names (False for changes)."""

    lookup: Lookup
    may_create: bool


class Repository:
    """Reads and writes of one unit of work, on its connection (pipeline mode too)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def _rows(self, query: LiteralString, params: dict[str, Any]) -> list[DictRow]:
        return self.conn.cursor(row_factory=dict_row).execute(query, params).fetchall()

    def stored_outcomes(self, ids: list[UUID]) -> dict[UUID, Processed]:
        """The inbox's answers to the commands of `ids` that already have one."""
        return {
            row["command_id"]: Processed(
                CommandResult.model_validate(row["result"]),
                OrderEvent.model_validate(row["event"]) if row["event"] is not None else None,
                (row["source_partition"], row["source_offset"]),
                failure=row["failure"],
            )
            for row in self._rows(queries.STORED_OUTCOMES, {"ids": ids})
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
            row = rows[0]
            state = OrderState(
                row["id"],
                row["restaurant_id"],
                OrderStatus(row["status"]),
                row["version"],
                row["updated_at"],
            )
            return Sighting(state, may_create)
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
        order, change = decision.order, decision.change
        assert order is not None and change is not None
        self.conn.execute(
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

    def record_analytics(
        self,
        analytics_type: str,
        command: CreateOrder | ChangeStatus,
        decision: Decision,
        now: datetime,
    ) -> None:
        order = decision.order
        payload = {
            "conflict": decision.conflict.value if decision.conflict else None,
            "requested": getattr(command, "status", None),
            "current_status": order.status.value if order else None,
            "actor": command.actor.sub,
            "actor_role": command.actor.role.value,
        }
        self.conn.execute(
            queries.INSERT_WIDGET_EVENT,
            {
                "type": analytics_type,
                "restaurant_id": restaurant_of(command, decision.order),
                "order_id": command.order_id,
                "command_id": command.command_id,
                "payload": Jsonb(payload),
                "now": now,
            },
        )

    def record_outcome(self, item: Incoming, processed: Processed, now: datetime) -> None:
        """The inbox row: a refused command keeps its reason and the command itself."""
        command, result, event = item.command, processed.result, processed.event
        failed = processed.failure is not None
        self.conn.execute(
            queries.INSERT_OUTCOME,
            {
                "command_id": command.command_id,
                "order_id": command.order_id,
                "restaurant_id": restaurant_of(command, result.order),
                "command_type": command.type,
                "outcome": result.outcome.value,
                "result": Jsonb(result.model_dump(mode="json")),
                "event": Jsonb(event.model_dump(mode="json")) if event else None,
                "partition": item.partition,
                "offset": item.offset,
                "actor_sub": command.actor.sub,
                "actor_role": command.actor.role.value,
                "failure": processed.failure,
                "command": Jsonb(command.model_dump(mode="json")) if failed else None,
                "now": now,
            },
        )

    def record_invalid(self, letter: DeadLetter, now: datetime) -> None:
        """An undecodable command's `invalid` outcome, readable by its issuer when known."""
        result = letter.result
        assert result is not None
        _, partition, offset = position(letter.message)
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
                "now": now,
            },
        )


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
