"""The Prometheus rules agree with the SLIs defined in Python, every alert (of the API, the worker
and the brokers) links its runbook section, and every alert has a promtool test where it fires and
one where it does not."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.observability import slis

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "orderstatus.yml"
KAFKA_RULES = ROOT / "deploy" / "prometheus" / "rules" / "kafka.yml"
"""The brokers' alerts: their sections are in the runbook too."""
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests"
RUNBOOK = ROOT / "docs" / "runbook.md"


def rules(path: Path = RULES) -> list[dict[str, Any]]:
    document = yaml.safe_load(path.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def recorded() -> dict[str, str]:
    return {rule["record"]: rule["expr"] for rule in rules() if "record" in rule}


def alerts() -> list[dict[str, Any]]:
    return [rule for path in (RULES, KAFKA_RULES) for rule in rules(path) if "alert" in rule]


@pytest.mark.parametrize("sli", slis.SLIS, ids=lambda s: s.key)
def test_each_sli_recording_rule_is_the_python_definition(sli: slis.Sli) -> None:
    assert recorded()[sli.record] == sli.expr(slis.RULE_WINDOW)


@pytest.mark.parametrize(
    ("record", "expr"),
    [
        (slis.REQUEST_RATE, slis.REQUEST_RATE_EXPR),
        (slis.COMMAND_RATE, slis.COMMAND_RATE_EXPR),
        (slis.LAG_TOTAL, slis.LAG_TOTAL_EXPR),
    ],
)
def test_throughput_and_lag_rules_are_the_python_definitions(record: str, expr: str) -> None:
    assert recorded()[record] == expr


def test_the_alert_thresholds_are_the_runbook_objectives() -> None:
    by_name = {rule["alert"]: rule["expr"] for rule in alerts()}
    assert by_name["OrderStatusConflictRateHigh"] == f"{slis.CONFLICT.record} > 0.02"
    assert by_name["OrderStatusDenialRateHigh"] == f"{slis.DENIAL.record} > 0.005"
    assert by_name["OrderStatusPatchLatencyHigh"] == f"{slis.PATCH_P95.record} > 0.3"
    assert "increase(orderstatus_http_server_errors_total" in by_name["OrderStatusServerErrors"]


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return anchors


def test_every_alert_links_an_existing_runbook_section() -> None:
    anchors = _anchors(RUNBOOK.read_text())
    for rule in alerts():
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/runbook.md", rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in docs/runbook.md"
        assert rule["annotations"]["summary"] and rule["labels"]["severity"]


def test_every_alert_has_a_firing_and_a_quiet_promtool_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS.glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"
