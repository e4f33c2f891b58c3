"""`orderstatus`: the operator's command line. Each command group is a module of this package with
a `register(commands)` that adds its subcommands, each bound to a `run(settings, args) -> int`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from types import ModuleType

from services.adapters.settings import Settings
from services.cli import (
    access,
    events,
    figures,
    kafka_acls,
    messages,
    ops,
    processes,
    retention,
    traffic,
    webhooks,
    worker_ops,
)

Command = Callable[[Settings, argparse.Namespace], int | None]

GROUPS: tuple[ModuleType, ...] = (
    access,
    processes,
    kafka_acls,
    worker_ops,
    figures,
    traffic,
    messages,
    events,
    ops,
    retention,
    webhooks,
)
"""Command groups, in the order `orderstatus --help` lists them."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orderstatus", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(commands)
    args = parser.parse_args(argv)
    run: Command = args.run
    try:
        return run(Settings(), args) or 0
    except ValueError as exc:  # a bad argument found once settings are known
        parser.error(str(exc))


if __name__ == "__main__":
    sys.exit(main())
