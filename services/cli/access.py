"""Who may act: `token` mints a JWT for the local stack; `grant`, `revoke`, `staff` manage staff
memberships (restaurant_staff), written as the owner role."""

from __future__ import annotations

import argparse
import sys
from typing import Any
from uuid import UUID

from services.adapters.settings import Settings


def register(commands: Any) -> None:
    token = commands.add_parser("token", help="mint a JWT for the local stack")
    token.add_argument("--restaurant", action="append", type=UUID, default=[], dest="restaurants")
    token.add_argument("--sub", default="staff-local")
    token.add_argument("--role", choices=["authenticated", "service_role"], default="authenticated")
    token.add_argument("--ttl", type=int, default=12 * 3600, help="seconds")
    token.set_defaults(run=run_token)
    for name, text in (
        ("grant", "let a user (a JWT `sub`) act for a restaurant"),
        ("revoke", "take that back (effective for the next command)"),
    ):
        membership = commands.add_parser(name, help=text)
        membership.add_argument("--restaurant", type=UUID, required=True)
        membership.add_argument("--user", required=True, help="the user's JWT `sub`")
        membership.set_defaults(run=run_membership)
    staff = commands.add_parser("staff", help="list who may act for a restaurant")
    staff.add_argument("--restaurant", type=UUID, required=True)
    staff.set_defaults(run=run_membership)


def run_token(settings: Settings, args: argparse.Namespace) -> int:
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
    return 0


def run_membership(settings: Settings, args: argparse.Namespace) -> int:
    import psycopg

    from services.adapters import tenancy

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
