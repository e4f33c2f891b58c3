"""The use case: apply one command in a unit of work. The command is looked up and written as its
caller (row-level security decides what it may see and change); `decide` (pure) says what happens;
the outcome is recorded in the inbox in the same transaction as the change, so a redelivered command
is answered from there and changes nothing twice."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg

from services.core.decision import Decision, decide
from services.core.messages import ChangeStatus, CreateOrder, Outcome
from services.core.outcomes import OUTCOME_NAMES
from services.core.results import event_of, result_of
from services.status_worker.batch import DeadLetter, Incoming, Processed
from services.status_worker.bulk import FORBIDDEN_CREATE, first_copies, fold, plan
from services.status_worker.db import UnitOfWork
from services.status_worker.repository import (
    Sighting,
    analytics_row,
    matched_one,
)

log = logging.getLogger(__name__)

ANALYTICS_TYPES = {
    outcome: OUTCOME_NAMES[outcome].evt for outcome in (Outcome.CONFLICT, Outcome.FORBIDDEN)
}
"""Refusals kept in widget_events for the figures, typed by the outcome's evt."""
ERROR_EVT = OUTCOME_NAMES[Outcome.ERROR].evt

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


Check = Callable[[], None]
"""A check of a write whose result arrives later (pipeline mode): raises CommandFailed."""


def apply_batch(
    uow: UnitOfWork,
    batch: Sequence[Incoming],
    now: datetime,
    *,
    isolate: bool,
    invalid: Sequence[DeadLetter] = (),
) -> list[Processed]:
    """Applies `batch` in order in one transaction, and records the `invalid` outcomes of the
    undecodable commands in `invalid`. Set-based (bulk.py): per caller, one round trip looks its
    orders up and each table gets one statement; the writes are checked once the batch has synced,
    and any surprise fails the batch. With `isolate`, each command runs in a savepoint with its
    writes checked at once, and one the database refuses gets an `error` outcome instead of
    failing the batch."""
    with uow:
        for letter in invalid:
            _record_invalid(uow, letter, now, isolate=isolate)
        stored = uow.repository.stored_outcomes([item.command for item in batch])
        pending = [item for item in first_copies(batch) if item.command.command_id not in stored]
        if isolate:
            for item in pending:
                stored[item.command.command_id] = apply_isolated(item, uow, now)
        else:
            stored.update(_apply_sets(uow, pending, now))
        return [stored[item.command.command_id] for item in batch]


def _apply_sets(uow: UnitOfWork, pending: list[Incoming], now: datetime) -> dict[UUID, Processed]:
    """The set-based batch in the connection's pipeline: each caller's group as that caller, then
    the commands on orders several callers touch one by one, then the inbox and analytics rows."""
    groups, mixed = plan(pending)
    done: dict[UUID, Processed] = {}
    bookkeeping = Bookkeeping()
    checks: list[Check] = []
    with uow.pipeline():
        for group in groups:
            with uow.acting_as(group.actor):
                sightings = uow.repository.sightings(group.order_ids(), group.creating_for())
                decisions, writes = fold(group.items, sightings, now)
                checks.append(uow.repository.write_changes(writes, now))
            for item, decision in zip(group.items, decisions, strict=True):
                done[item.command.command_id] = bookkeeping.add(item, decision, now)
        uow.repository.record_outcomes(bookkeeping.outcomes, now)
        uow.repository.record_analytics_rows(bookkeeping.analytics, now)
        for item in mixed:
            done[item.command.command_id] = apply(item, uow, now, checks)
    for check in checks:
        check()
    return done


class Bookkeeping:
    """The inbox and analytics rows of a set-based batch, written once all groups are decided."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[Incoming, Processed]] = []
        self.analytics: list[dict[str, Any]] = []

    def add(self, item: Incoming, decision: Decision, now: datetime) -> Processed:
        analytics = ANALYTICS_TYPES.get(decision.outcome)
        if analytics is not None:
            self.analytics.append(analytics_row(analytics, item.command, decision))
        processed = processed_of(item, decision, now)
        self.outcomes.append((item, processed))
        return processed


def processed_of(item: Incoming, decision: Decision, now: datetime) -> Processed:
    """The command's result and, for an applied change, its event: what the batch publishes."""
    event = event_of(item.command, decision) if decision.applied else None
    return Processed(result_of(item.command, decision, now), event, (item.partition, item.offset))


def apply(
    item: Incoming, uow: UnitOfWork, now: datetime, deferred: list[Check] | None = None
) -> Processed:
    """Applies one command. With `deferred`, inside the batch's pipeline: its write checks are
    appended there, to run after the pipeline synced. Without, in a pipeline of its own, each
    write checked at once."""
    command = item.command
    # Pipelined: the switch to the caller's role travels with the lookup and the switch back with
    # the bookkeeping, so acting as the caller costs no extra round trips.
    with uow.pipeline() if deferred is None else contextlib.nullcontext():
        with uow.acting_as(command.actor):
            creating_for = command.restaurant_id if isinstance(command, CreateOrder) else None
            sighting = uow.repository.lookup(command.order_id, creating_for)
            decision = decide(sighting.lookup, command, now)
            if decision.applied:
                decision = _write_as_permitted(uow, command, decision, now, sighting, deferred)
        analytics = ANALYTICS_TYPES.get(decision.outcome)
        if analytics is not None:
            uow.repository.record_analytics(analytics, command, decision, now)
        processed = processed_of(item, decision, now)
        uow.repository.record_outcome(item, processed, now)
    return processed


def apply_isolated(item: Incoming, uow: UnitOfWork, now: datetime) -> Processed:
    """`apply` in a savepoint: a command the database refuses gets an `error` outcome."""
    try:
        with uow.savepoint():
            return apply(item, uow, now)
    except Exception as exc:
        if not refuses_only_this_command(exc):
            raise
        log.error(
            "command could not be applied",
            extra={"evt": ERROR_EVT, "command_id": str(item.command.command_id)},
            exc_info=True,
        )
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        failed = result_of(item.command, Decision(Outcome.ERROR, detail=type(exc).__name__), now)
        processed = Processed(failed, None, (item.partition, item.offset), failure=reason)
        uow.repository.record_outcome(item, processed, now)
        return processed


def _record_invalid(uow: UnitOfWork, letter: DeadLetter, now: datetime, *, isolate: bool) -> None:
    """Isolated, a row the database refuses is skipped: the dead letter still carries the command."""
    if not isolate:
        uow.repository.record_invalid(letter, now)
        return
    try:
        with uow.savepoint():
            uow.repository.record_invalid(letter, now)
    except Exception as exc:
        if not refuses_only_this_command(exc):
            raise
        log.error("invalid outcome not recorded", extra={"evt": ERROR_EVT})


def _write_as_permitted(
    uow: UnitOfWork,
    command: CreateOrder | ChangeStatus,
    decision: Decision,
    now: datetime,
    sighting: Sighting,
    checks: list[Check] | None,
) -> Decision:
    """Writes the change. A new order is the one write whose permission the lookup alone cannot
    tell: the insert policy's own expression, asked with the lookup, says `forbidden` (decided by
    PostgreSQL). Outside the batch pipeline (isolated), the insert also runs in a savepoint, so
    that whatever the policy refuses is `forbidden` too. A change was permitted by the lookup
    (`FOR UPDATE` applies the update policy)."""
    order = decision.order
    assert order is not None
    if isinstance(command, CreateOrder):
        if not sighting.may_create:
            return FORBIDDEN_CREATE
        if checks is not None:  # in the batch pipeline: a surprise fails the batch
            uow.repository.insert_order(order, now)
            return decision
        try:
            with uow.savepoint():
                uow.repository.insert_order(order, now)
        except psycopg.errors.InsufficientPrivilege:
            return FORBIDDEN_CREATE
        return decision
    matched = uow.repository.update_status(order, now)
    if checks is None:
        matched_one(matched())
    else:
        checks.append(lambda: matched_one(matched()))
    uow.repository.insert_status_event(command, decision, now)
    return decision
