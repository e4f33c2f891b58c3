"""Retention: `purge` deletes inbox outcomes and analytics events past their retention
(services/ops/retention.py; the API process also runs it every RETENTION_PURGE_EVERY_S)."""

from __future__ import annotations

import argparse
from typing import Any

from services.adapters.settings import Settings


def register(commands: Any) -> None:
    purge = commands.add_parser(
        "purge", help="delete command outcomes and analytics events past their retention"
    )
    purge.set_defaults(run=run_purge)


def run_purge(settings: Settings, args: argparse.Namespace) -> int:
    from services.ops.retention import purge

    purged = purge(settings)
    print(f"purged {purged.outcomes} command outcomes, {purged.widget_events} widget events")
    return 0
