"""Partition maintenance of the tables that only grow (migrations 0014, 0015): daily partitions
created ahead of time, expired ones dropped whole. `orderstatus partitions maintain`, the retention
purge (services/ops/retention.py) and `orderstatus migrate` run it.

The project's own job rather than pg_partman (docs/database-scaling.md): the migrating role owns
the tables and is no superuser (pg_partman is not a trusted extension, and every test database
would need it), each partition must be secured like every other table (revokes against Supabase's
default privileges, forced row-level security), and the inbox's drop cutoff follows the retention
settings. DDL on the owner's tables needs the owner: this runs on DATABASE_ADMIN_URL.

Retention per table (whole partitions, by the partition key's day, UTC):
  command_outcomes     RETENTION_OUTCOMES_DAYS (by the commands' issued_at)
  widget_events        RETENTION_WIDGET_EVENTS_DAYS
  order_status_events  RETENTION_HISTORY_DAYS (unset: kept for good, the orders' audit trail)
A partition goes once its whole day is older than the retention; migration 0014's functions
refuse to drop anything ending within the last hour, whatever the settings say."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from services.adapters.settings import Settings
from services.ops import queries

PARTITIONED = ("order_status_events", "command_outcomes", "widget_events")


@dataclass(frozen=True, slots=True)
class Maintained:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Coverage:
    """How far ahead one partitioned table has partitions, and what its default partition holds."""

    parent: str
    last_day: date | None
    partitions: int
    default_rows: int

    def days_ahead(self, today: date) -> int:
        """Whole days after today that inserts land in a daily partition (-1: not even today)."""
        return -1 if self.last_day is None else (self.last_day - today).days


def retention_cutoffs(settings: Settings, now: datetime) -> dict[str, datetime]:
    days = timedelta(days=1)
    cutoffs = {
        "command_outcomes": now - settings.retention_outcomes_days * days,
        "widget_events": now - settings.retention_widget_events_days * days,
    }
    if settings.retention_history_days is not None:
        cutoffs["order_status_events"] = now - settings.retention_history_days * days
    return cutoffs


def maintain(settings: Settings, now: datetime | None = None, *, drop: bool = True) -> Maintained:
    """Creates the partitions of today through PARTITIONS_AHEAD_DAYS ahead (moving in what the
    default partition caught for them) and, with `drop`, drops those past their retention. One
    short transaction per table and step."""
    now = now or datetime.now(UTC)
    today = now.astimezone(UTC).date()
    result = Maintained()
    with psycopg.connect(settings.admin_url, autocommit=True, connect_timeout=5) as conn:
        for parent in PARTITIONED:
            result.created.extend(
                _names(
                    conn,
                    queries.CREATE_PARTITIONS,
                    {
                        "parent": parent,
                        "first_day": today,
                        "last_day": today + timedelta(days=settings.partitions_ahead_days),
                    },
                )
            )
        if drop:
            for parent, cutoff in retention_cutoffs(settings, now).items():
                result.dropped.extend(
                    _names(
                        conn, queries.DROP_PARTITIONS_BEFORE, {"parent": parent, "cutoff": cutoff}
                    )
                )
    return result


def _names(conn: psycopg.Connection[Any], query: Any, params: dict[str, Any]) -> list[str]:
    return [str(row[0]) for row in conn.execute(query, params).fetchall()]


def coverage(conn: psycopg.Connection[Any]) -> list[Coverage]:
    """Read as the owner (doctor): the partition functions are the owner's."""
    rows = conn.cursor(row_factory=dict_row).execute(queries.PARTITION_COVERAGE).fetchall()
    return [
        Coverage(
            row["parent"],
            row["last_day"],
            int(row["partitions"]),
            int(row["default_rows"]),
        )
        for row in rows
    ]
