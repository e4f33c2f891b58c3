"""`make bench`: the project against the direct-to-PostgreSQL baseline (bench/baseline.py), on this
machine, each started here on free ports against the running Kafka and PostgreSQL (an isolated
database and topic prefix, removed afterwards). Prints the tables and writes docs/performance.md.

1. the load generator's own ceiling (services/loadgen.py against bench/trivial.py);
2. an open-loop rate sweep of both systems (each request a distinct pending order moved to
   accepted) and each one's knee: the highest rate with p95 <= 300 ms and >= 99.9 % non-5xx;
   the latency at 1,000/s and at the project's knee;
3. closed loop with wrk: idle (1 connection), 32 connections, and hot-order contention (64
   connections on 10 orders with expected_version: answered = 200 + 409);
4. worker backlog drain: commands preloaded in Kafka, drained by one worker with every guarantee
   on, beside the same SQL (the worker's apply_batch) run straight on PostgreSQL in batches;
5. peak RSS (VmHWM) of the API, the worker and the baseline;
6. scaling (tests/bench/scaling.py): drain with 1, 2 and 3 workers, PATCH with 1, 2 and 4 API
   processes, the CPU of every process at each step and the CPU-ms per command.

Every phase is bounded in time; `--quick` runs short steps for development, `--only` a subset."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.wrk import Mode, run_wrk, write_orders
from services.adapters.settings import Settings
from services.loadgen import Mix, Tenant, run_load, seed
from tests.bench.scaling import ScalingResults, phase_scaling
from tests.bench.scaling_report import report_lines, write_figures
from tests.bench.systems import BaselineProcess, peak_rss_mb
from tests.bench.tables import table
from tests.stack import ServiceProcess, free_port, isolated_settings
from tests.topics import change_command, command_record, create_command, produce

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "performance.md"
RUN_LINES = ("- date:", "- machine:", "- command:")
"""The lines of the report that say which run it was (docs/scaling.md repeats them)."""
NOTES_BEGIN, NOTES_END = "<!-- notes: kept by make bench -->", "<!-- /notes -->"
KNEE_P95_MS = 300.0
KNEE_NON_5XX = 0.999
STEPS = ("accepted", "preparing", "ready", "completed")
PHASES = ("ceiling", "closed", "sweep", "hot", "profile", "drain", "scaling")
SETTLE_S = 5.0
BUDGET_S = 14 * 60
"""make bench stops starting phases when less than their share of this is left."""
API_PROCESSES = 1
"""The project's API as make bench runs it. Two processes (each reading its own results partition,
API_RESULTS_PARTITION=auto) did no better on this 2-core machine, where the worker, Kafka and
PostgreSQL share the cores: back to back on a quiet machine (2 Dec 2026), two processes gave a knee
of 100/s, 208 PATCH/s at 32 connections and 559 answered/s on hot orders; one process 250/s, 256/s
and 608/s (docs/performance.md, notes). `--api-processes N` runs N."""
API_LIMIT_CONCURRENCY = 1024
"""Per API process: above the load generator's 512 connections, so the knee is where latency
gives out, not where uvicorn's shedding (the default 200, a resource bound) starts answering 503."""


@dataclass
class Plan:
    step_s: float
    rates: list[float]
    ceiling_rates: list[float]
    wrk_s: float
    drain_commands: int
    restaurants: int = 4

    @classmethod
    def of(cls, quick: bool) -> Plan:
        if quick:
            return cls(3, [100, 250, 500, 1000, 2000], [2000, 6000], 4, 5_000)
        return cls(
            8,
            [100, 250, 500, 750, 1000, 1500, 2000, 2500, 3000, 4000],
            [2000, 4000, 6000, 9000],
            10,
            30_000,
        )


@dataclass
class Results:
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    ceiling: list[dict[str, Any]] = field(default_factory=list)
    sweep: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    closed: dict[str, dict[str, Any]] = field(default_factory=dict)
    drain: dict[str, Any] = field(default_factory=dict)
    rss: dict[str, float] = field(default_factory=dict)
    profile: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    load_before: str = ""
    seconds: float = 0.0
    api: dict[str, Any] = field(default_factory=dict)
    scaling: ScalingResults | None = None


def say(text: str) -> None:
    print(text, flush=True)


# ---- systems ---------------------------------------------------------------------------------


@dataclass
class Systems:
    settings: Settings
    urls: dict[str, str]
    processes: dict[str, ServiceProcess]


def api_configuration(processes: int) -> dict[str, Any]:
    """The API settings make bench runs the project with."""
    return {
        "api_processes": processes,
        "api_results_partition": "auto" if processes > 1 else "all",
        "api_limit_concurrency": API_LIMIT_CONCURRENCY,
    }


@contextmanager
def systems(base: Settings, log_dir: Path, api_processes: int = API_PROCESSES) -> Iterator[Systems]:
    """The project's worker and API, and the baseline, on one isolated database."""
    with isolated_settings(base) as settings:
        worker = ServiceProcess("worker", settings, log_dir, worker_metrics_port=free_port())
        api = ServiceProcess(
            "api", settings, log_dir, log_level="WARNING", **api_configuration(api_processes)
        )
        baseline = BaselineProcess(settings, log_dir)
        started: list[ServiceProcess] = []
        try:
            for process in (worker, api, baseline):
                process.start()
                started.append(process)
            urls = {"project": f"http://127.0.0.1:{settings.api_port}", "baseline": baseline.url}
            yield Systems(settings, urls, {"api": api, "worker": worker, "baseline": baseline})
        finally:
            for process in reversed(started):
                process.terminate()


def fresh_tenants(settings: Settings, restaurants: int, orders: int) -> list[Tenant]:
    return seed(settings, restaurants, max(1, orders // restaurants + 1))


# ---- phases ----------------------------------------------------------------------------------


def knee_ok(step: dict[str, Any]) -> bool:
    return bool(step["p95_ms"] <= KNEE_P95_MS and step["non_5xx_share"] >= KNEE_NON_5XX)


def knee_of(steps: list[dict[str, Any]]) -> float | None:
    good = [s["rate"] for s in steps if knee_ok(s)]
    return max(good) if good else None


def open_loop(
    sys_: Systems, system: str, rate: float, seconds: float, plan: Plan
) -> dict[str, Any]:
    tenants = fresh_tenants(sys_.settings, plan.restaurants, int(rate * seconds))
    report = run_load(sys_.urls[system], tenants, rate=rate, seconds=seconds, connections=512)
    return report.summary()


def phase_ceiling(plan: Plan, log_dir: Path, results: Results) -> None:
    say("load generator ceiling (open loop against bench/trivial.py, a fixed 200)")
    port = free_port()
    trivial = subprocess.Popen(
        [sys.executable, "-m", "bench.trivial", "--port", str(port)],
        stdout=(log_dir / "trivial.log").open("ab"),
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    try:
        time.sleep(1.0)
        fake = [Tenant(uuid.uuid4(), "x", "token", [uuid.uuid4() for _ in range(2_000)])] * 2
        for rate in plan.ceiling_rates:
            mix = Mix(skew=1.0, stale=0.1, cross_tenant=0.1)
            summary = run_load(
                f"http://127.0.0.1:{port}", fake, rate=rate, seconds=plan.step_s / 2, mix=mix
            ).summary()
            results.ceiling.append(summary)
            say(f"  {row_of(summary)}")
    finally:
        trivial.terminate()
        trivial.wait(10)


def phase_sweep(sys_: Systems, plan: Plan, results: Results, budget: Budget) -> None:
    for system in ("baseline", "project"):
        say(f"rate sweep, {system} (open loop, {plan.step_s:g} s per step)")
        steps: list[dict[str, Any]] = []
        failures = 0
        for rate in plan.rates:
            # A step: its seconds, the drain of a late tail, seeding; the rest waits its turn.
            if not budget.allows(plan.step_s + 20 + 240, f"sweep {system} {rate:g}/s", results):
                break
            summary = open_loop(sys_, system, rate, plan.step_s, plan)
            steps.append(summary)
            say(f"  {row_of(summary)}")
            failures = 0 if knee_ok(summary) else failures + 1
            if failures:
                time.sleep(SETTLE_S)  # let the backlog of an overloaded step clear first
            if failures >= 2:
                break
        results.sweep[system] = steps
    knee = knee_of(results.sweep.get("project", []))
    for system in ("baseline", "project"):
        done = {s["rate"] for s in results.sweep.get(system, [])}
        for rate in {1000.0, *([knee] if knee else [])} - done:
            if not budget.allows(plan.step_s + 20 + 240, f"{system} at {rate:g}/s", results):
                continue
            say(f"  {system} at {rate:g}/s (not reached by the sweep)")
            results.extra[f"{system}@{rate:g}"] = open_loop(sys_, system, rate, plan.step_s, plan)


def phase_closed(sys_: Systems, plan: Plan, results: Results, work: Path, hot: bool) -> None:
    runs = [("hot", 64)] if hot else [("idle", 1), ("closed32", 32)]
    for system in ("baseline", "project"):
        for name, connections in runs:
            if name == "hot":
                tenants = seed(sys_.settings, 1, 10)
                orders = write_orders(work / f"hot-{system}.txt", tenants)
                mode: Mode = "hot"
            else:
                expected = int(4_000 * plan.wrk_s) if connections > 1 else int(400 * plan.wrk_s)
                tenants = fresh_tenants(sys_.settings, plan.restaurants, expected)
                orders = write_orders(work / f"{name}-{system}.txt", tenants)
                mode = "fresh"
            result = run_wrk(
                sys_.urls[system], orders, mode=mode, connections=connections, seconds=plan.wrk_s
            )
            summary = result.summary() | {"answered_per_s": result.rate_of(200, 409)}
            results.closed[f"{name}/{system}"] = summary
            say(f"  wrk {name} {system}: {row_of(summary)}")


def phase_profile(sys_: Systems, plan: Plan, results: Results, work: Path) -> None:
    say(f"profile: py-spy on the API and the worker under wrk load (2 x {plan.wrk_s:g} s)")
    from tests.bench.profile import profile

    results.profile = profile(
        sys_.settings,
        sys_.processes["api"],
        sys_.processes["worker"],
        work,
        seconds=plan.wrk_s,
    )


def preload(settings: Settings, commands: int) -> list[Any]:
    orders = commands // (1 + len(STEPS))
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
    sequence: list[Any] = []
    for _ in range(orders):
        create = create_command(uuid.uuid4())
        sequence.append(create)
        records.append(tuple(command_record(create)))  # type: ignore[arg-type]
        for step in STEPS:
            change = change_command(create.order_id, step)
            sequence.append(change)
            records.append(tuple(command_record(change)))  # type: ignore[arg-type]
    produce(settings, settings.topics.commands, records)
    return sequence


def phase_drain(
    base: Settings, log_dir: Path, plan: Plan, results: Results, budget: Budget
) -> None:
    say(f"worker backlog drain ({plan.drain_commands} commands preloaded in Kafka)")
    with isolated_settings(base) as settings:
        total = len(preload(settings, plan.drain_commands))
        worker = ServiceProcess("worker", settings, log_dir, worker_metrics_port=free_port())
        started = time.monotonic()
        worker.start(wait=False)
        done, first_done, first_at = 0, 0, 0.0
        try:
            with psycopg.connect(settings.admin_url, autocommit=True) as conn:
                deadline = started + min(300, max(30, budget.left() - 60))
                while done < total and time.monotonic() < deadline:
                    time.sleep(0.05)
                    row = conn.execute("SELECT count(*) FROM command_outcomes").fetchone()
                    done = int(row[0]) if row else 0
                    if done and not first_at:
                        first_done, first_at = done, time.monotonic()
            ended = time.monotonic()
            elapsed = ended - started
            rss = peak_rss_mb(worker)
        finally:
            worker.terminate()
    # From the first outcome on: the worker's start-up and group join are not the drain.
    draining = ended - first_at if first_at else 0.0
    results.drain["worker"] = {
        "commands": done,
        "of": total,
        "seconds_from_start": round(elapsed, 2),
        "seconds_from_first_outcome": round(draining, 2),
        "commands_per_s": round((done - first_done) / draining, 1) if draining else 0.0,
        "worker_peak_rss_mb": rss,
    }
    say(f"  worker, guarantees on: {results.drain['worker']}")
    results.drain["raw_sql"] = raw_sql_limit(base, plan, max(20, min(120, budget.left() - 20)))
    say(f"  the worker's SQL straight on PostgreSQL: {results.drain['raw_sql']}")


Applier = Callable[[list[Any], datetime], None]


@contextmanager
def worker_batch_applier(url: str) -> Iterator[Applier]:
    """The worker's own batch of database work (service.apply_batch over its unit of work): a
    function applying (commands, now) as one batch. Its connection is closed afterwards (the owner
    cannot drop a database the app role is in)."""
    from services.status_worker import service
    from services.status_worker.batch import Incoming
    from services.status_worker.db import WorkerDatabase

    database = WorkerDatabase(url)

    def apply(commands: list[Any], now: datetime) -> None:
        items = [Incoming(c, 0, n) for n, c in enumerate(commands)]
        service.apply_batch(database.unit_of_work(), items, now, isolate=False)

    try:
        yield apply
    finally:
        database.reset()


def raw_sql_limit(base: Settings, plan: Plan, seconds: float) -> dict[str, Any]:
    """The physical limit of the worker's database work: its own batch application, in batches
    of WORKER_BATCH_MAX on one connection, with no Kafka at all; stops after `seconds`."""
    with isolated_settings(base) as settings, worker_batch_applier(settings.database_url) as apply:
        commands: list[Any] = []
        for _ in range(plan.drain_commands // (1 + len(STEPS))):
            create = create_command(uuid.uuid4())
            commands += [create, *(change_command(create.order_id, s) for s in STEPS)]
        size = settings.worker_batch_max
        applied = 0
        started = time.monotonic()
        for first in range(0, len(commands), size):
            if time.monotonic() - started > seconds:
                break
            batch = commands[first : first + size]
            apply(batch, datetime.now(UTC))
            applied += len(batch)
        elapsed = time.monotonic() - started
    return {
        "commands": applied,
        "batch": size,
        "seconds": round(elapsed, 2),
        "commands_per_s": round(applied / elapsed, 1),
    }


# ---- output ----------------------------------------------------------------------------------


def row_of(s: dict[str, Any]) -> str:
    rate = f"{s['rate']:g}/s -> " if "rate" in s else ""
    return (
        f"{rate}{s.get('answered_per_s', s.get('requests_per_s'))}/s answered, p50 {s['p50_ms']}"
        f" p95 {s['p95_ms']} p99 {s['p99_ms']} max {s['max_ms']} ms, {s['statuses']}"
    )


def per_s(rate: float | None) -> str:
    return f"{rate:g}/s" if rate else "none (no rate within both limits)"


def step_row(system: str, s: dict[str, Any]) -> list[Any]:
    ok = "yes" if knee_ok(s) else "no"
    return [
        system,
        f"{s['rate']:g}",
        s["answered_per_s"],
        s["p50_ms"],
        s["p95_ms"],
        s["p99_ms"],
        s["max_ms"],
        f"{100 * s['non_5xx_share']:.2f} %",
        s["statuses"],
        ok,
    ]


def at_rate(results: Results, system: str, rate: float | None) -> dict[str, Any] | None:
    if rate is None:
        return None
    for step in results.sweep.get(system, []):
        if step["rate"] == rate:
            return step
    return results.extra.get(f"{system}@{rate:g}")


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def machine(results: Results) -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return (
        f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), {mem_kb // 1024 // 1024} GiB, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}; "
        f"load average (1/5/15 min) {results.load_before} at the start, {load_average()} at "
        "the end"
    )


def report(results: Results, command: str) -> list[str]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    lines = [
        "# Performance",
        "",
        "Figures of one `make bench` run (tests/bench/run.py): the project against the "
        "direct-to-PostgreSQL baseline (bench/baseline.py: one PostgreSQL transaction per PATCH, "
        "SELECT ... FOR UPDATE as the caller, the same decision and tenancy rule), all on one "
        "machine with Kafka, PostgreSQL and the load generator. Every request of the sweep and "
        "of the closed-loop runs is a distinct pending order moved to accepted (an applied change).",
        "",
        f"- date: {results.started:%Y-%m-%d %H:%M} UTC, {results.seconds:.0f} s; commit {commit}",
        f"- machine: {machine(results)}",
        f"- command: `{command}`",
        "- the project as run: "
        + ", ".join(f"{k.upper()}={v}" for k, v in results.api.items())
        + " (tests/bench/run.py, API_PROCESSES and API_LIMIT_CONCURRENCY say why)",
        "",
    ]
    if results.ceiling:
        lines += [
            "## Load generator ceiling",
            "",
            "`orderstatus load` (services/loadgen.py: open loop, latency from the intended send "
            "time) against bench/trivial.py, a server answering a fixed 200; Zipf skew 1.0, 10 % "
            "stale, 10 % cross-tenant (request building included).",
            "",
            *table(
                [
                    "rate/s",
                    "answered/s",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "send lag max ms",
                    "CPU µs/req",
                ],
                [
                    [
                        f"{s['rate']:g}",
                        s["answered_per_s"],
                        s["p50_ms"],
                        s["p95_ms"],
                        s["p99_ms"],
                        s["max_send_lag_ms"],
                        s["generator_cpu_us_per_request"],
                    ]
                    for s in results.ceiling
                ],
            ),
            "",
        ]
    if results.sweep:
        knees = {system: knee_of(steps) for system, steps in results.sweep.items()}
        ours, theirs = knees.get("project"), knees.get("baseline")
        ratio = f"{ours / theirs:.2f}x" if ours and theirs else "n/a"
        lines += [
            "## Rate sweep (open loop)",
            "",
            f"Knee: the highest rate with p95 <= {KNEE_P95_MS:g} ms and >= 99.9 % non-5xx "
            "answers (unanswered requests count against it).",
            "",
            *table(
                [
                    "system",
                    "rate/s",
                    "answered/s",
                    "p50",
                    "p95",
                    "p99",
                    "max ms",
                    "non-5xx",
                    "statuses",
                    "within",
                ],
                [step_row(sys_, s) for sys_, steps in results.sweep.items() for s in steps],
            ),
            "",
            f"- knee: baseline **{per_s(theirs)}**, project **{per_s(ours)}** "
            f"(project / baseline: {ratio})",
        ]
        for label, rate in (("1,000/s", 1000.0), ("the project's knee", knees.get("project"))):
            cells = []
            for system in ("baseline", "project"):
                s = at_rate(results, system, rate)
                if s:
                    cells.append(
                        f"{system} p50 {s['p50_ms']} / p95 {s['p95_ms']} / p99 {s['p99_ms']} ms"
                    )
            if cells:
                lines.append(f"- at {label}: " + "; ".join(cells))
        lines.append("")
    if results.closed:
        rows = []
        for key, s in results.closed.items():
            name, system = key.split("/")
            rows.append(
                [
                    name,
                    system,
                    s["connections"],
                    s["requests_per_s"],
                    s["answered_per_s"],
                    s["p50_ms"],
                    s["p95_ms"],
                    s["p99_ms"],
                    s["statuses"],
                ]
            )
        lines += [
            "## Closed loop (wrk)",
            "",
            "`idle`: 1 connection; `closed32`: 32 connections; `hot`: 64 connections on 10 "
            "orders, each request the next status with the version this wrk thread last saw "
            "(most are stale: 409). Answered = 200 + 409 per second.",
            "",
            *table(
                [
                    "run",
                    "system",
                    "conns",
                    "req/s",
                    "answered/s",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "statuses",
                ],
                rows,
            ),
            "",
        ]
        hot = {k.split("/")[1]: v for k, v in results.closed.items() if k.startswith("hot/")}
        if hot.get("baseline") and hot.get("project") and hot["baseline"]["answered_per_s"]:
            factor = hot["project"]["answered_per_s"] / hot["baseline"]["answered_per_s"]
            lines += [f"- hot-order contention, project / baseline answered/s: {factor:.2f}x", ""]
    if results.drain:
        worker, raw = results.drain.get("worker", {}), results.drain.get("raw_sql", {})
        ratio = (
            f"{worker['commands_per_s'] / raw['commands_per_s']:.2f}"
            if worker.get("commands_per_s") and raw.get("commands_per_s")
            else "n/a"
        )
        lines += [
            "## Worker backlog drain",
            "",
            "Commands (a create and four changes per order) preloaded in Kafka, drained by one "
            "worker with every guarantee on (inbox, Kafka transactions, committed-offset checks), "
            "timed from its first outcome (start-up and group join excluded). Beside it, the worker's own "
            "database work (apply_batch) run straight on PostgreSQL in batches of "
            "WORKER_BATCH_MAX, no Kafka: the physical limit of that SQL on this machine.",
            "",
            f"- worker: {worker}",
            f"- raw SQL: {raw}",
            f"- worker / raw SQL: {ratio}",
            "",
        ]
    if results.scaling:
        lines += report_lines(results.scaling)
    if results.skipped:
        lines += ["Skipped for the time budget: " + ", ".join(results.skipped), ""]
    if results.rss:
        lines += [
            "## Peak memory (VmHWM of the largest process of each) after the load phases",
            "",
            *(f"- {name}: {mb} MB" for name, mb in results.rss.items()),
            "",
        ]
    if results.profile:
        lines += [*results.profile, ""]
    return lines


def as_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def write_doc(lines: list[str]) -> None:
    notes = f"{NOTES_BEGIN}\n## Notes and profile findings\n\n(none yet)\n{NOTES_END}"
    if DOC.exists():
        old = DOC.read_text()
        if NOTES_BEGIN in old and NOTES_END in old:
            start = old.index(NOTES_BEGIN)
            notes = old[start : old.index(NOTES_END) + len(NOTES_END)]
    DOC.write_text("\n".join([*lines, notes, ""]))


class Budget:
    """make bench's 15 minutes: a phase starts only if its worst case still fits."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def allows(self, seconds: float, what: str, results: Results) -> bool:
        if self.left() >= seconds:
            return True
        results.skipped.append(what)
        say(f"  skipped (time budget): {what}")
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short steps, for development")
    parser.add_argument("--only", default=",".join(PHASES), help=f"subset of {','.join(PHASES)}")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/performance.md")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--api-processes", type=int, default=API_PROCESSES, help="processes of the project's API"
    )
    args = parser.parse_args()
    phases = set(args.only.split(","))
    plan = Plan.of(args.quick)
    base = Settings()
    log_dir = Path(tempfile.mkdtemp(prefix="orderstatus-bench-"))
    results = Results(load_before=load_average(), api=api_configuration(args.api_processes))
    budget = Budget(BUDGET_S)
    started = time.monotonic()
    if "ceiling" in phases:
        phase_ceiling(plan, log_dir, results)
    if phases & {"sweep", "closed", "hot", "profile"}:
        with systems(base, log_dir, args.api_processes) as sys_:
            steps: list[tuple[str, float, Callable[[], None]]] = [
                (
                    "closed",
                    8 * plan.wrk_s,
                    lambda: phase_closed(sys_, plan, results, log_dir, hot=False),
                ),
                ("sweep", 60, lambda: phase_sweep(sys_, plan, results, budget)),
                (
                    "hot",
                    4 * plan.wrk_s,
                    lambda: phase_closed(sys_, plan, results, log_dir, hot=True),
                ),
                (
                    "profile",
                    4 * plan.wrk_s + 60,
                    lambda: phase_profile(sys_, plan, results, log_dir),
                ),
            ]
            for name, worst_s, run in steps:
                # The drain needs its share too: keep 4 minutes for it.
                if name in phases and budget.allows(worst_s + 240, name, results):
                    run()
            results.rss = {name: peak_rss_mb(p) for name, p in sys_.processes.items()}
    if "drain" in phases and budget.allows(60, "drain", results):
        phase_drain(base, log_dir, plan, results, budget)
        results.rss["worker (drain)"] = results.drain["worker"]["worker_peak_rss_mb"]
    if "scaling" in phases and budget.allows(120, "scaling", results):
        results.scaling = phase_scaling(base, log_dir, args.quick, api_configuration, budget.left)
    results.seconds = time.monotonic() - started
    command = "make bench" + (f" BENCH_ARGS='{' '.join(sys.argv[1:])}'" if sys.argv[1:] else "")
    lines = report(results, command)
    say("")
    say("\n".join(lines))
    if not args.no_doc:
        write_doc(lines)
        say(f"wrote {DOC}")
        if results.scaling and write_figures(
            results.scaling, [x for x in lines if x.startswith(RUN_LINES)]
        ):
            say("wrote docs/scaling.md (its figures block)")
    if args.json:
        args.json.write_text(json.dumps(results.__dict__, default=as_json, indent=2))
    say(f"logs: {log_dir}")


if __name__ == "__main__":
    main()
