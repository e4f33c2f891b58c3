"""`orderstatus doctor` against a running system watched by a real Prometheus: all green after
demo load; with the worker stopped and commands waiting, the lag is red and the exit code 1.
`orderstatus watch --once` renders a frame of the same system."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.adapters.settings import Settings
from services.demo import run_demo
from tests.observability_stack import (
    PROMETHEUS,
    ObservedStack,
    create_pg_stat_statements,
    enqueue_create_orders,
    observed_stack,
    wait_for,
)
from tests.stack import ORDERSTATUS, settings_env
from tests.tools import needs_tool

pytestmark = needs_tool(PROMETHEUS, "prometheus")

EXPECTED_CHECKS = {
    ("reachability", "kafka"),
    ("reachability", "postgres"),
    ("reachability", "prometheus"),
    ("prometheus", "scrape targets"),
    ("slis", "API success rate (not 5xx)"),
    ("slis", "PATCH /status p95 latency"),
    ("slis", "Conflict rate (409 / PATCH)"),
    ("slis", "Denial rate (403 / PATCH)"),
    ("database", "conflicts (24 h)"),
    ("database", "status changes per restaurant (7 d)"),
    ("database", "indexes"),
    ("database", "table sizes"),
    ("database", "slowest statements"),
    ("kafka", "consumer lag"),
    ("kafka", "dead letters"),
    ("config", "configuration"),
}


@pytest.fixture(scope="module")
def system(base_settings: Settings, log_dir: Path) -> Iterator[ObservedStack]:
    with observed_stack(base_settings, log_dir) as stack:
        create_pg_stat_statements(stack.settings)
        assert run_demo(stack.settings, stack.url, terminals=3, orders=2) == 0
        wait_for(
            lambda: stack.query('sum(orderstatus_http_requests_total{method="PATCH"}) > 0'),
            30,
            "PATCH requests scraped",
        )
        yield stack


def doctor(stack: ObservedStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ORDERSTATUS, "doctor", *args],
        env=settings_env(stack.settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def checks(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["section"], c["name"]): c for c in report["checks"]}


def test_doctor_is_all_green_after_demo_load(system: ObservedStack) -> None:
    run = doctor(system, "--json", "--window", "5m")
    report = json.loads(run.stdout)
    found = checks(report)
    assert set(found) >= EXPECTED_CHECKS, run.stdout
    not_green = {
        name: c["summary"] for name, c in found.items() if c["verdict"] not in ("ok", "info")
    }
    assert not_green == {}
    assert (report["verdict"], run.returncode) == ("ok", 0), run.stderr
    assert found[("kafka", "consumer lag")]["details"]["members"] >= 1
    assert found[("prometheus", "scrape targets")]["verdict"] == "ok"
    assert found[("slis", "API success rate (not 5xx)")]["details"]["source"] == "prometheus"
    statements = found[("database", "slowest statements")]["details"]
    assert statements and all("mean_exec_ms" in row for row in statements)


def test_doctor_prints_a_table_for_people(system: ObservedStack) -> None:
    run = doctor(system, "--window", "5m", "--lag-sample", "0.5")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "consumer lag" in run.stdout and "overall: ok" in run.stdout


def test_doctor_refuses_a_malformed_window(system: ObservedStack) -> None:
    run = doctor(system, "--window", "five minutes")
    assert run.returncode == 2 and "window" in run.stderr


def test_watch_renders_one_frame(system: ObservedStack) -> None:
    run = subprocess.run(
        [ORDERSTATUS, "watch", "--once"],
        env={**settings_env(system.settings), "COLUMNS": "160"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    for part in ("throughput", "Conflict rate (409 / PATCH)", "consumer lag", "source: prometheus"):
        assert part in run.stdout


def test_with_the_worker_stopped_and_commands_waiting_the_lag_is_red(
    system: ObservedStack,
) -> None:
    """Last in this module: it stops the worker."""
    assert system.worker.terminate() == 0
    enqueue_create_orders(system.settings, 5)

    run = doctor(system, "--json", "--window", "5m", "--lag-sample", "1")
    report = json.loads(run.stdout)
    lag = checks(report)[("kafka", "consumer lag")]
    assert lag["verdict"] == "fail", lag
    assert sum(p["lag"] for p in lag["details"]["partitions"]) == 5
    assert (report["verdict"], run.returncode) == ("fail", 1)
