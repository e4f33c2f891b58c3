"""The system's own processes and what they need: `migrate`, `topics`, `api`, `worker`."""

from __future__ import annotations

import argparse
from typing import Any

from services.adapters.settings import Settings


def register(commands: Any) -> None:
    commands.add_parser("migrate", help="apply database migrations").set_defaults(run=run_migrate)
    commands.add_parser("topics", help="create the Kafka topics").set_defaults(run=run_topics)
    commands.add_parser("api", help="run the command API").set_defaults(run=run_api)
    commands.add_parser("worker", help="run a status worker").set_defaults(run=run_worker)


def run_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from services.adapters.migrate import apply_migrations
    from services.ops.partitions import maintain

    applied = apply_migrations(settings.admin_url)
    print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
    created = maintain(settings, drop=False).created  # the days ahead (drops: the purge's job)
    print(f"partitions created: {len(created)}")
    return 0


def run_topics(settings: Settings, _args: argparse.Namespace) -> int:
    from services.adapters.kafka_admin import ensure_topics

    created = ensure_topics(settings)
    print(f"topics created: {', '.join(created) if created else 'none (all exist)'}")
    return 0


def run_api(settings: Settings, _args: argparse.Namespace) -> int:
    from services.command_api.main import run

    run(settings)
    return 0


def run_worker(settings: Settings, _args: argparse.Namespace) -> int:
    from services.status_worker.main import run

    run(settings)
    return 0
