"""Every Grafana dashboard query and every recording rule returns data from a real Prometheus
scraping the running API, worker, figures app and webhook notifier after demo load (plus a 409, a
403, and webhooks delivered to a receiver registered for one restaurant)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml

from services.adapters.settings import Settings
from services.demo import run_demo
from services.observability import dashboard
from tests.observability_stack import (
    PROMETHEUS,
    RULE_FILES,
    ObservedStack,
    observed_stack,
    until_empty,
    wait_for,
)
from tests.stack import Tokens
from tests.tools import needs_tool
from tests.webhooks import Receiver, running_receiver, wait_until

pytestmark = needs_tool(PROMETHEUS, "prometheus")

RATE_INTERVAL = "1m"
"""What Grafana would put for $__rate_interval at this scrape interval and time range."""


@pytest.fixture(scope="module")
def loaded(base_settings: Settings, log_dir: Path) -> Iterator[ObservedStack]:
    receiver = Receiver()
    with (
        observed_stack(base_settings, log_dir, figures=True, notifier=True) as stack,
        running_receiver(receiver) as receiver_url,
    ):
        assert run_demo(stack.settings, stack.url, terminals=3, orders=2) == 0
        tokens = Tokens(stack.settings)
        restaurant = uuid.uuid4()
        with httpx.Client(base_url=stack.url, timeout=15) as api:
            endpoint = api.post(
                "/webhooks/endpoints",
                json={"restaurant_id": str(restaurant), "url": receiver_url},
                headers=tokens.headers(restaurant),
            )
            assert endpoint.status_code == 201, endpoint.text
            order = api.post(
                "/orders",
                json={"restaurant_id": str(restaurant)},
                headers=tokens.headers(restaurant),
            ).json()
            path = f"/orders/{order['order_id']}/status"
            body = {"status": "accepted", "expected_version": 1}
            assert api.patch(path, json=body, headers=tokens.headers(restaurant)).status_code == 200
            assert api.patch(path, json=body, headers=tokens.headers(restaurant)).status_code == 409
            stranger = tokens.headers(uuid.uuid4())
            assert (
                api.patch(path, json={"status": "preparing"}, headers=stranger).status_code == 403
            )
        # The order's two changes reach the receiver: the webhook panels have deliveries to show.
        wait_until(lambda: len(receiver.ok_events()) >= 2, 60, "webhooks delivered")
        yield stack


def dashboard_queries() -> list[tuple[str, str, str]]:
    document = json.loads(dashboard.OUTPUT.read_text())
    return dashboard.panel_queries(document)


def recording_rules() -> list[str]:
    names = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            names.extend(rule["record"] for rule in group["rules"] if "record" in rule)
    return names


def test_every_dashboard_query_returns_data(loaded: ObservedStack) -> None:
    promql = [
        (title, query.replace("$__rate_interval", RATE_INTERVAL))
        for title, source, query in dashboard_queries()
        if source == "prometheus"
    ]
    assert len(promql) >= 10

    def empty() -> list[str]:
        return [f"{title}: {expr}" for title, expr in promql if not loaded.query(expr)]

    assert until_empty(empty, 60) == [], "queries without data"


def test_the_sql_panels_return_rows(loaded: ObservedStack) -> None:
    sql = [(title, query) for title, source, query in dashboard_queries() if "postgres" in source]
    assert sql
    with psycopg.connect(loaded.settings.admin_url) as conn:
        for title, query in sql:
            assert conn.execute(query).fetchall(), title  # type: ignore[arg-type]


def test_every_recording_rule_returns_data(loaded: ObservedStack) -> None:
    names = recording_rules()
    assert len(names) >= 7

    def empty() -> list[str]:
        return [name for name in names if not loaded.query(name)]

    assert until_empty(empty, 60) == [], "recording rules without data"


def test_the_slis_see_the_409_and_the_403(loaded: ObservedStack) -> None:
    for record in (
        "orderstatus:patch_conflict:ratio_rate5m",
        "orderstatus:patch_denial:ratio_rate5m",
    ):
        wait_for(
            lambda record=record: any(float(s["value"][1]) > 0 for s in loaded.query(record)),
            60,
            record,
            every=1,
        )
