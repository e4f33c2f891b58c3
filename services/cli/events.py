"""The order events on the events topic: `tail` (live, one line each) and `verify` (orders, their
history and the topic agree). docs/consuming-events.md describes the events."""

from __future__ import annotations

import argparse
import sys
from typing import Any
from uuid import UUID

from services.adapters.settings import Settings


def register(commands: Any) -> None:
    tail = commands.add_parser("tail", help="print order events live, one line each")
    tail.add_argument("--restaurant", type=UUID, help="only this restaurant's orders")
    tail.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest retained event"
    )
    tail.add_argument("--count", type=int, help="stop after this many events")
    tail.add_argument("--idle", type=float, help="stop after this many seconds without an event")
    tail.set_defaults(run=run_tail)
    verify = commands.add_parser(
        "verify", help="check orders, order_status_events and the events topic agree"
    )
    verify.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds to wait before re-checking what looks wrong (a live worker is mid-batch)",
    )
    verify.add_argument("--limit", type=int, default=50, help="offending orders to print at most")
    verify.set_defaults(run=run_verify)


def run_tail(settings: Settings, args: argparse.Namespace) -> int:
    from services.ops.event_tail import tail

    return tail(
        settings,
        sys.stdout,
        restaurant=args.restaurant,
        from_beginning=args.from_beginning,
        count=args.count,
        idle_s=args.idle,
    )


def run_verify(settings: Settings, args: argparse.Namespace) -> int:
    from services.ops.event_verify import verify

    return verify(settings, sys.stdout, settle_s=args.settle, limit=args.limit)
