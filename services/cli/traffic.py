"""Traffic against the running API: `demo` (a few POS terminals) and `load` (figures)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from services.adapters.settings import Settings


def register(commands: Any) -> None:
    demo = commands.add_parser("demo", help="simulate POS terminals against the running API")
    demo.add_argument("--url", default=None)
    demo.add_argument("--terminals", type=int, default=3)
    demo.add_argument("--orders", type=int, default=2, help="orders per terminal")
    demo.set_defaults(run=run_demo)
    load = commands.add_parser(
        "load",
        help="open-loop PATCH load at a constant rate against a running API (figures at the end)",
        description="Seeds pending orders as the database owner (DATABASE_ADMIN_URL), then "
        "sends PATCH /orders/{id}/status at a constant arrival rate; latency counts from each "
        "request's intended send time. services/loadgen.py explains the mix.",
    )
    load.add_argument("--url", default=None)
    load.add_argument("--rate", type=float, default=200.0, help="requests per second")
    load.add_argument("--seconds", type=float, default=10.0)
    load.add_argument("--restaurants", type=int, default=4)
    load.add_argument(
        "--orders", type=int, default=None, help="per restaurant (default: enough for one each)"
    )
    load.add_argument("--skew", type=float, default=0.0, help="Zipf exponent; 0: round-robin")
    load.add_argument("--stale", type=float, default=0.0, help="share with a wrong version")
    load.add_argument(
        "--cross-tenant", type=float, default=0.0, help="share with another restaurant's token"
    )
    load.add_argument("--connections", type=int, default=256, help="most open at once")
    load.add_argument(
        "--processes", type=int, default=1, help="generator processes sharing the rate"
    )
    load.add_argument("--json", action="store_true", help="print the figures as JSON")
    load.set_defaults(run=run_load)


def api_url(settings: Settings, url: str | None) -> str:
    return url or f"http://{settings.api_host}:{settings.api_port}"


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    from services.demo import run_demo as demo

    return demo(settings, api_url(settings, args.url), terminals=args.terminals, orders=args.orders)


def run_load(settings: Settings, args: argparse.Namespace) -> int:
    from services.loadgen import Mix, seed
    from services.loadgen import run_load as load

    per_restaurant = args.orders or max(1, int(args.rate * args.seconds / args.restaurants) + 1)
    tenants = seed(settings, args.restaurants, per_restaurant)
    mix = Mix(skew=args.skew, stale=args.stale, cross_tenant=args.cross_tenant)
    options: dict[str, Any] = {
        "rate": args.rate,
        "seconds": args.seconds,
        "mix": mix,
        "connections": args.connections,
        "processes": args.processes,
    }
    url = api_url(settings, args.url)
    if args.json:
        print(json.dumps(load(url, tenants, **options).summary()))
        return 0
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("starting", total=args.seconds)

        def show(elapsed: float, report: Any) -> None:
            bar.update(
                task,
                completed=elapsed,
                description=f"{report.sent} sent, {len(report.latencies)} answered",
            )

        report = load(url, tenants, progress=show, **options)
    table = Table(title=f"PATCH {url} at {args.rate:g}/s for {args.seconds:g} s (open loop)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in report.summary().items():
        table.add_row(name, str(value))
    Console().print(table)
    return 0
