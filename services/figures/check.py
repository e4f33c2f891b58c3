"""A figures answer checked against SQL (`orderstatus figures show --check`, and the tests):
counts must be equal, percentiles within the width of the bucket the exact value falls in."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from services.core.messages import Outcome
from services.core.outcomes import OUTCOME_NAMES
from services.core.statuses import FINAL_STATUSES
from services.figures import aggregates as agg
from services.figures import queries

FLOAT_SLACK = 1e-9
REFUSAL_TYPES = {
    OUTCOME_NAMES[Outcome.CONFLICT].evt: "conflicts",
    OUTCOME_NAMES[Outcome.FORBIDDEN].evt: "forbidden",
}
"""widget_events' types (the worker writes the outcome's evt) -> the figure that counts them."""


def sql_figures(conn: psycopg.Connection[Any], figures: dict[str, Any]) -> dict[str, Any]:
    """The figures of `figures["restaurant_id"]` over the spans that answer names."""
    params = {
        "restaurant_id": figures["restaurant_id"],
        "minute_start": datetime.fromisoformat(figures["minute"]["start"]),
        "hour_start": datetime.fromisoformat(figures["hour"]["start"]),
        "end": datetime.fromisoformat(figures["hour"]["end"]),
        "final": sorted(s.value for s in FINAL_STATUSES),
    }
    expected: dict[str, Any] = {
        "changes_last_minute": 0,
        "changes_last_hour": 0,
        "conflicts_last_minute": 0,
        "conflicts_last_hour": 0,
        "forbidden_last_minute": 0,
        "forbidden_last_hour": 0,
        "by_status_last_hour": {},
    }
    for status, minute, hour in conn.execute(queries.CHANGES, params):
        expected["changes_last_minute"] += minute
        expected["changes_last_hour"] += hour
        expected["by_status_last_hour"][status] = hour
    for kind, minute, hour in conn.execute(queries.REFUSALS, params):
        name = REFUSAL_TYPES[kind]
        expected[f"{name}_last_minute"] = minute
        expected[f"{name}_last_hour"] = hour
    row = conn.execute(queries.PREP_TIME, params).fetchone()
    assert row is not None
    expected["prep_time_s"] = {"count": row[0], "p50": row[1], "p95": row[2]}
    expected["open_orders"] = dict(conn.execute(queries.OPEN_ORDERS, params).fetchall())
    return expected


def differences(figures: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    found = []
    for name, value in expected.items():
        if name == "prep_time_s":
            continue
        if figures[name] != value:
            found.append(f"{name}: figures {figures[name]}, SQL {value}")
    prep, exact = figures["prep_time_s"], expected["prep_time_s"]
    if prep["count"] != exact["count"]:
        found.append(f"prep_time_s.count: figures {prep['count']}, SQL {exact['count']}")
    for quantile in ("p50", "p95"):
        mine, theirs = prep[quantile], exact[quantile]
        if (mine is None) != (theirs is None):
            found.append(f"prep_time_s.{quantile}: figures {mine}, SQL {theirs}")
        elif mine is not None and abs(mine - theirs) > agg.bucket_width(theirs) + FLOAT_SLACK:
            found.append(
                f"prep_time_s.{quantile}: figures {mine}, SQL {theirs} "
                f"(more than the bucket width {agg.bucket_width(theirs)})"
            )
    return found
