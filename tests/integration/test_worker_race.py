"""Two transactions through the worker's production code (services.status_worker.service.apply_batch)
change one order at the same time, on two connections: exactly one change wins, the other sees
the winner's version (a conflict, not a second write). The 50-way race of the end-to-end tests
never gets here: one partition, one worker, so its commands are applied one after another.

Both transactions are made to wait on the order's row at once (a third connection holds its lock
until both are waiting), so they really race for it when it is let go."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from services.adapters.settings import Settings
from services.adapters.tenancy import APP_ROLE
from services.core.messages import ChangeStatus, ConflictType, Outcome
from services.core.statuses import OrderStatus
from services.status_worker.batch import Incoming, Processed
from services.status_worker.db import UnitOfWork
from services.status_worker.service import apply_batch
from tests.integration.test_rls_worker import NOW, change, create, staff_of
from tests.stack import migrated_database

BOUND_S = 30.0
"""Longest wait for both transactions to be blocked: a bound on a hang, not a performance claim."""


@pytest.fixture(scope="module")
def urls(base_settings: Settings) -> Iterator[tuple[str, str]]:
    with migrated_database(base_settings) as urls:
        yield urls


def race(
    app_url: str, admin_url: str, order_id: uuid.UUID, commands: list[ChangeStatus]
) -> list[Any]:
    """Applies each command in its own transaction on its own connection, all at once."""
    results: list[Any] = [None] * len(commands)
    with psycopg.connect(admin_url) as holder:
        holder.execute("SELECT 1 FROM orders WHERE id = %s FOR UPDATE", (order_id,))

        def run(n: int) -> None:
            with psycopg.connect(app_url, autocommit=False) as conn:
                try:
                    results[n] = apply_batch(
                        UnitOfWork(conn), [Incoming(commands[n], n, 0)], NOW, isolate=False
                    )
                except Exception as exc:
                    results[n] = exc

        threads = [threading.Thread(target=run, args=(n,)) for n in range(len(commands))]
        for thread in threads:
            thread.start()
        with psycopg.connect(admin_url, autocommit=True) as watcher:
            deadline = time.monotonic() + BOUND_S
            while True:
                # Waiting on the holder, or (the second in line) on the first waiter's tuple lock.
                # (Only pg_blocking_pids: another role's wait_event is hidden from the owner.)
                row = watcher.execute(
                    """SELECT count(*) FROM pg_stat_activity
                       WHERE datname = current_database() AND usename = %s
                         AND cardinality(pg_blocking_pids(pid)) > 0""",
                    (APP_ROLE,),
                ).fetchone()
                if row is not None and row[0] == len(commands):
                    break
                assert time.monotonic() < deadline, "the transactions never waited on the order"
                time.sleep(0.02)
        holder.rollback()  # let go: they race for the row
        for thread in threads:
            thread.join(BOUND_S)
    return results


def outcomes(results: list[Any]) -> list[Processed]:
    assert all(isinstance(r, list) and len(r) == 1 for r in results), results
    return [r[0] for r in results]


@pytest.mark.parametrize("with_version", [True, False])
def test_two_workers_changing_one_order_at_once_apply_one_change(
    urls: tuple[str, str], with_version: bool
) -> None:
    app_url, admin_url = urls
    restaurant = uuid.uuid4()
    with psycopg.connect(admin_url, autocommit=True) as admin:
        actor = staff_of(admin, restaurant)
    order = create(actor, restaurant)
    with psycopg.connect(app_url, autocommit=False) as conn:
        assert (
            apply_batch(UnitOfWork(conn), [Incoming(order, 9, 0)], NOW, isolate=False)[
                0
            ].result.outcome
            is Outcome.APPLIED
        )
    # Both legal from pending; after either one, the other is not (or its version is stale).
    commands = [
        change(actor, order.order_id, "accepted"),
        change(actor, order.order_id, "rejected"),
    ]
    if with_version:
        commands = [c.model_copy(update={"expected_version": 1}) for c in commands]

    processed = outcomes(race(app_url, admin_url, order.order_id, commands))

    applied = [p for p in processed if p.result.outcome is Outcome.APPLIED]
    refused = [p for p in processed if p.result.outcome is Outcome.CONFLICT]
    assert (len(applied), len(refused)) == (1, 1), [p.result for p in processed]
    winner = applied[0].result.order
    assert winner is not None and winner.version == 2
    expected = ConflictType.STALE_VERSION if with_version else ConflictType.INVALID_TRANSITION
    assert refused[0].result.conflict is expected
    loser_view = refused[0].result.order
    assert loser_view is not None and (loser_view.version, loser_view.status) == (2, winner.status)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        row = admin.execute(
            "SELECT status, version FROM orders WHERE id = %s", (order.order_id,)
        ).fetchone()
        events = admin.execute(
            "SELECT version, to_status FROM order_status_events WHERE order_id = %s",
            (order.order_id,),
        ).fetchall()
        inbox = admin.execute(
            "SELECT outcome FROM command_outcomes WHERE command_id = ANY(%s) ORDER BY outcome",
            ([c.command_id for c in commands],),
        ).fetchall()
    assert row == (winner.status.value, 2)
    assert events == [(2, winner.status.value)]  # one change written, not two
    assert inbox == [("applied",), ("conflict",)]
    assert winner.status in (OrderStatus.ACCEPTED, OrderStatus.REJECTED)
