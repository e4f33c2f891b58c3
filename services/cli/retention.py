"""Retention: `purge` drops partitions and deletes inbox outcomes and analytics events past their
retention (services/ops/retention.py; the API process also runs it every RETENTION_PURGE_EVERY_S);
`partitions maintain|status`: the daily partitions (services/ops/partitions.py)."""

from __future__ import annotations

import argparse
from typing import Any

from services.adapters.settings import Settings


def register(commands: Any) -> None:
    purge = commands.add_parser(
        "purge", help="delete command outcomes and analytics events past their retention"
    )
    purge.set_defaults(run=run_purge)
    partitions = commands.add_parser(
        "partitions", help="daily partitions of the history, the inbox and the analytics events"
    )
    steps = partitions.add_subparsers(dest="step", required=True)
    steps.add_parser(
        "maintain", help="create partitions ahead (PARTITIONS_AHEAD_DAYS), drop expired ones"
    ).set_defaults(run=run_maintain)
    steps.add_parser("status", help="how far ahead each table is covered").set_defaults(
        run=run_status
    )


def run_purge(settings: Settings, args: argparse.Namespace) -> int:
    from services.ops.retention import purge

    purged = purge(settings)
    print(f"purged {purged.outcomes} command outcomes, {purged.widget_events} widget events")
    if purged.partitions_dropped:
        print(f"dropped partitions: {', '.join(purged.partitions_dropped)}")
    return 0


def run_maintain(settings: Settings, args: argparse.Namespace) -> int:
    from services.ops.partitions import maintain

    done = maintain(settings)
    print(f"created: {', '.join(done.created) or 'none'}")
    print(f"dropped: {', '.join(done.dropped) or 'none'}")
    return 0


def run_status(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    import psycopg

    from services.ops.partitions import coverage

    today = datetime.now(UTC).date()
    with psycopg.connect(settings.admin_url, connect_timeout=5) as conn:
        for table in coverage(conn):
            print(
                f"{table.parent}: {table.partitions} daily partitions, through {table.last_day} "
                f"({table.days_ahead(today)} days ahead), default partition "
                f"{table.default_rows} rows"
            )
    return 0
