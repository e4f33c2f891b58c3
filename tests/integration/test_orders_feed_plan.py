"""`GET /orders`' query (services/command_api/feed_queries.OPEN_ORDERS) as PostgreSQL plans it for
a staff member under row-level security, on a database shaped like a real one (many restaurants,
most orders closed): the keyset runs on orders_status_created_idx, on the first page and on later
ones; and its pages, read as the caller, are the restaurant's open orders exactly once, in order."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from services.adapters.settings import Settings
from services.adapters.tenancy import acting_as, grant_staff
from services.command_api.feed_db import FIRST_PAGE
from services.command_api.feed_queries import OPEN_ORDERS
from services.command_api.orders_feed import OPEN_STATUSES
from services.core.messages import Actor, Role
from tests.stack import migrated_database

RESTAURANTS = 50
ORDERS = 50_000
OPEN_SHARE = 0.05
STAFF = Actor(sub="kitchen", role=Role.AUTHENTICATED)

SEED = """
INSERT INTO orders (id, restaurant_id, status, version, created_at, updated_at)
SELECT gen_random_uuid(),
       (%(restaurants)s::uuid[])[1 + i %% %(count)s],
       CASE WHEN random() < %(open_share)s
            THEN (ARRAY['pending', 'accepted', 'preparing', 'ready'])[1 + (i / %(count)s) %% 4]
            ELSE (ARRAY['completed', 'cancelled', 'rejected'])[1 + (i / %(count)s) %% 3] END,
       1, now() - make_interval(secs => i), now()
FROM generate_series(1, %(orders)s) AS i
"""


@pytest.fixture(scope="module")
def seeded(base_settings: Settings) -> Iterator[tuple[str, uuid.UUID]]:
    restaurants = [uuid.uuid4() for _ in range(RESTAURANTS)]
    with migrated_database(base_settings) as (app_url, admin_url):
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                SEED,
                {
                    "restaurants": restaurants,
                    "count": RESTAURANTS,
                    "open_share": OPEN_SHARE,
                    "orders": ORDERS,
                },
            )
            grant_staff(conn, user_id=STAFF.sub, restaurant_id=restaurants[0])
            conn.execute("ANALYZE")
        yield app_url, restaurants[0]


def params(restaurant: uuid.UUID, keyset: dict[str, Any], limit: int = 50) -> dict[str, Any]:
    return {
        "restaurant_id": restaurant,
        "statuses": [s.value for s in OPEN_STATUSES],
        "limit": limit,
        **keyset,
    }


def plan(app_url: str, query_params: dict[str, Any]) -> dict[str, Any]:
    with psycopg.connect(app_url) as conn, conn.transaction(), acting_as(conn, STAFF):
        row = conn.execute(f"EXPLAIN (FORMAT JSON) {OPEN_ORDERS}", query_params).fetchone()
    assert row is not None
    document = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return document[0]["Plan"]  # type: ignore[no-any-return]


def index_scans(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "Index Name" in node:
        yield node
    for child in node.get("Plans", []):
        yield from index_scans(child)


def pages(app_url: str, restaurant: uuid.UUID, limit: int) -> list[tuple[str, Any, uuid.UUID]]:
    seen: list[tuple[str, Any, uuid.UUID]] = []
    keyset: dict[str, Any] = FIRST_PAGE
    with psycopg.connect(app_url) as conn:
        while True:
            with conn.transaction(), acting_as(conn, STAFF):
                rows = conn.execute(OPEN_ORDERS, params(restaurant, keyset, limit)).fetchall()
            seen += [(status, created, order_id) for order_id, _, status, _, created, _ in rows]
            if len(rows) < limit:
                return seen
            keyset = {
                "after_status": seen[-1][0],
                "after_created_at": seen[-1][1],
                "after_id": seen[-1][2],
            }


def test_the_keyset_runs_on_orders_status_created_idx(seeded: tuple[str, uuid.UUID]) -> None:
    app_url, restaurant = seeded
    first = plan(app_url, params(restaurant, FIRST_PAGE))
    later = plan(
        app_url,
        params(
            restaurant,
            {
                "after_status": "pending",
                "after_created_at": "2026-01-01",
                "after_id": uuid.UUID(int=7),
            },
        ),
    )
    for root in (first, later):
        scans = {scan["Index Name"]: scan for scan in index_scans(root)}
        print({name: scan["Node Type"] for name, scan in scans.items()})
        assert "orders_status_created_idx" in scans, root
        condition = scans["orders_status_created_idx"]["Index Cond"]
        assert "status = ANY" in condition and "ROW(status, created_at) >=" in condition


def test_pages_are_the_restaurants_open_orders_once_each_in_order(
    seeded: tuple[str, uuid.UUID],
) -> None:
    app_url, restaurant = seeded
    seen = pages(app_url, restaurant, limit=37)
    assert len(seen) == len(set(seen)) > 0
    assert seen == sorted(seen)
    assert {status for status, _, _ in seen} == {s.value for s in OPEN_STATUSES}
    # Row-level security shows the caller its restaurant's orders only: all of those open.
    statuses = [s.value for s in OPEN_STATUSES]
    with psycopg.connect(app_url) as conn, conn.transaction(), acting_as(conn, STAFF):
        visible = conn.execute(
            "SELECT count(*) FROM orders WHERE status = ANY(%s)", (statuses,)
        ).fetchone()
    assert visible is not None and visible[0] == len(seen)
