"""The message contracts and what went wrong with them: `schemas`, `dlq`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from services.adapters.settings import Settings


def register(commands: Any) -> None:
    schemas = commands.add_parser("schemas", help="write JSON Schemas of the message contracts")
    schemas.add_argument("--out", type=Path, default=Path("schemas"))
    schemas.set_defaults(run=run_schemas)
    dlq = commands.add_parser("dlq", help="list or replay the dead-letter topic")
    dlq.add_argument("action", choices=["list", "replay"])
    dlq.add_argument("--at", action="append", default=[], metavar="PARTITION:OFFSET")
    dlq.add_argument("--reason", default=None, help="only reasons starting with this, e.g. error")
    dlq.add_argument("--all", action="store_true", dest="every", help="replay every match")
    dlq.add_argument("--dry-run", action="store_true", help="show what a replay would send")
    dlq.set_defaults(run=run_dlq)


def run_schemas(_settings: Settings, args: argparse.Namespace) -> int:
    from services.adapters.schemas import write_schemas

    for path in write_schemas(args.out):
        print(path)
    return 0


def run_dlq(settings: Settings, args: argparse.Namespace) -> int:
    from services.dlq import run_dlq as dlq

    return dlq(settings, args.action, args.at, args.reason, every=args.every, dry_run=args.dry_run)
