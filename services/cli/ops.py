"""Operating the running system: `doctor` (the runbook's checks) and `watch` (a live view)."""

from __future__ import annotations

import argparse
from typing import Any

from services.adapters.settings import Settings


def register(commands: Any) -> None:
    doctor = commands.add_parser("doctor", help="the runbook's checks, with verdicts")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.add_argument("--window", default="15m", help="SLI window, e.g. 5m, 1h (default 15m)")
    doctor.add_argument("--lag-sample", type=float, default=2.0, help="seconds between lag samples")
    doctor.set_defaults(run=run_doctor)
    watch = commands.add_parser("watch", help="live terminal view of throughput, SLIs and lag")
    watch.add_argument("--once", action="store_true", help="render one frame and exit")
    watch.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    watch.set_defaults(run=run_watch)


def run_doctor(settings: Settings, args: argparse.Namespace) -> int:
    from services.ops.doctor import main, window_seconds

    window_seconds(args.window)  # ValueError: main() turns it into a usage error
    return main(settings, window=args.window, lag_sample_s=args.lag_sample, as_json=args.json)


def run_watch(settings: Settings, args: argparse.Namespace) -> int:
    from services.ops.watch import run_watch as watch

    return watch(settings, once=args.once, interval=args.interval)
