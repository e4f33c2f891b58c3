"""Webhooks: `notifier` (the delivery service) and `webhook-receiver` (verifies and prints what a
notifier sends; the demo's receiver)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

from services.adapters.settings import Settings


def register(commands: Any) -> None:
    commands.add_parser("notifier", help="run the webhook notifier").set_defaults(run=run_notifier)
    receiver = commands.add_parser(
        "webhook-receiver", help="receive webhooks: verify each signature and print the event"
    )
    receiver.add_argument("--secret", required=True, help="the endpoint's whsec_… secret")
    receiver.add_argument("--port", type=int, default=9300)
    receiver.add_argument("--host", default="127.0.0.1")
    receiver.set_defaults(run=run_receiver)


def run_notifier(settings: Settings, _args: argparse.Namespace) -> int:
    from services.notifier.main import run

    run(settings)
    return 0


def run_receiver(_settings: Settings, args: argparse.Namespace) -> int:
    from services.notifier.receiver import run_receiver as serve
    from services.notifier.signing import secret_key

    secret_key(args.secret)  # a bad secret is a usage error now, not a rejection per delivery
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.secret, args.host, args.port))
    return 0
