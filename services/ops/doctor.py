"""`orderstatus doctor`: the runbook's investigations as one command, each with a verdict against
the runbook's thresholds. Exit code 1 when any check fails (red), else 0; `--json` for machines.

Every probe is guarded: a component that cannot be asked yields a failed (or warning) check of its
own instead of stopping the rest."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from rich.console import Console
from rich.table import Table

from services.adapters.settings import Settings
from services.observability import slis
from services.observability.kafka_lag import PartitionLag
from services.ops import kafka_checks, queries, webhook_checks
from services.ops.partitions import coverage
from services.ops.prometheus import Prometheus, PrometheusError
from services.ops.verdicts import (
    Judged,
    Verdict,
    judge_config,
    judge_dead_letters,
    judge_indexes,
    judge_kafka_security,
    judge_lag,
    judge_partitions,
    judge_reachable,
    judge_server_errors,
    judge_sli,
    judge_statements,
    judge_targets,
    worst,
)

SERVICE_JOBS = ("command-api", "status-worker")
WINDOW_PATTERN = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def window_seconds(window: str) -> int:
    """'15m' -> 900; raises ValueError for anything PromQL's range syntax would not take."""
    match = WINDOW_PATTERN.match(window)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"window must look like 30s, 15m, 1h or 7d, not {window!r}")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


@dataclass
class Check:
    section: str
    name: str
    verdict: Verdict
    summary: str
    details: Any = None

    def as_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "name": self.name,
            "verdict": self.verdict.value,
            "summary": self.summary,
            "details": self.details,
        }


@dataclass
class Report:
    window: str
    checks: list[Check] = field(default_factory=list)
    generated_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def verdict(self) -> Verdict:
        return worst(c.verdict for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 1 if self.verdict is Verdict.FAIL else 0

    def add(self, section: str, name: str, judged: Judged, details: Any = None) -> None:
        self.checks.append(Check(section, name, judged.verdict, judged.summary, details))

    def as_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "exit_code": self.exit_code,
            "window": self.window,
            "generated_at": self.generated_at,
            "checks": [c.as_json() for c in self.checks],
        }


def _guarded(
    report: Report, section: str, name: str, probe: Callable[[], None], on_error: Verdict
) -> None:
    try:
        probe()
    except Exception as exc:
        report.add(section, name, Judged(on_error, f"not checked: {type(exc).__name__}: {exc}"))


def run_doctor(
    settings: Settings, *, window: str = "15m", lag_sample_s: float = 2.0, top: int = 10
) -> Report:
    window_seconds(window)
    report = Report(window)
    prometheus = Prometheus(settings.prometheus_url)
    reachable = _reachability(report, settings, prometheus)
    if reachable["prometheus"]:
        _prometheus_checks(report, prometheus, window)
    elif reachable["postgres"]:
        _database_slis(report, settings, window)
    if reachable["postgres"]:
        _database_checks(report, settings, top)
        _guarded(
            report, "webhooks", "deliveries", lambda: _webhooks(report, settings), Verdict.WARN
        )
    if reachable["kafka"]:
        _kafka_checks(report, settings, lag_sample_s)
    _kafka_security(report, settings, reachable["kafka"])
    report.add(
        "config",
        "configuration",
        judge_config(settings),
        {"environment": settings.environment, "sentry": bool(settings.sentry_dsn)},
    )
    return report


def _reachability(report: Report, settings: Settings, prometheus: Prometheus) -> dict[str, bool]:
    errors: dict[str, str | None] = {}
    try:
        kafka_checks.broker_count(settings)
        errors["kafka"] = None
    except Exception as exc:
        errors["kafka"] = f"{type(exc).__name__}: {exc}"
    try:
        with psycopg.connect(settings.admin_url, connect_timeout=5) as conn:
            conn.execute(queries.PING)
        errors["postgres"] = None
    except Exception as exc:
        errors["postgres"] = f"{type(exc).__name__}: {str(exc).strip()}"
    try:
        prometheus.ready()
        errors["prometheus"] = None
    except PrometheusError as exc:
        errors["prometheus"] = str(exc)
    where = {
        "kafka": settings.kafka_bootstrap_servers,
        "postgres": psycopg.conninfo.conninfo_to_dict(settings.admin_url).get("host", "?"),
        "prometheus": settings.prometheus_url,
    }
    for component, error in errors.items():
        # Without Prometheus the system still works; the operator is blind, not the customers.
        judged = judge_reachable(component, error, required=component != "prometheus")
        report.add("reachability", component, judged, {"address": where[component]})
    return {component: error is None for component, error in errors.items()}


def _prometheus_checks(report: Report, prometheus: Prometheus, window: str) -> None:
    def targets() -> None:
        found = prometheus.targets(SERVICE_JOBS)
        report.add(
            "prometheus",
            "scrape targets",
            judge_targets(found),
            [{"job": j, "instance": i, "up": up} for j, i, up in found],
        )

    def sli_values() -> None:
        patches = prometheus.scalar(
            f"sum(increase({slis.REQUESTS}{{{slis.PATCH_STATUS}}}[{window}]))"
        )
        errors = prometheus.scalar(
            f'sum(increase({slis.REQUESTS}{{{slis.API_ROUTES},status=~"5.."}}[{window}]))'
        )
        for sli in slis.SLIS:
            value = prometheus.scalar(sli.expr(window))
            if sli is slis.SUCCESS:
                judged = judge_server_errors(errors or 0.0, value, sli.objective_text())
            else:
                judged = judge_sli(sli, value, patches or 0.0)
            report.add(
                "slis",
                sli.title,
                judged,
                {"value": value, "objective": sli.objective, "source": "prometheus"},
            )

    _guarded(report, "prometheus", "scrape targets", targets, Verdict.WARN)
    _guarded(report, "slis", "SLIs", sli_values, Verdict.WARN)


def _database_slis(report: Report, settings: Settings, window: str) -> None:
    """Without Prometheus: conflict and denial rates of status changes from the worker's inbox."""

    def probe() -> None:
        with psycopg.connect(settings.admin_url, connect_timeout=5) as conn:
            rows = conn.execute(
                queries.OUTCOMES_SINCE, {"seconds": window_seconds(window)}
            ).fetchall()
        changes = {outcome: n for kind, outcome, n in rows if kind == "change_status"}
        total = sum(changes.values())
        for sli, outcome in ((slis.CONFLICT, "conflict"), (slis.DENIAL, "forbidden")):
            value = changes.get(outcome, 0) / total if total else None
            report.add(
                "slis",
                sli.title,
                judge_sli(sli, value, total),
                {"value": value, "objective": sli.objective, "source": "postgres"},
            )

    _guarded(report, "slis", "SLIs (from PostgreSQL)", probe, Verdict.WARN)


def _webhooks(report: Report, settings: Settings) -> None:
    state = webhook_checks.webhook_state(settings)
    report.add("webhooks", "deliveries", webhook_checks.judge_webhooks(state), state)


def _database_checks(report: Report, settings: Settings, top: int) -> None:
    def probe() -> None:
        with psycopg.connect(settings.admin_url, connect_timeout=5, row_factory=dict_row) as conn:
            _activity_checks(report, conn, top)
            _schema_checks(report, conn, top)

    _guarded(report, "database", "runbook queries", probe, Verdict.FAIL)


def _activity_checks(report: Report, conn: psycopg.Connection[dict[str, Any]], top: int) -> None:
    """What the runbook's activity queries say: conflicts, the busiest restaurants, the pace."""
    conflicts = conn.execute(queries.CONFLICTS_24H).fetchone() or {}
    report.add(
        "database",
        "conflicts (24 h)",
        Judged(Verdict.INFO, f"{conflicts.get('conflicts_24h', 0)} conflicts recorded"),
        conflicts,
    )
    per_restaurant = conn.execute(queries.CHANGES_PER_RESTAURANT_7D, {"limit": top}).fetchall()
    busiest = per_restaurant[0] if per_restaurant else None
    report.add(
        "database",
        "status changes per restaurant (7 d)",
        Judged(
            Verdict.INFO,
            f"busiest {busiest['restaurant_id']}: {busiest['changes_7d']}"
            if busiest
            else "no status change in 7 days",
        ),
        per_restaurant,
    )
    pace = conn.execute(queries.AVG_CHANGE_INTERVAL_1H).fetchone() or {}
    average = pace.get("avg_interval_seconds")
    report.add(
        "database",
        "average interval between changes (1 h)",
        Judged(
            Verdict.INFO,
            f"{float(average):.2f} s over {pace.get('changes_1h', 0)} changes"
            if average is not None
            else "fewer than two changes in the last hour",
        ),
        pace,
    )


def _schema_checks(report: Report, conn: psycopg.Connection[dict[str, Any]], top: int) -> None:
    """The runbook's indexes, table sizes and the slowest statements."""
    indexes = conn.execute(queries.INDEXES).fetchall()
    report.add(
        "database",
        "indexes",
        judge_indexes((r["tablename"], r["indexname"]) for r in indexes),
        indexes,
    )
    sizes = conn.execute(queries.TABLE_SIZES).fetchall()
    report.add(
        "database",
        "table sizes",
        Judged(Verdict.INFO, ", ".join(f"{r['tablename']} {r['size']}" for r in sizes)),
        sizes,
    )
    today = datetime.now(UTC).date()
    tables = coverage(conn)
    report.add(
        "database",
        "partitions",
        judge_partitions(
            {t.parent: t.days_ahead(today) for t in tables},
            {t.parent: t.default_rows for t in tables},
        ),
        [{**asdict(t), "days_ahead": t.days_ahead(today)} for t in tables],
    )
    installed_row = conn.execute(queries.PG_STAT_STATEMENTS_INSTALLED).fetchone()
    installed = bool(installed_row and next(iter(installed_row.values())))
    statements = (
        conn.execute(queries.SLOWEST_STATEMENTS, {"limit": top}).fetchall() if installed else []
    )
    report.add(
        "database",
        "slowest statements",
        judge_statements(installed, [float(r["mean_exec_ms"]) for r in statements]),
        statements,
    )


def _kafka_checks(report: Report, settings: Settings, lag_sample_s: float) -> None:
    def lag() -> None:
        before = kafka_checks.worker_lag(settings)
        time.sleep(lag_sample_s)
        after = kafka_checks.worker_lag(settings)
        try:
            state, members = kafka_checks.group_members(settings)
        except Exception as exc:
            state, members = f"unknown ({type(exc).__name__})", -1
        judged = judge_lag(before, after, lag_sample_s)
        report.add(
            "kafka",
            "consumer lag",
            Judged(judged.verdict, f"{judged.summary}; group {state}, {members} members"),
            {
                "group": settings.worker_group_id,
                "state": state,
                "members": members,
                "partitions": [_lag_json(p) for p in after],
            },
        )

    def dead_letters() -> None:
        depth, exact = kafka_checks.count_messages(settings, settings.topics.dead_letters)
        judged = judge_dead_letters(depth)
        summary = judged.summary if exact else f"{judged.summary} (at most; counting timed out)"
        report.add(
            "kafka",
            "dead letters",
            Judged(judged.verdict, summary),
            {"topic": settings.topics.dead_letters, "depth": depth, "exact": exact},
        )

    _guarded(report, "kafka", "consumer lag", lag, Verdict.FAIL)
    _guarded(report, "kafka", "dead letters", dead_letters, Verdict.WARN)


def _kafka_security(report: Report, settings: Settings, reachable: bool) -> None:
    """The client's security mode always (it is what a prod deploy gets wrong); the broker's when
    it answers the operator's describe."""
    broker, error = None, None
    if reachable:
        try:
            broker = kafka_checks.broker_security(settings)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
    judged = judge_kafka_security(settings, broker)
    details = {
        "protocol": settings.kafka_security_protocol,
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "principal": settings.kafka_sasl_username,
        "broker": None if broker is None else asdict(broker),
        "broker_error": error,
    }
    report.add("kafka", "security", judged, details)


def _lag_json(lag: PartitionLag) -> dict[str, Any]:
    return {
        "partition": lag.partition,
        "committed": lag.committed,
        "high": lag.high,
        "lag": lag.lag,
    }


# ---- output --------------------------------------------------------------------------------

STYLES = {Verdict.OK: "green", Verdict.INFO: "cyan", Verdict.WARN: "yellow", Verdict.FAIL: "red"}
DETAIL_TABLES = ("status changes per restaurant (7 d)", "slowest statements", "table sizes")


def render(report: Report, console: Console) -> None:
    table = Table(title=f"orderstatus doctor (window {report.window})", title_justify="left")
    table.add_column("section", style="dim")
    table.add_column("check")
    table.add_column("verdict")
    table.add_column("summary", overflow="fold")
    for check in report.checks:
        style = STYLES[check.verdict]
        table.add_row(
            check.section, check.name, f"[{style}]{check.verdict.value}[/]", check.summary
        )
    console.print(table)
    for check in report.checks:
        rows = check.details
        if check.name in DETAIL_TABLES and isinstance(rows, list) and rows:
            detail = Table(title=check.name, title_justify="left", show_edge=False)
            for column in rows[0]:
                detail.add_column(str(column), overflow="fold")
            for row in rows:
                detail.add_row(*(str(value) for value in row.values()))
            console.print(detail)
    style = STYLES[report.verdict]
    console.print(f"overall: [{style}]{report.verdict.value}[/] (exit {report.exit_code})")


def as_json_text(report: Report) -> str:
    return json.dumps(report.as_json(), indent=2, default=str)


def main(settings: Settings, *, window: str, lag_sample_s: float, as_json: bool) -> int:
    report = run_doctor(settings, window=window, lag_sample_s=lag_sample_s)
    if as_json:
        print(as_json_text(report))
    else:
        render(report, Console())
    return report.exit_code
