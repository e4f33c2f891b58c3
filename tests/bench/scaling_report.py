"""make bench's scaling figures as Markdown (tests/bench/scaling.py measures them): the tables of
docs/performance.md's scaling section, the capacity model computed from them, and the figures
block of docs/scaling.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.bench.capacity import HEADER, Costs, capacity, row
from tests.bench.scaling import ScalingPlan, ScalingResults, each_cell
from tests.bench.tables import table

COMPONENTS = ("api", "worker", "kafka", "postgres", "load generator")


def per_command_cells(costs: dict[str, float | None]) -> list[Any]:
    cells = [costs.get(name, "-") if costs.get(name) is not None else "-" for name in COMPONENTS]
    known = [c for c in costs.values() if c is not None]
    return [*cells, round(sum(known), 3) if known else "-"]


def report_lines(results: ScalingResults) -> list[str]:
    lines = ["## Scaling (issue 14)", ""]
    lines += [
        "CPU as % of one core over the measured window (each process of a kind, `+` between "
        "them); postgres = the bench database's backends plus the server's own processes; kafka "
        "= each broker JVM; machine = all cores (of "
        f"{100 * (results.cores or 1)} %); other = the machine's busy time no listed process "
        "accounts for (kernel, other users of the machine). tests/bench/scaling.py says how each "
        "step runs.",
        "",
    ]
    if results.drain:
        lines += [
            "### Worker drain (backlog in one transaction, 6 partitions)",
            "",
            *table(
                [
                    "workers",
                    "outcomes (timed)",
                    "commands/s",
                    "worker CPU %",
                    "kafka %",
                    "postgres %",
                    "machine %",
                    "other %",
                    "saturates",
                ],
                [
                    [
                        s["workers"],
                        f"{s['outcomes']} of {s['of']} ({s.get('measured_commands', 0)})",
                        s["commands_per_s"],
                        each_cell(s.get("cpu_percent", {}).get("worker", [])),
                        each_cell(s.get("cpu_percent", {}).get("kafka", [])),
                        round(sum(s.get("cpu_percent", {}).get("postgres", [])), 1),
                        s.get("machine_percent"),
                        s.get("other_percent"),
                        s.get("saturates", ""),
                    ]
                    for s in results.drain
                ],
            ),
            "",
        ]
    if results.patch:
        lines += [
            "### PATCH throughput (wrk, 32 connections, one worker, every request applied)",
            "",
            *table(
                [
                    "API processes",
                    "applied/s",
                    "p50 ms",
                    "p95 ms",
                    "statuses",
                    "API CPU %",
                    "worker %",
                    "kafka %",
                    "postgres %",
                    "wrk %",
                    "machine %",
                    "other %",
                    "idle % (same processes, no load)",
                    "saturates",
                ],
                [
                    [
                        s["api_processes"],
                        s["applied_per_s"],
                        s["p50_ms"],
                        s["p95_ms"],
                        s["statuses"],
                        each_cell(s["cpu_percent"].get("api", [])),
                        each_cell(s["cpu_percent"].get("worker", [])),
                        each_cell(s["cpu_percent"].get("kafka", [])),
                        round(sum(s["cpu_percent"].get("postgres", [])), 1),
                        each_cell(s["cpu_percent"].get("load generator", [])),
                        s["machine_percent"],
                        s["other_percent"],
                        ", ".join(f"{k} {v:g}" for k, v in s["idle_percent"].items()),
                        s["saturates"],
                    ]
                    for s in results.patch
                ],
            ),
            "",
        ]
    steps = [
        (f"drain, {s['workers']} worker(s)", s["cpu_ms_per_command"], s) for s in results.drain
    ]
    for s in results.patch:
        name = f"PATCH, {s['api_processes']} API process(es)"
        steps += [
            (name, s["cpu_ms_per_command"], s),
            (f"{name}, above idle", s["marginal_cpu_ms_per_command"], s),
        ]
    if steps:
        lines += [
            "### CPU-ms per applied command",
            "",
            *table(
                ["step", *COMPONENTS, "all", "kafka log B", "WAL B"],
                [
                    [
                        name,
                        *per_command_cells(costs),
                        s.get("kafka_log_bytes_per_command", "-"),
                        s.get("wal_bytes_per_command", "-"),
                    ]
                    for name, costs, s in steps
                ],
            ),
            "",
            "Above idle: less what the same processes used with no load for "
            f"{ScalingPlan.idle_s:g} s before the step (per-second costs: consumers' fetch "
            "polling, timers; on a shared machine also the brokers' and the database's work for "
            "others). Bytes per command: the project's topics' log segments on the brokers' disks (every "
            "replica; drain steps only) and PostgreSQL's WAL (the whole server: other databases' "
            "writes included), over the step.",
            "",
        ]
    lines += capacity_lines(results)
    if results.skipped:
        lines += ["Skipped for the time budget: " + ", ".join(results.skipped), ""]
    return lines


# ---- the capacity model ----------------------------------------------------------------------


def model_costs(results: ScalingResults) -> tuple[float, Costs, Costs] | None:
    """Today's load (what one API process and one worker sustained under 32 connections) and the
    per-command costs two ways: of that step (small batches: an upper bound) and of the
    one-worker drain (full batches: the lower bound a busy worker tends to)."""
    one_api = next((s for s in results.patch if s["api_processes"] == 1), None)
    one_worker = next((s for s in results.drain if s["workers"] == 1), None)
    if not one_api or not one_worker or not one_api["applied"] or not one_worker["commands_per_s"]:
        return None
    steady, batched = one_api["marginal_cpu_ms_per_command"], one_worker["cpu_ms_per_command"]
    common = {
        "api_ms": steady["api"],
        "kafka_log_bytes": one_worker["kafka_log_bytes_per_command"],
        "worker_drain_per_s": one_worker["commands_per_s"],
        # The rows a command writes, over the drain's whole backlog, where other databases'
        # writes to the shared server's WAL weigh least.
        "wal_bytes": one_worker["wal_bytes_per_command"],
    }
    upper = Costs(
        worker_ms=steady["worker"],
        kafka_ms=steady["kafka"],
        postgres_ms=steady["postgres"],
        **common,
    )
    lower = Costs(
        worker_ms=batched["worker"],
        kafka_ms=batched["kafka"],
        postgres_ms=batched["postgres"],
        **common,
    )
    return one_api["applied_per_s"], upper, lower


def capacity_lines(results: ScalingResults) -> list[str]:
    model = model_costs(results)
    if model is None:
        return []
    today, upper, lower = model
    lines = [
        "### Capacity model (tests/bench/capacity.py, docs/scaling.md)",
        "",
        f"Today's load: {today:g} commands/s, what one API process and one worker sustained "
        "above. Upper bound: the per-command costs of that step above idle (small batches); lower bound: "
        "those of the one-worker drain (full batches), the API's cost the same in both.",
        "",
    ]
    for name, costs in (("upper bound", upper), ("lower bound", lower)):
        rows = [row(capacity(today, m, costs)) for m in (1, 10, 100, 1000)]
        lines += [f"{name}: {costs_line(costs)}", "", *table(HEADER, rows), ""]
    return lines


def costs_line(c: Costs) -> str:
    return (
        f"per command API {c.api_ms:g}, worker {c.worker_ms:g}, Kafka {c.kafka_ms:g}, PostgreSQL "
        f"{c.postgres_ms:g} CPU-ms; Kafka log {c.kafka_log_bytes:.0f} B, WAL {c.wal_bytes:.0f} B; "
        f"one worker drains {c.worker_drain_per_s:g}/s"
    )


SCALING_DOC = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"
BLOCK_BEGIN, BLOCK_END = "<!-- figures: kept by make bench -->", "<!-- /figures -->"


def write_figures(results: ScalingResults, header: list[str], doc: Path = SCALING_DOC) -> bool:
    """Replaces the figures block of docs/scaling.md with this run's (header: the run's date,
    machine and load average); the prose around it is the doc's own. False: no block there."""
    if not doc.exists():
        return False
    text = doc.read_text()
    if BLOCK_BEGIN not in text or BLOCK_END not in text:
        return False
    start, end = text.index(BLOCK_BEGIN) + len(BLOCK_BEGIN), text.index(BLOCK_END)
    body = "\n".join(["", *header, "", *report_lines(results)[2:], ""])
    doc.write_text(text[:start] + body + text[end:])
    return True
