"""`orderstatus`: the operator's command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from uuid import UUID

from services.core.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orderstatus", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    token = commands.add_parser("token", help="mint a JWT for the local stack")
    token.add_argument("--restaurant", action="append", type=UUID, default=[], dest="restaurants")
    token.add_argument("--sub", default="staff-local")
    token.add_argument("--role", choices=["authenticated", "service_role"], default="authenticated")
    token.add_argument("--ttl", type=int, default=12 * 3600, help="seconds")

    commands.add_parser("migrate", help="apply database migrations")
    for name, text in (
        ("grant", "let a user (a JWT `sub`) act for a restaurant"),
        ("revoke", "take that back (effective for the next command)"),
    ):
        membership = commands.add_parser(name, help=text)
        membership.add_argument("--restaurant", type=UUID, required=True)
        membership.add_argument("--user", required=True, help="the user's JWT `sub`")
    staff = commands.add_parser("staff", help="list who may act for a restaurant")
    staff.add_argument("--restaurant", type=UUID, required=True)
    commands.add_parser("topics", help="create the Kafka topics")
    commands.add_parser("api", help="run the command API")
    commands.add_parser("worker", help="run a status worker")
    demo = commands.add_parser("demo", help="simulate POS terminals against the running API")
    demo.add_argument("--url", default=None)
    demo.add_argument("--terminals", type=int, default=3)
    demo.add_argument("--orders", type=int, default=2, help="orders per terminal")
    load = commands.add_parser("load", help="drive the running API with simulated terminals")
    load.add_argument("--url", default=None)
    load.add_argument("--terminals", type=int, default=8, help="concurrent clients")
    load.add_argument("--seconds", type=float, default=10.0)
    load.add_argument("--json", action="store_true", help="print the figures as JSON")
    schemas = commands.add_parser("schemas", help="write JSON Schemas of the message contracts")
    schemas.add_argument("--out", type=Path, default=Path("schemas"))

    doctor = commands.add_parser("doctor", help="the runbook's checks, with verdicts")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.add_argument("--window", default="15m", help="SLI window, e.g. 5m, 1h (default 15m)")
    doctor.add_argument("--lag-sample", type=float, default=2.0, help="seconds between lag samples")
    watch = commands.add_parser("watch", help="live terminal view of throughput, SLIs and lag")
    watch.add_argument("--once", action="store_true", help="render one frame and exit")
    watch.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    dlq = commands.add_parser("dlq", help="list or replay the dead-letter topic")
    dlq.add_argument("action", choices=["list", "replay"])
    dlq.add_argument("--at", action="append", default=[], metavar="PARTITION:OFFSET")
    dlq.add_argument("--reason", default=None, help="only reasons starting with this, e.g. error")
    dlq.add_argument("--all", action="store_true", dest="every", help="replay every match")
    dlq.add_argument("--dry-run", action="store_true", help="show what a replay would send")

    args = parser.parse_args(argv)
    settings = Settings()

    if args.command == "token":
        from services.command_api.auth import mint_token
        from services.core.messages import Role

        print(
            f"# {args.role} token for sub={args.sub}, restaurants={len(args.restaurants)}",
            file=sys.stderr,
        )
        print(
            mint_token(
                settings,
                sub=args.sub,
                restaurant_ids=args.restaurants,
                role=Role(args.role),
                ttl_seconds=args.ttl,
            )
        )
    elif args.command == "migrate":
        from services.core.migrate import apply_migrations

        applied = apply_migrations(settings.admin_url)
        print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
    elif args.command in ("grant", "revoke", "staff"):
        return _membership(settings, args)
    elif args.command == "topics":
        from services.core.kafka_admin import ensure_topics

        created = ensure_topics(settings)
        print(f"topics created: {', '.join(created) if created else 'none (all exist)'}")
    elif args.command == "api":
        from services.command_api.main import run as run_api

        run_api(settings)
    elif args.command == "worker":
        from services.status_worker.main import run as run_worker

        run_worker(settings)
    elif args.command == "demo":
        from services.demo import run_demo

        url = args.url or f"http://{settings.api_host}:{settings.api_port}"
        return run_demo(settings, url, terminals=args.terminals, orders=args.orders)
    elif args.command == "load":
        import asyncio

        from services.loadgen import run_load

        url = args.url or f"http://{settings.api_host}:{settings.api_port}"
        figures = asyncio.run(run_load(settings, url, args.terminals, args.seconds)).summary()
        if args.json:
            print(json.dumps(figures))
        else:
            for name, value in figures.items():
                print(f"{name:>14}: {value}")
    elif args.command == "schemas":
        from services.core.schemas import write_schemas

        for path in write_schemas(args.out):
            print(path)
    elif args.command == "doctor":
        from services.ops.doctor import main as run_doctor
        from services.ops.doctor import window_seconds

        try:
            window_seconds(args.window)
        except ValueError as exc:
            parser.error(str(exc))
        return run_doctor(
            settings, window=args.window, lag_sample_s=args.lag_sample, as_json=args.json
        )
    elif args.command == "watch":
        from services.ops.watch import run_watch

        return run_watch(settings, once=args.once, interval=args.interval)
    elif args.command == "dlq":
        from services.dlq import run_dlq

        return run_dlq(
            settings, args.action, args.at, args.reason, every=args.every, dry_run=args.dry_run
        )
    return 0


def _membership(settings: Settings, args: argparse.Namespace) -> int:
    """Staff membership lives in the database (restaurant_staff), written as the owner role."""
    import psycopg

    from services.core import tenancy

    with psycopg.connect(settings.admin_url, autocommit=True) as conn:
        if args.command == "staff":
            for user_id, granted_at, granted_by in tenancy.staff_of(conn, args.restaurant):
                print(f"{user_id}\tsince {granted_at:%Y-%m-%d %H:%M:%S%z}\tby {granted_by}")
            return 0
        change = tenancy.grant_staff if args.command == "grant" else tenancy.revoke_staff
        changed = change(conn, user_id=args.user, restaurant_id=args.restaurant)
    verb = "granted" if args.command == "grant" else "revoked"
    print(f"{args.user} @ {args.restaurant}: {verb if changed else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
