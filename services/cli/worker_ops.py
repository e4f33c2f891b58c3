"""Operating the worker: `worker-ops guard` shows whether the dead-letter guard stopped the
worker group, `worker-ops reset-guard` lets it start again once the cause is fixed."""

from __future__ import annotations

import argparse
from typing import Any

import psycopg

from services.adapters.settings import Settings


def register(commands: Any) -> None:
    group = commands.add_parser("worker-ops", help="the worker's dead-letter guard")
    actions = group.add_subparsers(dest="action", required=True)
    actions.add_parser("guard", help="whether the guard stopped the worker group").set_defaults(
        run=run_guard
    )
    actions.add_parser(
        "reset-guard", help="let the workers start again (after fixing what they refused)"
    ).set_defaults(run=run_reset_guard)


def run_guard(settings: Settings, args: argparse.Namespace) -> int:
    from services.status_worker.repository import GuardTrips

    with psycopg.connect(settings.admin_url) as conn:
        trip = GuardTrips(conn, settings.worker_group_id).open_trip()
    print(f"guard of {settings.worker_group_id}: {trip or 'not tripped'}")
    return 1 if trip else 0


def run_reset_guard(settings: Settings, args: argparse.Namespace) -> int:
    from services.status_worker.repository import GuardTrips

    with psycopg.connect(settings.admin_url) as conn:
        reset = GuardTrips(conn, settings.worker_group_id).reset()
    for trip in reset:
        print(f"reset: {trip}")
    if not reset:
        print(f"guard of {settings.worker_group_id}: not tripped, nothing to reset")
    return 0
