"""The Grafana dashboard, as code (grafana-foundation-sdk): generates
deploy/grafana/dashboards/orderstatus.json. Edit this file, never the JSON:

    .venv/bin/python -m services.observability.dashboard      (or: make dashboards)

A unit test fails when the committed JSON is not what this module generates, and an end-to-end
test runs every query of it against a real Prometheus (and PostgreSQL) scraping the system."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, stat, table, timeseries
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig, ReduceDataOptions
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import heatmap as heatmap_model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from services.observability import slis

UID = "orderstatus-overview"
PROMETHEUS = model.DataSourceRef(type_val="prometheus", uid="prometheus")
POSTGRES = model.DataSourceRef(type_val="grafana-postgresql-datasource", uid="orderstatus-postgres")
OUTPUT = (
    Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "orderstatus.json"
)
RATE = "$__rate_interval"
DASHED_LINE = GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.DASHED)
"""A time series' threshold (an alert's or a target's) drawn as a dashed line."""
TOP_RESTAURANTS = 10
WEBHOOKS = "orderstatus_webhook"
"""The notifier's metrics (services/notifier/metrics.py, docs/webhooks.md)."""
FIRST_ATTEMPT_TARGET_S = 0.1
"""Issue 12's target: event commit -> first delivery attempt p95 within 100 ms."""
FIGURES = "orderstatus_figures"
"""The figures app's metrics (services/figures/metrics.py): one `restaurant` label per busy
restaurant, the rest as restaurant="other"."""

TOP_RESTAURANTS_SQL = f"""SELECT restaurant_id::text AS restaurant, count(*) AS status_changes,
       count(*) FILTER (WHERE to_status = 'cancelled') AS cancelled
FROM public.order_status_events
WHERE created_at > now() - interval '24 hours'
GROUP BY restaurant_id
ORDER BY status_changes DESC
LIMIT {TOP_RESTAURANTS}"""


class SqlQuery(cogvariants.Dataquery):
    """A table query of Grafana's PostgreSQL datasource (the SDK ships no builder for it)."""

    def __init__(self, ref_id: str, raw_sql: str) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql

    def to_json(self) -> dict[str, Any]:
        return {
            "refId": self.ref_id,
            "datasource": {"type": POSTGRES.type_val, "uid": POSTGRES.uid},
            "editorMode": "code",
            "format": "table",
            "rawQuery": True,
            "rawSql": self.raw_sql,
        }


class Sql(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, ref_id: str, raw_sql: str) -> None:
        self._query = SqlQuery(ref_id, raw_sql)

    def build(self) -> cogvariants.Dataquery:
        return self._query


def promql(expr: str, legend: str = "__auto", ref: str = "A") -> prom.Dataquery:
    return prom.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(PROMETHEUS)


def steps(*pairs: tuple[float | None, str]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in pairs])
    )


def slo_stat(sli: slis.Sli) -> stat.Panel:
    """The SLI's recording rule against its objective: green when met, red when not."""
    if sli.direction is slis.Direction.AT_LEAST:
        colors = steps((None, "red"), (sli.objective, "green"))
    else:
        colors = steps((None, "green"), (sli.objective, "red"))
    return (
        stat.Panel()
        .title(sli.title)
        .description(f"Objective {sli.objective_text()} (runbook). Recording rule {sli.record}.")
        .datasource(PROMETHEUS)
        .with_target(promql(sli.record, sli.title))
        .unit(sli.unit)
        .decimals(2 if sli.unit == "percentunit" else 3)
        .thresholds(colors)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.AREA)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
        .height(5)
        .span(6)
    )


def series(title: str, unit: str, *targets: prom.Dataquery, span: int = 12) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).datasource(PROMETHEUS).unit(unit).height(8).span(span)
    for target in targets:
        panel = panel.with_target(target)
    return panel.fill_opacity(10)


def build() -> db.Dashboard:
    """The dashboard, a row at a time (each row a function: a table of its panels)."""
    dashboard = (
        db.Dashboard("Order Status")
        .uid(UID)
        .tags(["orderstatus", "runbook"])
        .description(
            "The runbook's SLOs, throughput, outcomes, latency, per-restaurant figures, the "
            "Kafka pipeline and webhooks."
        )
        .refresh("10s")
        .time("now-1h", "now")
        .timezone("browser")
        .link(
            db.DashboardLink("Runbook")
            .type(model.DashboardLinkType.LINK)
            .url("docs/runbook.md")
            .target_blank(True)
        )
    )
    rows = (_slo_row, _throughput_row, _latency_row, _figures_row, _pipeline_row, _webhooks_row)
    for row in rows:
        dashboard = row(dashboard)
    return dashboard


def _slo_row(dashboard: db.Dashboard) -> db.Dashboard:
    return (
        dashboard.with_row(db.Row("SLOs (5 minute windows)"))
        .with_panel(slo_stat(slis.SUCCESS))
        .with_panel(slo_stat(slis.PATCH_P95))
        .with_panel(slo_stat(slis.CONFLICT))
        .with_panel(slo_stat(slis.DENIAL))
    )


def _throughput_row(dashboard: db.Dashboard) -> db.Dashboard:
    return (
        dashboard.with_row(db.Row("Throughput and outcomes"))
        .with_panel(
            series(
                "API requests per second by route and status",
                "reqps",
                promql(
                    f"sum by (route, status) (rate({slis.REQUESTS}{{{slis.API_ROUTES}}}[{RATE}]))",
                    "{{route}} {{status}}",
                ),
            )
        )
        .with_panel(
            series(
                "Commands per second by outcome (worker)",
                "ops",
                promql(f"sum by (outcome) (rate({slis.WORKER_COMMANDS}[{RATE}]))", "{{outcome}}"),
            )
        )
        .with_panel(
            series(
                "API answers per second by command outcome",
                "ops",
                promql(
                    f"sum by (outcome) (rate(orderstatus_api_command_outcomes_total[{RATE}]))",
                    "{{outcome}}",
                ),
            )
        )
        .with_panel(
            table.Panel()
            .title(f"Top {TOP_RESTAURANTS} restaurants by status changes (24 h)")
            .description("The runbook's per-restaurant query (PostgreSQL), busiest first.")
            .datasource(POSTGRES)
            .with_target(Sql("A", TOP_RESTAURANTS_SQL))
            .height(8)
            .span(12)
        )
    )


def _latency_row(dashboard: db.Dashboard) -> db.Dashboard:
    patch = slis.PATCH_STATUS
    return (
        dashboard.with_row(db.Row("Latency"))
        .with_panel(
            heatmap.Panel()
            .title("PATCH /status latency heatmap")
            .datasource(PROMETHEUS)
            .with_target(
                promql(
                    f"sum by (le) (increase({slis.DURATION}_bucket{{{patch}}}[{RATE}]))", "{{le}}"
                ).format(PromQueryFormat.HEATMAP)
            )
            .calculate(False)
            .color(
                heatmap.HeatmapColorOptions()
                .mode(heatmap_model.HeatmapColorMode.SCHEME)
                .scheme("Oranges")
                .scale(heatmap_model.HeatmapColorScale.EXPONENTIAL)
                .exponent(0.5)
            )
            .height(8)
            .span(12)
        )
        .with_panel(
            series(
                "Latency p95: PATCH, end to end, worker database and Kafka transaction",
                "s",
                promql(slis.PATCH_P95.expr(RATE), "PATCH /status (API)", "A"),
                promql(
                    f"histogram_quantile(0.95, sum by (le) (rate({slis.COMMAND_E2E}_bucket[{RATE}])))",
                    "command issued -> outcome published",
                    "B",
                ),
                promql(
                    f"histogram_quantile(0.95, sum by (le) (rate(orderstatus_worker_db_seconds_bucket[{RATE}])))",
                    "worker batch in PostgreSQL",
                    "C",
                ),
                promql(
                    f"histogram_quantile(0.95, sum by (le) (rate(orderstatus_worker_publish_seconds_bucket[{RATE}])))",
                    "worker Kafka transaction",
                    "D",
                ),
            )
        )
    )


def _figures_row(dashboard: db.Dashboard) -> db.Dashboard:
    return (
        dashboard.with_row(db.Row("Per-restaurant figures (figures app, docs/figures.md)"))
        .with_panel(
            series(
                f"Status changes in the current minute, top {TOP_RESTAURANTS} restaurants",
                "short",
                promql(f"topk({TOP_RESTAURANTS}, {FIGURES}_changes_last_minute)", "{{restaurant}}"),
                span=8,
            )
        )
        .with_panel(
            series(
                "Conflicts and forbidden attempts, last hour (all restaurants)",
                "short",
                promql(f"sum({FIGURES}_conflicts_last_hour)", "conflicts", "A"),
                promql(f"sum({FIGURES}_forbidden_last_hour)", "forbidden", "B"),
                span=8,
            )
        )
        .with_panel(
            series(
                "Orders open now, by status",
                "short",
                promql(f"sum by (status) ({FIGURES}_open_orders)", "{{status}}"),
                span=8,
            )
        )
        .with_panel(
            series(
                f"Prep time (accepted -> ready) p95 over the last hour, top {TOP_RESTAURANTS}",
                "s",
                promql(
                    f'topk({TOP_RESTAURANTS}, {FIGURES}_prep_time_seconds{{quantile="p95"}})',
                    "{{restaurant}}",
                ),
                span=12,
            )
        )
    )


def _pipeline_row(dashboard: db.Dashboard) -> db.Dashboard:
    return (
        dashboard.with_row(db.Row("Kafka pipeline"))
        .with_panel(
            series(
                "Consumer lag by partition (commands waiting)",
                "short",
                promql(f"sum by (partition) ({slis.CONSUMER_LAG})", "partition {{partition}}"),
                span=8,
            )
        )
        .with_panel(
            series(
                "Dead-lettered commands (last hour)",
                "short",
                promql(f"sum by (reason) (increase({slis.DEAD_LETTERS}[1h]))", "{{reason}}"),
                span=8,
            )
        )
        .with_panel(
            series(
                "Batch size p50 and assigned partitions",
                "short",
                promql(
                    f"histogram_quantile(0.5, sum by (le) (rate(orderstatus_worker_batch_size_bucket[{RATE}])))",
                    "batch size p50",
                    "A",
                ),
                promql(
                    "sum by (instance) (orderstatus_worker_assigned_partitions)",
                    "partitions {{instance}}",
                    "B",
                ),
                span=8,
            )
        )
    )


def _webhooks_row(dashboard: db.Dashboard) -> db.Dashboard:
    first_attempt = f"{WEBHOOKS}_first_attempt_seconds_bucket"
    return (
        dashboard.with_row(db.Row("Webhooks (notifier, docs/webhooks.md)"))
        .with_panel(
            series(
                "Webhook deliveries finished per second, by result",
                "ops",
                promql(
                    f"sum by (result) (rate({WEBHOOKS}_deliveries_total[{RATE}]))", "{{result}}"
                ),
                span=8,
            ).description("delivered, failed (retries used up), disabled (410 or failing too long)")
        )
        .with_panel(
            series(
                "Webhook attempts per second, by result",
                "ops",
                promql(f"sum by (result) (rate({WEBHOOKS}_attempts_total[{RATE}]))", "{{result}}"),
                span=8,
            ).description("Every attempt, retries included; the failing ones say how.")
        )
        .with_panel(
            series(
                "Webhook backlog: pending and retrying deliveries",
                "short",
                promql(f"sum({WEBHOOKS}_pending)", "pending (not delivered nor given up)", "A"),
                promql(f"sum({WEBHOOKS}_retry_backlog)", "retrying (failed at least once)", "B"),
                span=8,
            )
        )
        .with_panel(
            series(
                "Oldest undelivered webhook",
                "s",
                promql(f"max({WEBHOOKS}_oldest_undelivered_seconds)", "oldest pending event age"),
                span=12,
            )
            .description("Alert WebhookDeliveriesDelayed above 15 minutes.")
            .thresholds(steps((None, "green"), (900, "red")))
            .thresholds_style(DASHED_LINE)
        )
        .with_panel(
            series(
                "Event applied -> first delivery attempt p95",
                "s",
                promql(
                    f"histogram_quantile(0.95, sum by (le) (rate({first_attempt}[{RATE}])))",
                    "first attempt p95",
                ),
                span=12,
            )
            .description(f"Target (issue 12): p95 within {FIRST_ATTEMPT_TARGET_S * 1000:.0f} ms.")
            .thresholds(steps((None, "green"), (FIRST_ATTEMPT_TARGET_S, "red")))
            .thresholds_style(DASHED_LINE)
        )
    )


def dashboard_json() -> str:
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def panel_queries(document: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(panel title, datasource type, query) of every target of a dashboard JSON document."""
    found = []
    panels = document.get("panels", [])
    for panel in [*panels, *(inner for p in panels for inner in p.get("panels") or [])]:
        for target in panel.get("targets") or []:
            source = (target.get("datasource") or panel.get("datasource") or {}).get("type", "")
            query = target.get("expr") or target.get("rawSql") or ""
            found.append((panel.get("title", ""), source, query))
    return found


def main(argv: list[str] | None = None) -> int:
    out = Path(argv[0]) if argv else OUTPUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dashboard_json())
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
