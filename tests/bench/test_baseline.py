"""The baseline answers the PATCH contract like the project does (a measuring stick that cut
corners would flatter itself): applied, stale version, invalid transition, another restaurant's
order, a missing order, no token."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from bench.wrk import run_wrk, write_orders
from services.adapters.settings import Settings
from services.loadgen import Mix, Tenant, run_load, seed
from tests.bench.systems import BaselineProcess
from tests.stack import isolated_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def baseline(base_settings: Settings, log_dir: Path) -> Iterator[tuple[httpx.Client, list[Tenant]]]:
    with isolated_settings(base_settings) as settings:
        tenants = seed(settings, restaurants=2, orders_per_restaurant=3)
        process = BaselineProcess(settings, log_dir)
        process.start()
        try:
            with httpx.Client(base_url=process.url, timeout=10) as client:
                yield client, tenants
        finally:
            process.terminate()


def patch(client: httpx.Client, tenant: Tenant, order: uuid.UUID, **body: object) -> httpx.Response:
    return client.patch(
        f"/orders/{order}/status",
        json=body,
        headers={"Authorization": f"Bearer {tenant.token}"},
    )


def test_applied_then_stale_then_invalid(baseline: tuple[httpx.Client, list[Tenant]]) -> None:
    client, (tenant, _) = baseline
    order = tenant.orders[0]
    applied = patch(client, tenant, order, status="accepted", expected_version=1)
    assert applied.status_code == 200, applied.text
    assert applied.json()["status"] == "accepted" and applied.json()["version"] == 2
    stale = patch(client, tenant, order, status="preparing", expected_version=1)
    assert stale.status_code == 409 and stale.json()["current_version"] == 2
    invalid = patch(client, tenant, order, status="pending")
    assert invalid.status_code == 409 and invalid.json()["current_status"] == "accepted"


def test_other_restaurant_missing_and_unauthenticated(
    baseline: tuple[httpx.Client, list[Tenant]],
) -> None:
    client, (mine, theirs) = baseline
    assert patch(client, mine, theirs.orders[0], status="accepted").status_code == 403
    assert patch(client, mine, uuid.uuid4(), status="accepted").status_code == 404
    anonymous = client.patch(f"/orders/{mine.orders[1]}/status", json={"status": "accepted"})
    assert anonymous.status_code == 401
    assert patch(client, theirs, theirs.orders[0], status="accepted").status_code == 200


def test_wrk_counts_what_the_database_applied(
    base_settings: Settings, log_dir: Path, tmp_path: Path
) -> None:
    """bench/wrk.lua: every request a distinct pending order moved to accepted; the answers it
    counts are the changes PostgreSQL holds."""
    with isolated_settings(base_settings) as settings:
        tenants = seed(settings, restaurants=2, orders_per_restaurant=2000)
        process = BaselineProcess(settings, log_dir)
        process.start()
        try:
            orders = write_orders(tmp_path / "orders.txt", tenants)
            result = run_wrk(process.url, orders, mode="fresh", connections=4, seconds=1)
        finally:
            process.terminate()
        with psycopg.connect(settings.admin_url) as conn:
            row = conn.execute("SELECT count(*) FROM orders WHERE status = 'accepted'").fetchone()
    assert result.requests > 0
    assert result.statuses == {200: result.requests}
    # wrk stops on time with up to one request per connection in flight: applied, not counted.
    assert row is not None and 0 <= row[0] - result.requests <= 4


def test_open_loop_load_answers_every_request_and_counts_what_was_applied(
    base_settings: Settings, log_dir: Path
) -> None:
    """services/loadgen.py against the baseline: all requests sent on schedule get an answer,
    the 403s are the cross-tenant share, and its 200s are the events PostgreSQL holds."""
    with isolated_settings(base_settings) as settings:
        tenants = seed(settings, restaurants=3, orders_per_restaurant=100)
        process = BaselineProcess(settings, log_dir)
        process.start()
        try:
            report = run_load(
                process.url,
                tenants,
                rate=150,
                seconds=2,
                mix=Mix(stale=0.2, cross_tenant=0.2),
                connections=16,
            )
        finally:
            process.terminate()
        with psycopg.connect(settings.admin_url) as conn:
            row = conn.execute("SELECT count(*) FROM order_status_events").fetchone()
    summary = report.summary()
    assert summary["sent"] == 300 and summary["answered"] == 300, summary
    assert set(report.statuses) <= {200, 403, 409}, summary
    assert 30 < report.statuses[403] < 90, summary
    assert report.statuses[409] > 0
    assert row is not None and row[0] == report.statuses[200]
