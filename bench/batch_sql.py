"""The worker's set-based batch SQL (services.status_worker.service.apply_batch: the inbox lookup,
the caller's lookups, one statement per table) timed on a PostgreSQL cluster of its own (Debian's
binaries, initdb in a temporary directory, a free port), so that the WAL and the sizes measured are
this run's alone. Prints per batch and per command: wall time, database time per statement
(pg_stat_statements: planning + execution, server side, so less swayed by a busy client), WAL
bytes, bytes stored, rows written; and the time of a redelivered batch (answered from the inbox). The figures of
docs/database-scaling.md; runs against whatever `services` is importable (the partitioned schema,
or an older tree's for the before figures). Not part of `make bench` (which must run alone).

    python bench/batch_sql.py [--batches 20] [--batch 500] [--inbox-rows 300000] [--days 30]"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from services.adapters.migrate import apply_migrations
from services.core.messages import Actor, ChangeStatus, Role
from services.core.statuses import OrderStatus
from services.status_worker.batch import Incoming
from services.status_worker.db import UnitOfWork
from services.status_worker.service import apply_batch

TABLES = ("orders", "order_status_events", "command_outcomes", "widget_events")


def _as_owner(*argv: str) -> None:
    command = list(argv)
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=120, cwd="/")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """initdb, start, stop: durable settings as PostgreSQL ships them (fsync on)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="orderstatus-batch-sql-"))
        self.port = _free_port()
        self.bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))[-1].parent

    def start(self) -> None:
        self.root.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        data = str(self.root / "data")
        _as_owner(str(self.bindir / "initdb"), "-D", data, "-U", "postgres", "--auth=trust")
        _as_owner(
            str(self.bindir / "pg_ctl"), "-D", data, "-l", str(self.root / "log"),
            "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=top "
            "-c pg_stat_statements.track_planning=on", "-w", "start",
        )  # fmt: skip

    def stop(self) -> None:
        _as_owner(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, user: str = "postgres", database: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"


def prepare(cluster: Cluster, inbox_rows: int, days: int) -> None:
    with psycopg.connect(cluster.url(), autocommit=True) as su:
        su.execute("CREATE ROLE orderstatus LOGIN CREATEDB CREATEROLE")
        su.execute("CREATE DATABASE orderstatus OWNER orderstatus")
    owner_url = cluster.url("orderstatus", "orderstatus")
    apply_migrations(owner_url)
    with psycopg.connect(cluster.url(database="orderstatus"), autocommit=True) as su:
        su.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    with psycopg.connect(owner_url, autocommit=True) as owner:
        partitioned = owner.execute(
            "SELECT to_regproc('public.partition_create_days') IS NOT NULL"
        ).fetchone() == (True,)
        if partitioned:  # the past days' partitions, as the daily maintenance would have left
            for table in ("order_status_events", "command_outcomes", "widget_events"):
                owner.execute(
                    "SELECT count(*) FROM partition_create_days(%s, current_date - %s, current_date)",
                    (table, days),
                )
        key = ", issued_at" if partitioned else ""
        # An inbox of `days` days of earlier commands, as the worker leaves it.
        owner.execute(
            f"""INSERT INTO command_outcomes (command_id, order_id, command_type, outcome, result,
                created_at{key})
                SELECT gen_random_uuid(), gen_random_uuid(), 'change_status', 'applied',
                       '{{"outcome": "applied", "detail": ""}}', at{", at" if partitioned else ""}
                FROM (SELECT now() - random() * make_interval(days => %s) AS at
                      FROM generate_series(1, %s)) AS earlier""",
            (days, inbox_rows),
        )
        owner.execute("VACUUM ANALYZE")


def total_bytes(conn: psycopg.Connection[Any]) -> int:
    """Tables, partitions and indexes of the four tables."""
    row = conn.execute(
        """SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c
           WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace
             AND (c.relname = ANY(%s) OR c.relname ~ '^(order_status_events|command_outcomes|widget_events)_')""",
        (list(TABLES),),
    ).fetchone()
    assert row is not None
    return int(row[0])


STATEMENTS = {
    "inbox lookup": r"^\s*SELECT\b.*\bFROM command_outcomes\b",
    "lock orders": r"FOR UPDATE",
    "orders existing": r"order_exists",
    "update orders": r"^\s*UPDATE orders",
    "insert history": r"^\s*INSERT INTO order_status_events",
    "insert inbox": r"^\s*INSERT INTO command_outcomes",
}
"""The batch's statements in pg_stat_statements, by what they do."""


def statement_ms(cluster: Cluster, batches: int) -> dict[str, float]:
    """Planning + execution time per batch of each statement (server side), and their sum."""
    with psycopg.connect(cluster.url(database="orderstatus"), autocommit=True) as su:
        rows = su.execute(
            """SELECT query, total_plan_time + total_exec_time FROM pg_stat_statements
               WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'orderstatus')"""
        ).fetchall()
        su.execute("SELECT pg_stat_statements_reset()")
    times = {name: 0.0 for name in STATEMENTS}
    for query, ms in rows:
        for name, pattern in STATEMENTS.items():
            if re.search(pattern, str(query), re.S):
                times[name] += float(ms) / batches
                break
    times["all statements"] = sum(float(ms) for _, ms in rows) / batches
    return times


def reset_statements(cluster: Cluster) -> None:
    with psycopg.connect(cluster.url(database="orderstatus"), autocommit=True) as su:
        su.execute("SELECT pg_stat_statements_reset()")


def explain_lookup(
    conn: psycopg.Connection[Any], items: list[Incoming], lookback_s: float | None, runs: int = 30
) -> Any:
    """The inbox lookup of one batch (queries.STORED_OUTCOMES, as the worker sends it) under
    EXPLAIN ANALYZE: the fastest planning and execution ms of `runs`, and the relations it read."""
    from services.status_worker import queries

    commands = [item.command for item in items]
    params: dict[str, Any] = {"ids": [c.command_id for c in commands]}
    if "%(earliest)s" in queries.STORED_OUTCOMES:
        from services.status_worker.repository import CLOCK_MARGIN, INBOX_LOOKBACK

        lookback = INBOX_LOOKBACK if lookback_s is None else timedelta(seconds=lookback_s)
        params["earliest"] = min(c.issued_at for c in commands) - lookback
        params["latest"] = max(c.issued_at for c in commands) + CLOCK_MARGIN
    planning, execution, scanned = [], [], set()
    for _ in range(runs):
        explain = "EXPLAIN (ANALYZE, FORMAT JSON) " + queries.STORED_OUTCOMES
        row = conn.execute(explain, params).fetchone()
        assert row is not None
        plan = row[0][0]
        planning.append(float(plan["Planning Time"]))
        execution.append(float(plan["Execution Time"]))
        scanned |= set(re.findall(r'"Relation Name": "([^"]+)"', json.dumps(plan)))
    conn.rollback()
    return min(planning), min(execution), sorted(scanned)


def wal_lsn(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


def unit_of_work(conn: psycopg.Connection[Any], lookback_s: float | None) -> UnitOfWork:
    """With WORKER_INBOX_LOOKBACK_S when given (a tree from before migration 0015 has none)."""
    if lookback_s is None:
        return UnitOfWork(conn)
    return UnitOfWork(conn, timedelta(seconds=lookback_s))  # type: ignore[call-arg,unused-ignore]


def run(
    batches: int, batch: int, inbox_rows: int, days: int, lookback_s: float | None = None
) -> dict[str, float]:
    cluster = Cluster()
    cluster.start()
    try:
        prepare(cluster, inbox_rows, days)
        owner_url = cluster.url("orderstatus", "orderstatus")
        app_url = cluster.url("orderstatus_app", "orderstatus")
        restaurant = uuid.uuid4()
        ids = [uuid.uuid4() for _ in range(batches * batch)]
        with psycopg.connect(owner_url, autocommit=True) as owner:
            owner.execute(
                """INSERT INTO orders (id, restaurant_id, status, version)
                   SELECT id, %s, 'pending', 1 FROM unnest(%s::uuid[]) AS id""",
                (restaurant, ids),
            )
            owner.execute("VACUUM ANALYZE orders")
            bytes_before, wal_before = total_bytes(owner), wal_lsn(owner)
        actor = Actor(sub="batch-sql", role=Role.SERVICE_ROLE)
        plans: list[list[Incoming]] = []
        for n in range(batches):
            now = datetime.now(UTC)
            plans.append(
                [
                    Incoming(
                        ChangeStatus(
                            command_id=uuid.uuid4(),
                            order_id=order_id,
                            status=OrderStatus.ACCEPTED,
                            actor=actor,
                            issued_at=now,
                        ),
                        0,
                        n * batch + i,
                    )
                    for i, order_id in enumerate(ids[n * batch : (n + 1) * batch])
                ]
            )
        applied_ms: list[float] = []
        redelivered_ms: list[float] = []
        with psycopg.connect(app_url, autocommit=False) as conn:
            apply_batch(
                unit_of_work(conn, lookback_s), plans[0], datetime.now(UTC), isolate=False
            )  # warm-up
            reset_statements(cluster)
            for items in plans[1:]:
                started = time.perf_counter()
                apply_batch(unit_of_work(conn, lookback_s), items, datetime.now(UTC), isolate=False)
                applied_ms.append((time.perf_counter() - started) * 1000)
            applied = statement_ms(cluster, len(plans) - 1)
            with psycopg.connect(owner_url, autocommit=True) as owner:
                bytes_after, wal_after = total_bytes(owner), wal_lsn(owner)
            for items in plans[1:]:
                started = time.perf_counter()
                apply_batch(unit_of_work(conn, lookback_s), items, datetime.now(UTC), isolate=False)
                redelivered_ms.append((time.perf_counter() - started) * 1000)
            redelivered = statement_ms(cluster, len(plans) - 1)
            plan_ms, exec_ms, scanned = explain_lookup(conn, plans[-1], lookback_s)
        commands = batches * batch
        return {
            "batch wall ms, median": statistics.median(applied_ms),
            "batch wall ms, min": min(applied_ms),
            **{f"batch db ms: {name}": ms for name, ms in applied.items()},
            "db ms per command": applied["all statements"] / batch,
            "redelivered batch wall ms, median": statistics.median(redelivered_ms),
            "redelivered batch db ms: inbox lookup": redelivered["inbox lookup"],
            "inbox lookup EXPLAIN planning ms, min": plan_ms,
            "inbox lookup EXPLAIN execution ms, min": exec_ms,
            "inbox lookup relations read": float(len(scanned)),
            "WAL bytes per command": (wal_after - wal_before) / commands,
            "stored bytes per command": (bytes_after - bytes_before) / commands,
        }
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--inbox-rows", type=int, default=300_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument(
        "--inbox-lookback-s", type=float, default=None, help="WORKER_INBOX_LOOKBACK_S (default 1 d)"
    )
    args = parser.parse_args()
    figures = run(args.batches, args.batch, args.inbox_rows, args.days, args.inbox_lookback_s)
    print(
        f"{args.batches} batches of {args.batch} status changes, inbox preloaded with "
        f"{args.inbox_rows} rows over {args.days} days"
    )
    for name, value in figures.items():
        print(f"  {name:42} {value:10.2f}")
    print("  rows written per applied change: 3 (orders updated, history and inbox inserted)")


if __name__ == "__main__":
    main()
