"""A real Prometheus for a chaos run: it scrapes every process of the run with the project's rule
files loaded, and at the end the alert timeline is read back from it for the verdict
(tests/chaos/alert_verdicts.py).

Scrapes and rule evaluations every SCRAPE_S (short, so the timeline is sharp); the rules' own
`for:` durations are the project's. Targets come from file_sd files rewritten every second from
the fleet: the API and worker slots that run (a worker removed on purpose is no target, as a
scaled-in replica is none), every broker always (a broker down is a target down), and whatever a
drill holds down on purpose (`hold`). Job names are the ones the rules use."""

from __future__ import annotations

import contextlib
import json
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx
from rich.console import Console
from rich.table import Table

from tests.chaos.alert_verdicts import (
    AlertEpisode,
    AlertVerdict,
    Fault,
    episodes_from_alerts,
    judge,
    verdict_json,
)
from tests.observability_stack import RULE_FILES, running_prometheus, wait_for

SCRAPE_S = 2.0
SYNC_S = 1.0
QUERY_STEP_S = 1.0
MAX_POINTS = 10_000
"""Below Prometheus's 11,000 points per series of one query_range."""
JOBS = {"api": "command-api", "worker": "status-worker", "broker": "kafka"}
"""Process name prefix ("api-1", "worker-2", "broker-3") -> the job its alert rules name."""


class ScrapedFleet(Protocol):
    """What the Prometheus needs of tests/chaos/infra.Fleet."""

    @property
    def apis(self) -> Mapping[str, object]: ...

    @property
    def workers(self) -> Mapping[str, object]: ...

    def metrics_ports(self) -> dict[str, int]: ...


class Round(Protocol):
    """What the timeline needs of a tests/chaos/actions.RoundRecord."""

    @property
    def kind(self) -> str: ...

    started_at: float
    back_at: float
    detail: str


def prometheus_config(targets_dir: Path) -> dict[str, Any]:
    interval = f"{SCRAPE_S:g}s"
    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": f"{round(SCRAPE_S * 750)}ms",
            "evaluation_interval": interval,
        },
        "rule_files": [str(path) for path in RULE_FILES],
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": "/metrics",
                "file_sd_configs": [{"files": [str(targets_dir / f"{job}.json")]}],
            }
            for job in JOBS.values()
        ],
    }


def file_sd(ports: Mapping[str, int]) -> dict[str, list[dict[str, Any]]]:
    """file_sd contents per job: one target group per process, labelled with its name."""
    groups: dict[str, list[dict[str, Any]]] = {job: [] for job in JOBS.values()}
    for name, port in sorted(ports.items()):
        job = JOBS[name.split("-", 1)[0]]
        groups[job].append({"targets": [f"127.0.0.1:{port}"], "labels": {"process": name}})
    return groups


def fleet_targets(fleet: ScrapedFleet, brokers: Mapping[str, int]) -> dict[str, int]:
    """The processes that ought to be scraped now: the running API and worker slots, every broker."""
    ports = fleet.metrics_ports()
    running = [f"api-{slot}" for slot in list(fleet.apis)]
    running += [f"worker-{slot}" for slot in list(fleet.workers)]
    return {**{name: ports[name] for name in running if name in ports}, **brokers}


class ChaosPrometheus:
    """The run's Prometheus (in `workdir`), its targets kept in step with `targets()`."""

    def __init__(self, workdir: Path, targets: Callable[[], Mapping[str, int]]) -> None:
        self.workdir = workdir
        self.targets_dir = workdir / "targets"
        self.url = ""
        self._targets = targets
        self._held: dict[str, int] = {}
        self._written: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stack = contextlib.ExitStack()

    def start(self) -> None:
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        self.sync()
        self.url = self._stack.enter_context(
            running_prometheus(self.workdir, prometheus_config(self.targets_dir))
        )
        syncer = threading.Thread(target=self._sync_loop, name="prometheus-targets", daemon=True)
        syncer.start()
        self._stack.callback(syncer.join, 5)
        self._stack.callback(self._stop.set)

    def stop(self) -> None:
        self._stack.close()

    def hold(self, name: str, port: int) -> None:
        """Keeps `name` a target while a drill keeps it down (its scrapes fail: up == 0)."""
        with self._lock:
            self._held[name] = port
        self.sync()

    def release(self, name: str) -> None:
        with self._lock:
            self._held.pop(name, None)
        self.sync()

    def sync(self) -> None:
        with self._lock:
            groups = file_sd({**self._targets(), **self._held})
            for job, group in groups.items():
                if self._written.get(job) != group:
                    path = self.targets_dir / f"{job}.json"
                    path.with_suffix(".tmp").write_text(json.dumps(group))
                    path.with_suffix(".tmp").replace(path)  # atomic: never read half-written
                    self._written[job] = group

    def _sync_loop(self) -> None:
        while not self._stop.wait(SYNC_S):
            with contextlib.suppress(Exception):  # a fleet mid-change: next time
                self.sync()

    def _get(self, path: str, **params: str | float) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=15)
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus {path} {params}: {body}")
        return body["data"]

    def active_alerts(self) -> list[dict[str, Any]]:
        """/api/v1/alerts: every pending and firing alert now."""
        alerts: list[dict[str, Any]] = self._get("/api/v1/alerts")["alerts"]
        return alerts

    def firing(self, name: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.active_alerts()
            if a["labels"]["alertname"] == name and a["state"] == "firing"
        ]

    def wait_firing(self, name: str, timeout_s: float) -> bool:
        """Waits (bounded) until `name` fires; False when it did not."""
        try:
            wait_for(lambda: self.firing(name), timeout_s, f"{name} firing", every=1.0)
        except TimeoutError:
            return False
        return True

    def wait_cleared(self, name: str, timeout_s: float) -> bool:
        """Waits (bounded) until no `name` is pending or firing; False when one still is."""

        def cleared() -> bool:
            return not any(a["labels"]["alertname"] == name for a in self.active_alerts())

        try:
            wait_for(cleared, timeout_s, f"{name} cleared", every=1.0)
        except TimeoutError:
            return False
        return True

    def value(self, expr: str) -> float | None:
        """An instant query's value summed over its series; None: no series."""
        found = self._get("/api/v1/query", query=expr)["result"]
        return sum(float(r["value"][1]) for r in found) if found else None

    def targets_up(self, job: str) -> dict[str, float]:
        """The `up` of each target of `job` now, by its process name."""
        found = self._get("/api/v1/query", query=f'up{{job="{job}"}}')["result"]
        return {
            r["metric"].get("process", r["metric"]["instance"]): float(r["value"][1]) for r in found
        }

    def episodes(self, since: float, until: float) -> list[AlertEpisode]:
        """Every alert episode between `since` and `until` (epoch seconds), from ALERTS."""
        step = max(QUERY_STEP_S, (until - since) / MAX_POINTS)
        data = self._get("/api/v1/query_range", query="ALERTS", start=since, end=until, step=step)
        return episodes_from_alerts(data["result"], step, until)


class AlertWatch:
    """The run's Prometheus and its fault timeline: `start` it once the fleet runs, `judge` after
    the checker (the rounds, then the drills, then the alert timeline read back), `stop` always."""

    def __init__(self, prometheus: ChaosPrometheus) -> None:
        self.prometheus = prometheus
        self.started_at = time.time()
        self.faults: list[Fault] = []
        self._started = False

    @classmethod
    def of_run(cls, run_dir: Path, fleet: ScrapedFleet, brokers: Mapping[str, int]) -> AlertWatch:
        """`brokers`: each broker's metrics port by name ("broker-1"), always scraped."""
        targets = ChaosPrometheus(run_dir / "prometheus", lambda: fleet_targets(fleet, brokers))
        return cls(targets)

    def start(self) -> None:
        self.prometheus.start()
        self._started = True
        self.started_at = time.time()
        # The alerts need a first scrape of every target (a rate needs two samples).
        wait_for(lambda: self.prometheus.targets_up("command-api"), 60, "first scrapes")

    def stop(self) -> None:
        if self._started:
            self.prometheus.stop()
            self._started = False

    def judge(
        self, rounds: Sequence[Round], drills: Callable[[], list[Fault]] | None
    ) -> AlertVerdict:
        """Notes the rounds, runs the drills (None: none), and judges the alert timeline."""
        for r in rounds:
            kind = getattr(r.kind, "value", r.kind)
            self.faults.append(Fault(str(kind), r.started_at, r.back_at, r.detail))
        if drills is not None:
            self.faults.extend(drills())
        # One more evaluation, so an alert that fired at the very end is in the timeline.
        time.sleep(SCRAPE_S)
        episodes = self.prometheus.episodes(self.started_at, time.time())
        return judge(self.faults, episodes)

    def report(self, verdict: AlertVerdict) -> dict[str, Any]:
        return verdict_json(verdict, self.started_at)


def print_alerts(verdict: AlertVerdict, console: Console) -> None:
    """The table per kind of fault, then the pages that never came and the noise."""
    table = Table(title="Alerts per kind of fault", title_justify="left")
    for column in ("fault", "n", "longest s", "alert", "fired", "after s", "cleared after s"):
        table.add_column(column, justify="left" if column in ("fault", "alert") else "right")
    for kind in verdict.kinds:
        rows = kind.alerts or []
        first = True
        for figures in rows:
            cleared = _figure(figures.cleared_after_s)
            if figures.not_cleared:
                cleared += f" ({figures.not_cleared} not)"
            fired = f"{figures.faults}/{kind.faults}"
            if figures.pending_only:
                fired += f" +{figures.pending_only} pending"
            table.add_row(
                kind.kind if first else "",
                str(kind.faults) if first else "",
                f"{kind.longest_s:.1f}" if first else "",
                figures.name,
                fired,
                _figure(figures.fired_after_s),
                cleared,
            )
            first = False
        if first:
            table.add_row(kind.kind, str(kind.faults), f"{kind.longest_s:.1f}", "-", "", "", "")
        for name in kind.already_firing:
            table.add_row("", "", "", f"{name} (already firing)", "", "", "")
    console.print(table)
    for missed in verdict.missed:
        console.print(
            f"[bold red]missed page[/]: {missed.kind} ({missed.seconds:.0f}s) fired none of "
            f"{', '.join(missed.expected)}: {missed.why}",
            highlight=False,
        )
    for episode in verdict.noise:
        console.print(f"[yellow]alert noise[/]: {episode.describe()} with no fault before it")
    for name, why in verdict.ignored:
        console.print(f"[dim]not judged: {name} ({why})[/]")
    outcome = "[bold green]every page owed came[/]" if verdict.passed else "[bold red]FAIL[/]"
    console.print(f"alerts: {outcome} ({verdict.owed} owed, {len(verdict.missed)} missed)")


def _figure(values: Sequence[float]) -> str:
    """median/max, or the one value."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.median(values):.1f}/{max(values):.1f}"
