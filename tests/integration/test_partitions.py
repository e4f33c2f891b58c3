"""The history, the inbox and the analytics events partitioned by day (migrations 0014-0016), on a
real PostgreSQL: rows from before the partitioning carried over, the runbook's SQL and index still
real, the inbox's once-only promise across partitions, and the maintenance that keeps partitions
ahead of the inserts."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, time, timedelta
from typing import Any

import psycopg
import pytest

from services.adapters.migrate import _TRACKING_TABLE, apply_migrations, migration_files
from services.adapters.settings import Settings
from services.command_api import queries as command_queries
from services.command_api.db import OrderReads, connection_pool
from services.core.messages import Actor, Outcome, Role
from services.ops import queries as ops_queries
from services.ops.partitions import coverage, maintain
from services.status_worker.batch import Incoming
from services.status_worker.db import UnitOfWork
from services.status_worker.service import apply_batch
from tests.integration.test_rls_worker import change, create, staff_of
from tests.stack import drop_database, migrated_database, with_database

PARTITIONED = ("order_status_events", "command_outcomes", "widget_events")


@contextmanager
def database_before_partitioning(base: Settings) -> Iterator[tuple[str, str]]:
    """A fresh database migrated through 0013 only: (app url, owner url)."""
    name = f"orderstatus_db_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # name is generated above
    try:
        admin_url = with_database(base.admin_url, name)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(_TRACKING_TABLE)
            for version, sql in migration_files():
                if version >= "0014":
                    break
                with conn.transaction():
                    conn.execute(sql.encode())
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
        yield with_database(base.database_url, name), admin_url
    finally:
        drop_database(base.admin_url, name)


@pytest.fixture(scope="module")
def urls(base_settings: Settings) -> Iterator[tuple[str, str]]:
    with migrated_database(base_settings) as urls:
        yield urls


def today() -> datetime:
    return datetime.combine(datetime.now(UTC).date(), time(), UTC)


def partition_of(admin: psycopg.Connection[Any], table: str, where: str, value: Any) -> list[str]:
    rows = admin.execute(
        f"SELECT tableoid::regclass::text FROM {table} WHERE {where} = %s ORDER BY 1",
        (value,),
    ).fetchall()
    return [str(name) for (name,) in rows]


def test_rows_from_before_the_partitioning_are_carried_over(base_settings: Settings) -> None:
    with database_before_partitioning(base_settings) as (_, admin_url):
        order, restaurant, commands = uuid.uuid4(), uuid.uuid4(), [uuid.uuid4() for _ in range(3)]
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                """INSERT INTO orders (id, restaurant_id, status, version, created_at)
                   VALUES (%s, %s, 'accepted', 3, now() - interval '3 days')""",
                (order, restaurant),
            )
            for n, (age, command) in enumerate(zip((3, 1, 0), commands, strict=True)):
                admin.execute(
                    """INSERT INTO order_status_events (order_id, restaurant_id, from_status,
                       to_status, version, command_id, actor, created_at)
                       VALUES (%s, %s, 'pending', 'accepted', %s, %s, 'a', now() - %s)""",
                    (order, restaurant, n + 2, command, timedelta(days=age)),
                )
                admin.execute(
                    """INSERT INTO command_outcomes (command_id, order_id, command_type, outcome,
                       result, created_at) VALUES (%s, %s, 'change_status', 'applied', '{}',
                       now() - %s)""",
                    (command, order, timedelta(days=age)),
                )
                admin.execute(
                    """INSERT INTO widget_events (type, command_id, created_at)
                       VALUES ('order_status_conflict', %s, now() - %s)""",
                    (command, timedelta(days=age)),
                )
            before = {
                t: admin.execute(f"SELECT max(id) FROM {t}").fetchone()
                for t in ("order_status_events", "widget_events")
            }

        assert apply_migrations(admin_url)[0] == "0014_partition_maintenance.sql"

        with psycopg.connect(admin_url, autocommit=True) as admin:
            three_days_ago = (today() - timedelta(days=3)).strftime("%Y%m%d")
            assert partition_of(admin, "order_status_events", "command_id", commands[0]) == [
                f"order_status_events_p{three_days_ago}"
            ]
            assert partition_of(admin, "command_outcomes", "command_id", commands[0]) == [
                f"command_outcomes_p{three_days_ago}"
            ]
            assert partition_of(admin, "widget_events", "command_id", commands[0]) == [
                f"widget_events_p{three_days_ago}"
            ]
            for table in PARTITIONED:
                count = admin.execute(f"SELECT count(*) FROM {table}").fetchone()
                assert count == (3,), table
            # Moved rows' inbox key: issued_at = created_at (never earlier than the real one).
            assert admin.execute(
                "SELECT bool_and(issued_at = created_at) FROM command_outcomes"
            ).fetchone() == (True,)
            # The identities go on after the moved rows' ids.
            admin.execute(
                """INSERT INTO widget_events (type) VALUES ('t')""",
            )
            after = admin.execute("SELECT max(id) FROM widget_events").fetchone()
            assert after is not None and before["widget_events"] is not None
            assert after[0] == before["widget_events"][0] + 1
            # 0006's trigger is on the new history table (and so on each partition).
            triggers = admin.execute(
                """SELECT tgname FROM pg_trigger
                   WHERE tgrelid = 'order_status_events'::regclass AND NOT tgisinternal"""
            ).fetchall()
            assert triggers == [("order_status_events_written_by_the_services",)]


def test_the_runbook_index_and_queries_are_real_and_read_only_recent_partitions(
    urls: tuple[str, str],
) -> None:
    _, admin_url = urls
    with psycopg.connect(admin_url, autocommit=True) as admin:
        for table in PARTITIONED:
            admin.execute(
                "SELECT count(*) FROM partition_create_days(%s, current_date - 30, current_date)",
                (table,),
            )
        indexes = set(admin.execute(ops_queries.INDEXES).fetchall())
        assert ("orders", "orders_status_created_idx") in indexes
        assert ("order_status_events", "order_status_events_created_idx") in indexes
        admin.execute(ops_queries.CONFLICTS_24H)
        admin.execute(ops_queries.CHANGES_PER_RESTAURANT_7D, {"limit": 10})
        admin.execute(ops_queries.AVG_CHANGE_INTERVAL_1H)
        plan = "\n".join(
            str(row[0])
            for row in admin.execute(
                "EXPLAIN " + ops_queries.CHANGES_PER_RESTAURANT_7D, {"limit": 10}
            ).fetchall()
        )
    scanned = {int(day) for day in re.findall(r"\border_status_events_p(\d{8})\b", plan)}
    oldest = int((today() - timedelta(days=8)).strftime("%Y%m%d"))
    # 7 days' partitions, not 30 (and the default: the range is open towards the future).
    assert scanned and min(scanned) >= oldest, plan


def test_a_command_delivered_twice_across_a_partition_boundary_applies_once(
    urls: tuple[str, str],
) -> None:
    """Issued a moment before midnight, applied, then delivered again the next day (the same
    record) and once more republished with a later issued_at past midnight (an API from before
    migration 0016): one change, one inbox row, in the partition of its first issued_at."""
    app_url, admin_url = urls
    restaurant = uuid.uuid4()
    midnight = today() + timedelta(days=1)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        actor = staff_of(admin, restaurant)
    order = create(actor, restaurant).model_copy(
        update={"issued_at": midnight - timedelta(hours=1)}
    )
    accept = change(actor, order.order_id).model_copy(
        update={"issued_at": midnight - timedelta(milliseconds=1)}
    )
    republished = accept.model_copy(update={"issued_at": midnight + timedelta(milliseconds=500)})
    deliveries = [
        ([Incoming(order, 0, 0), Incoming(accept, 0, 1)], midnight - timedelta(seconds=1)),
        ([Incoming(accept, 0, 1)], midnight + timedelta(hours=1)),
        ([Incoming(republished, 0, 7)], midnight + timedelta(hours=2)),
    ]
    answers = []
    for batch, now in deliveries:
        with psycopg.connect(app_url, autocommit=False) as conn:
            answers.append(apply_batch(UnitOfWork(conn), batch, now, isolate=False)[-1])
    assert [a.result.outcome for a in answers] == [Outcome.APPLIED] * 3
    assert {a.source for a in answers} == {(0, 1)}  # the later copies answered from the inbox
    with psycopg.connect(admin_url, autocommit=True) as admin:
        history = admin.execute(
            "SELECT count(*) FROM order_status_events WHERE command_id = %s", (accept.command_id,)
        ).fetchone()
        inbox = partition_of(admin, "command_outcomes", "command_id", accept.command_id)
        # The last guard against two workers inserting one command at once: the inbox's key.
        with pytest.raises(psycopg.errors.UniqueViolation):
            admin.execute(
                """INSERT INTO command_outcomes (command_id, order_id, command_type, outcome,
                   result, issued_at) VALUES (%s, %s, 'change_status', 'applied', '{}', %s)""",
                (accept.command_id, accept.order_id, accept.issued_at),
            )
    assert history == (1,)
    assert inbox == [f"command_outcomes_p{today().strftime('%Y%m%d')}"]


def test_maintenance_creates_days_ahead_and_moves_in_what_the_default_partition_caught(
    urls: tuple[str, str], base_settings: Settings
) -> None:
    _, admin_url = urls
    far = today() + timedelta(days=20)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(
            "INSERT INTO widget_events (type, created_at) VALUES ('far', %s)",
            (far + timedelta(hours=3),),
        )
        assert partition_of(admin, "widget_events", "type", "far") == ["widget_events_default"]
        short = {c.parent: c.days_ahead(today().date()) for c in coverage(admin)}
        caught = {c.parent: c.default_rows for c in coverage(admin)}
        sizes = {r[1]: r[3] for r in admin.execute(ops_queries.TABLE_SIZES).fetchall()}
    assert short == dict.fromkeys(PARTITIONED, 14)  # what migration 0015 created
    assert caught["widget_events"] == 1  # what doctor warns about
    assert sizes["widget_events"] > 0  # summed over the partitions

    settings = base_settings.model_copy(
        update={"database_admin_url": admin_url, "partitions_ahead_days": 25}
    )
    done = maintain(settings, drop=False)
    assert len(done.created) == 3 * (25 - 14)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        moved = partition_of(admin, "widget_events", "type", "far")
        assert moved == [f"widget_events_p{far.strftime('%Y%m%d')}"]
        assert admin.execute("SELECT count(*) FROM widget_events_default").fetchone() == (0,)
        assert {c.parent: c.default_rows for c in coverage(admin)}["widget_events"] == 0
        new = f"command_outcomes_p{far.strftime('%Y%m%d')}"
        secured = admin.execute(
            """SELECT relrowsecurity, relforcerowsecurity,
                      has_table_privilege('orderstatus_app', oid, 'SELECT,INSERT,DELETE'),
                      has_table_privilege('authenticated', oid, 'SELECT,INSERT'),
                      has_table_privilege('anon', oid, 'SELECT')
               FROM pg_class WHERE relname = %s""",
            (new,),
        ).fetchone()
    assert secured == (True, True, False, False, False)
    assert maintain(settings, drop=False).created == []  # nothing left to do


def test_without_lookback_a_redelivered_record_still_applies_once(
    urls: tuple[str, str],
) -> None:
    """WORKER_INBOX_LOOKBACK_S=0 (every API on migration 0016): the lookup's range is the batch's
    own issued_at (and the worker's now), and a copy of the same record is still found there."""
    app_url, admin_url = urls
    restaurant = uuid.uuid4()
    midnight = today() + timedelta(days=1)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        actor = staff_of(admin, restaurant)
    order = create(actor, restaurant).model_copy(
        update={"issued_at": midnight - timedelta(hours=2)}
    )
    accept = change(actor, order.order_id).model_copy(
        update={"issued_at": midnight - timedelta(milliseconds=1)}
    )
    answers = []
    for batch, now in [
        ([Incoming(order, 0, 0), Incoming(accept, 0, 1)], midnight - timedelta(seconds=1)),
        ([Incoming(accept, 0, 1)], midnight + timedelta(hours=3)),
    ]:
        with psycopg.connect(app_url, autocommit=False) as conn:
            uow = UnitOfWork(conn, inbox_lookback=timedelta(0))
            answers.append(apply_batch(uow, batch, now, isolate=False)[-1])
    assert [a.result.outcome for a in answers] == [Outcome.APPLIED] * 2
    assert {a.source for a in answers} == {(0, 1)}


def test_an_orders_history_reads_only_the_partitions_since_its_creation(
    urls: tuple[str, str],
) -> None:
    """GET /orders/{id}/history (OrderReads.history): the history is kept for good, one partition
    a day; an order's lookup is bounded by its creation, so old days are not even planned."""
    app_url, admin_url = urls
    restaurant, order_id = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(
            "SELECT count(*) FROM partition_create_days(%s, current_date - 30, current_date)",
            ("order_status_events",),
        )
        admin.execute(
            """INSERT INTO orders (id, restaurant_id, status, version, created_at)
               VALUES (%s, %s, 'accepted', 2, now() - interval '2 days')""",
            (order_id, restaurant),
        )
        admin.execute(
            """INSERT INTO order_status_events (order_id, restaurant_id, from_status, to_status,
               version, command_id, actor, created_at)
               VALUES (%s, %s, 'pending', 'accepted', 2, %s, 'a', now() - interval '2 days')""",
            (order_id, restaurant, uuid.uuid4()),
        )
        since = today() - timedelta(days=3)
        plan = "\n".join(
            str(row[0])
            for row in admin.execute(
                "EXPLAIN " + command_queries.ORDER_HISTORY, {"order_id": order_id, "since": since}
            ).fetchall()
        )
    days = {int(day) for day in re.findall(r"\border_status_events_p(\d{8})\b", plan)}
    assert days and min(days) >= int((today() - timedelta(days=4)).strftime("%Y%m%d")), plan

    async def history() -> Any:
        reads = OrderReads(connection_pool(app_url))
        await reads.open()
        try:
            return await reads.history(order_id, Actor(sub="backoffice", role=Role.SERVICE_ROLE))
        finally:
            await reads.close()

    rows = asyncio.run(history())
    assert [(r["from_status"], r["to_status"], r["version"]) for r in rows] == [
        ("pending", "accepted", 2)
    ]
