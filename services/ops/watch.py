"""`orderstatus watch`: throughput, the four SLIs and the consumer lag in the terminal, refreshed
every second, for when Grafana is not at hand. Reads Prometheus when it answers, else the worker's
inbox in PostgreSQL; the lag always comes straight from Kafka."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from rich.columns import Columns
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from services.adapters.settings import Settings
from services.observability import slis
from services.observability.kafka_lag import PartitionLag
from services.ops import kafka_checks, queries
from services.ops.prometheus import Prometheus, PrometheusError

RATE_WINDOW = "1m"
SLI_WINDOW = "5m"


@dataclass
class Frame:
    at: datetime
    source: str
    requests_per_s: dict[str, float] = field(default_factory=dict)
    """By status code (Prometheus) or empty (PostgreSQL)."""
    commands_per_s: dict[str, float] = field(default_factory=dict)
    sli_values: dict[str, float | None] = field(default_factory=dict)
    lag: list[PartitionLag] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def gather(settings: Settings, prometheus: Prometheus) -> Frame:
    frame = Frame(datetime.now(UTC), "prometheus")
    try:
        _from_prometheus(frame, prometheus)
    except PrometheusError as exc:
        frame.problems.append(f"Prometheus: {exc}")
        frame.source = "postgres"
        try:
            _from_postgres(frame, settings)
        except psycopg.Error as db_exc:
            frame.problems.append(f"PostgreSQL: {type(db_exc).__name__}: {db_exc}")
    try:
        frame.lag = kafka_checks.worker_lag(settings)
    except Exception as exc:
        frame.problems.append(f"Kafka: {type(exc).__name__}: {exc}")
    return frame


def _from_prometheus(frame: Frame, prometheus: Prometheus) -> None:
    by_status = prometheus.query(
        f"sum by (status) (rate({slis.REQUESTS}{{{slis.API_ROUTES}}}[{RATE_WINDOW}]))"
    )
    frame.requests_per_s = {s.labels.get("status", "?"): s.value for s in by_status}
    by_outcome = prometheus.query(f"sum by (outcome) (rate({slis.WORKER_COMMANDS}[{RATE_WINDOW}]))")
    frame.commands_per_s = {s.labels.get("outcome", "?"): s.value for s in by_outcome}
    for sli in slis.SLIS:
        frame.sli_values[sli.key] = prometheus.scalar(sli.expr(SLI_WINDOW))


def _from_postgres(frame: Frame, settings: Settings) -> None:
    with psycopg.connect(settings.admin_url, connect_timeout=3) as conn:
        recent = conn.execute(queries.OUTCOMES_SINCE, {"seconds": 60}).fetchall()
        window = conn.execute(queries.OUTCOMES_SINCE, {"seconds": 300}).fetchall()
    for _kind, outcome, count in recent:
        frame.commands_per_s[outcome] = frame.commands_per_s.get(outcome, 0.0) + count / 60
    changes = {outcome: n for kind, outcome, n in window if kind == "change_status"}
    total = sum(changes.values())
    for sli, outcome in ((slis.CONFLICT, "conflict"), (slis.DENIAL, "forbidden")):
        frame.sli_values[sli.key] = changes.get(outcome, 0) / total if total else None


def render(frame: Frame) -> Panel:
    throughput = Table(title=f"throughput (per second, last {RATE_WINDOW})", title_justify="left")
    throughput.add_column("what")
    throughput.add_column("rate", justify="right")
    total = sum(frame.requests_per_s.values())
    if frame.source == "prometheus":
        throughput.add_row("HTTP requests", f"{total:.2f}")
        for status, rate in sorted(frame.requests_per_s.items()):
            throughput.add_row(f"  {status}", f"{rate:.2f}")
    throughput.add_row("commands", f"{sum(frame.commands_per_s.values()):.2f}")
    for outcome, rate in sorted(frame.commands_per_s.items()):
        if rate:
            throughput.add_row(f"  {outcome}", f"{rate:.2f}")

    objectives = Table(title=f"SLIs (last {SLI_WINDOW})", title_justify="left")
    objectives.add_column("SLI")
    objectives.add_column("value", justify="right")
    objectives.add_column("objective", justify="right")
    for sli in slis.SLIS:
        value = frame.sli_values.get(sli.key)
        if value is None or value != value:
            shown = "[dim]no data[/]"
        else:
            shown = f"[{'green' if sli.met(value) else 'red'}]{sli.describe(value)}[/]"
        objectives.add_row(sli.title, shown, sli.objective_text())

    lag = Table(title="consumer lag (commands waiting)", title_justify="left")
    lag.add_column("partition", justify="right")
    lag.add_column("lag", justify="right")
    for partition in frame.lag:
        style = "yellow" if partition.lag else "green"
        lag.add_row(str(partition.partition), f"[{style}]{partition.lag}[/]")
    lag.add_row("total", str(sum(p.lag for p in frame.lag)))

    parts: list[Columns | str] = [Columns([throughput, objectives, lag])]
    parts.extend(f"[yellow]{problem}[/]" for problem in frame.problems)
    return Panel(
        Group(*parts),
        title=f"Order Status  {frame.at:%H:%M:%S} UTC  (source: {frame.source})",
        title_align="left",
    )


def run_watch(settings: Settings, *, once: bool, interval: float = 1.0) -> int:
    prometheus = Prometheus(settings.prometheus_url, timeout=2.0)
    console = Console()
    if once:
        console.print(render(gather(settings, prometheus)))
        return 0
    with Live(render(gather(settings, prometheus)), console=console, screen=False) as live:
        try:
            while True:
                started = time.monotonic()
                live.update(render(gather(settings, prometheus)))
                time.sleep(max(interval - (time.monotonic() - started), 0.0))
        except KeyboardInterrupt:
            pass
    return 0
