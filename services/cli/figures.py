"""`orderstatus figures`: run the live figures app; `orderstatus figures show R`: print one
restaurant's figures from it, and with `--check` compare them to the same figures in SQL."""

from __future__ import annotations

import argparse
import json
from typing import Any
from uuid import UUID

from services.adapters.settings import Settings


def register(commands: Any) -> None:
    figures = commands.add_parser(
        "figures", help="run the live figures app (page, JSON views, metrics on FIGURES_PORT)"
    )
    figures.set_defaults(run=run_app)
    actions = figures.add_subparsers(dest="figures_action")
    show = actions.add_parser("show", help="print a restaurant's figures from the running app")
    show.add_argument("restaurant_id", type=UUID)
    show.add_argument(
        "--check", action="store_true", help="compare with the same figures computed in SQL"
    )
    show.add_argument("--url", help="the figures app (default http://127.0.0.1:FIGURES_PORT)")
    show.set_defaults(run=run_show)


def run_app(settings: Settings, _args: argparse.Namespace) -> int:
    from services.figures.main import run

    run(settings)
    return 0


def run_show(settings: Settings, args: argparse.Namespace) -> int:
    import httpx
    import psycopg

    from services.figures.check import differences, sql_figures

    url = args.url or f"http://127.0.0.1:{settings.figures_port}"
    figures = httpx.get(f"{url}/restaurants/{args.restaurant_id}/figures", timeout=10).json()
    print(json.dumps(figures, indent=2))
    if not args.check:
        return 0
    with psycopg.connect(settings.admin_url) as conn:
        expected = sql_figures(conn, figures)
    found = differences(figures, expected)
    for line in found:
        print(f"differs: {line}")
    print("figures equal SQL" if not found else f"{len(found)} figures differ from SQL")
    return 1 if found else 0
