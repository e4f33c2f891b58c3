"""Retention of the tables that only grow: `command_outcomes` (the worker's inbox) and
`widget_events` (analytics). Outcomes are kept RETENTION_OUTCOMES_DAYS, those of refused commands
(conflict, forbidden, not_found, invalid: what any token holder can cause at will) only
RETENTION_REFUSED_DAYS; analytics RETENTION_WIDGET_EVENTS_DAYS. `error` outcomes are kept the full
time: they are how a dead-lettered command is found again.

An inbox row is what makes a redelivered command a no-op, so both outcome retentions must stay
longer than the commands topic keeps its records (Kafka's default: 7 days); migration 0007 also
refuses, whatever the settings, to delete rows younger than an hour.

The three tables are partitioned by day (migration 0015): first, whole partitions past their
retention are dropped and the coming days' partitions created (services/ops/partitions.py, as the
owner, DATABASE_ADMIN_URL); then rows are deleted only where a partition cannot go whole: refused
outcomes kept shorter than the others, and whatever the default partition caught. Those deletes
run as the services' login role (DATABASE_URL), batch by batch, each in its own short transaction:
`orderstatus purge`, and every RETENTION_PURGE_EVERY_S in the API process."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

import psycopg

from services.adapters.settings import Settings
from services.core.messages import Outcome
from services.ops import queries
from services.ops.partitions import maintain

log = logging.getLogger(__name__)

REFUSED = (Outcome.CONFLICT, Outcome.FORBIDDEN, Outcome.NOT_FOUND, Outcome.INVALID)
MAX_BATCHES = 10_000
"""A bound on one run (5000 rows a batch: 50 million rows); the next run goes on from there."""


@dataclass(frozen=True, slots=True)
class Purged:
    outcomes: int
    widget_events: int
    partitions_dropped: list[str] = field(default_factory=list)


def purge(settings: Settings, now: datetime | None = None) -> Purged:
    now = now or datetime.now(UTC)
    days = timedelta(days=1)
    dropped = _maintained(settings, now)
    with psycopg.connect(settings.database_url, autocommit=True, connect_timeout=5) as conn:
        outcomes = _in_batches(
            conn,
            queries.PURGE_OUTCOMES,
            {
                "all_before": now - settings.retention_outcomes_days * days,
                "refused_before": now - settings.retention_refused_days * days,
                "refused": [o.value for o in REFUSED],
            },
            settings.retention_purge_batch,
        )
        widget_events = _in_batches(
            conn,
            queries.PURGE_WIDGET_EVENTS,
            {"before": now - settings.retention_widget_events_days * days},
            settings.retention_purge_batch,
        )
    return Purged(outcomes, widget_events, dropped)


def _maintained(settings: Settings, now: datetime) -> list[str]:
    """The partitions dropped; a failure (no owner URL reachable here) is logged and leaves the row
    purge to run: partitions then wait for `orderstatus partitions maintain` elsewhere."""
    if not settings.database_admin_url:
        return []
    try:
        return maintain(settings, now).dropped
    except psycopg.Error as exc:
        log.warning(
            "partition maintenance failed",
            extra={"evt": "partition_maintenance_failed", "error": str(exc)},
        )
        return []


def _in_batches(
    conn: psycopg.Connection[Any], query: LiteralString, params: dict[str, Any], batch: int
) -> int:
    total = 0
    for _ in range(MAX_BATCHES):
        deleted = conn.execute(query, {**params, "batch": batch}).rowcount
        total += deleted
        if deleted < batch:
            break
    return total


def purge_periodically(settings: Settings, stop: threading.Event) -> None:
    """The API process's purge loop (a daemon thread: off the request path and out of the
    worker's). A failed run is logged and retried at the next interval."""
    while not stop.wait(settings.retention_purge_every_s):
        try:
            purged = purge(settings)
        except psycopg.Error as exc:
            log.warning(
                "retention purge failed", extra={"evt": "retention_purge_failed", "error": str(exc)}
            )
            continue
        if purged.outcomes or purged.widget_events or purged.partitions_dropped:
            log.info(
                "retention purge",
                extra={
                    "evt": "retention_purged",
                    "outcomes": purged.outcomes,
                    "widget_events": purged.widget_events,
                    "partitions_dropped": purged.partitions_dropped,
                },
            )
