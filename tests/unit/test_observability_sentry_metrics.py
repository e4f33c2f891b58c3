"""Trace headers read back from Kafka headers, route labels, the generated dashboard, and the API
metrics summed across processes in multiprocess mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from hypothesis import given
from hypothesis import strategies as st

from services.observability import dashboard, sentry, slis
from services.observability.api_metrics import UNMATCHED, route_template

ROOT = Path(__file__).resolve().parents[2]


@given(st.from_regex(r"[0-9a-f]{32}-[0-9a-f]{16}-[01]", fullmatch=True), st.text(max_size=50))
def test_trace_headers_are_carried_whatever_their_encoding(traceparent: str, baggage: str) -> None:
    as_bytes = [("rid", b"r1"), ("sentry-trace", traceparent.encode()), ("command_id", None)]
    as_dict = {"sentry-trace": traceparent, "baggage": baggage}
    assert sentry.carried_trace(as_bytes) == {"sentry-trace": traceparent}
    assert sentry.carried_trace(as_dict) == (
        {"sentry-trace": traceparent, "baggage": baggage}
        if baggage
        else {"sentry-trace": traceparent}
    )
    assert sentry.carried_trace(None) == {}


def test_the_route_label_is_the_template_and_unmatched_paths_share_one_label() -> None:
    class Route:
        path = "/orders/{order_id}/status"

    assert route_template({"type": "http", "route": Route()}) == "/orders/{order_id}/status"
    assert route_template({"type": "http", "path": "/random/123"}) == UNMATCHED


def test_the_committed_dashboard_is_what_the_code_generates() -> None:
    assert dashboard.OUTPUT.read_text() == dashboard.dashboard_json(), "run `make dashboards`"


def test_the_dashboard_shows_each_slo_against_its_objective() -> None:
    document = json.loads(dashboard.dashboard_json())
    stats = {p["title"]: p for p in document["panels"] if p["type"] == "stat"}
    for sli in slis.SLIS:
        panel = stats[sli.title]
        assert panel["targets"][0]["expr"] == sli.record
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [s["value"] for s in steps] == [None, sli.objective]
    kinds = {p["type"] for p in document["panels"]}
    assert {"stat", "timeseries", "heatmap", "table", "row"} <= kinds


def test_the_dashboard_datasources_are_provisioned() -> None:
    provisioned = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/orderstatus.yml").read_text()
    )
    uids = {d["uid"]: d["type"] for d in provisioned["datasources"]}
    document = json.loads(dashboard.dashboard_json())
    used = {
        (t["datasource"]["uid"], t["datasource"]["type"])
        for p in document["panels"]
        for t in p.get("targets") or []
    }
    assert used <= set(uids.items())


INCREMENT = """
from services.observability.api_metrics import ApiMetrics
metrics = ApiMetrics()
for _ in range({n}):
    metrics.observe_request("/orders/{{order_id}}/status", "PATCH", 409, 0.05, "order_status_conflict")
"""

EXPOSE = """
import sys
from services.observability.api_metrics import ApiMetrics
sys.stdout.write(ApiMetrics().exposition().decode())
"""


def test_multiprocess_mode_sums_the_api_processes(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for n in (3, 4):
        subprocess.run([sys.executable, "-c", INCREMENT.format(n=n)], env=env, check=True, cwd=ROOT)
    text = subprocess.run(
        [sys.executable, "-c", EXPOSE],
        env=env,
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    line = 'orderstatus_http_requests_total{method="PATCH",route="/orders/{order_id}/status",status="409"} 7.0'
    assert line in text
    assert 'orderstatus_api_command_outcomes_total{outcome="conflict"} 7.0' in text
    assert (
        'orderstatus_http_request_duration_seconds_bucket{le="0.3",method="PATCH",route="/orders/{order_id}/status"} 7.0'
        in text
    )
