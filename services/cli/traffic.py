"""Traffic against the running API: `demo` (a few POS terminals) and `load` (figures)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from services.core.settings import Settings


def register(commands: Any) -> None:
    demo = commands.add_parser("demo", help="simulate POS terminals against the running API")
    demo.add_argument("--url", default=None)
    demo.add_argument("--terminals", type=int, default=3)
    demo.add_argument("--orders", type=int, default=2, help="orders per terminal")
    demo.set_defaults(run=run_demo)
    load = commands.add_parser("load", help="drive the running API with simulated terminals")
    load.add_argument("--url", default=None)
    load.add_argument("--terminals", type=int, default=8, help="concurrent clients")
    load.add_argument("--seconds", type=float, default=10.0)
    load.add_argument("--json", action="store_true", help="print the figures as JSON")
    load.set_defaults(run=run_load)


def api_url(settings: Settings, url: str | None) -> str:
    return url or f"http://{settings.api_host}:{settings.api_port}"


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    from services.demo import run_demo as demo

    return demo(settings, api_url(settings, args.url), terminals=args.terminals, orders=args.orders)


def run_load(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from services.loadgen import run_load as load

    url = api_url(settings, args.url)
    figures = asyncio.run(load(settings, url, args.terminals, args.seconds)).summary()
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:>14}: {value}")
    return 0
