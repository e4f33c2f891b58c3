"""make bench's scaling phase (issue 14): the same work with more processes, and what saturates.

1. worker drain with 1, 2 and 3 workers (distinct WORKER_IDs, one consumer group, commands topic of
   6 partitions): a backlog written in ONE Kafka transaction once the group is stable, so it
   appears to the read_committed workers all at once, exactly as if preloaded (a backlog preloaded
   before the workers start would be drained by the first to join while the others still join).
   Timed from the first committed offset to the last (the group's offsets, read from the
   coordinator: polling PostgreSQL would charge the database for the measuring).
2. PATCH throughput with 1, 2 and 4 API processes (API_RESULTS_PARTITION=auto) and one worker,
   under wrk at 32 connections, every request a distinct pending order moved to accepted.
3. at every step, the CPU of each process (each API process, each worker, each broker JVM,
   PostgreSQL's backends of the bench database and its server processes summed), of the load
   generator (wrk, a waited-for child) and of the machine, from /proc (tests/bench/cpu.py); and the
   CPU-ms per applied command of each component, the Kafka log bytes and PostgreSQL WAL bytes per
   command (both stores are shared with whatever else runs on the machine)."""

from __future__ import annotations

import os
import resource
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import (
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType  # type: ignore[attr-defined]

from bench.wrk import run_wrk, write_orders
from services.adapters import kafka_config
from services.adapters.settings import Settings
from services.loadgen import seed
from tests.bench.cpu import CpuSampler, CpuUse, Finder, cpu_between, pids_listening_on, process_tree
from tests.bench.worker_batches import order_records
from tests.stack import ServiceProcess, free_port, isolated_settings

PG_PROCESSES = (
    "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
    " AND (datname = current_database() OR datname IS NULL)"
)
"""The bench database's backends and the server's own processes (WAL writer, checkpointer, ...;
no database), not this query's backend nor other databases' sessions."""
OUTCOMES = "SELECT count(*) FROM command_outcomes"
"""Checked once after a drain: every command of the backlog has its outcome."""
REPLY_LOCKS = (
    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
    " WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()"
)
"""API processes that took their results partition (command_api/reply_partition.py): each takes
one advisory lock when its app starts, so this many have started."""
WAL_LSN = "SELECT pg_current_wal_lsn()::text"
WAL_BYTES = "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)::bigint"
HOT_PERCENT = 85.0
"""A process at or above this share of one core is saturated (each is mostly one busy thread)."""
BUSY_MACHINE = 0.9
"""The machine is saturated at this share of all its cores."""
Step = dict[str, Any]
PHASE_S = 240
"""The phase's bound (a full run takes ~2 min): a step that no longer fits is skipped, and said."""
DRAIN_STEP_S = 40
PATCH_PART_S = 110
"""What a drain step and the three PATCH steps take (start-up, seeding and teardown included)."""


@dataclass
class ScalingPlan:
    commands: int
    wrk_s: float
    workers: tuple[int, ...] = (1, 2, 3)
    api_processes: tuple[int, ...] = (1, 2, 4)
    connections: int = 32
    partitions: int = 6
    idle_s: float = 3

    @classmethod
    def of(cls, quick: bool) -> ScalingPlan:
        return cls(6_000, 4) if quick else cls(30_000, 10)


@dataclass
class ScalingResults:
    drain: list[Step] = field(default_factory=list)
    patch: list[Step] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    cores: int = 0


def say(text: str) -> None:
    print(text, flush=True)


# ---- the processes of a step -----------------------------------------------------------------


def broker_pids(settings: Settings) -> list[int]:
    """The broker JVMs of the cluster the settings point at: the processes listening on the
    ports the cluster's metadata gives for its brokers."""
    admin = AdminClient(kafka_config.admin(settings))
    ports = {broker.port for broker in admin.list_topics(timeout=10).brokers.values()}
    return pids_listening_on(ports)


@contextmanager
def postgres_finder(settings: Settings) -> Iterator[Finder]:
    with psycopg.connect(settings.admin_url, autocommit=True) as conn:

        def find() -> list[int]:
            return [int(row[0]) for row in conn.execute(PG_PROCESSES).fetchall()]

        yield find


def tree_of(processes: list[ServiceProcess]) -> Finder:
    def find() -> list[int]:
        pids: list[int] = []
        for process in processes:
            if process.process is not None and process.process.poll() is None:
                pids += process_tree(process.process.pid)
        return pids

    return find


def wal_lsn(settings: Settings) -> str:
    with psycopg.connect(settings.admin_url, autocommit=True) as conn:
        row = conn.execute(WAL_LSN).fetchone()
    return str(row[0]) if row else "0/0"


def wal_bytes(settings: Settings, before: str) -> int:
    with psycopg.connect(settings.admin_url, autocommit=True) as conn:
        row = conn.execute(WAL_BYTES, (wal_lsn(settings), before)).fetchone()
    return int(row[0]) if row else 0


def kafka_log_bytes(settings: Settings) -> int:
    """Bytes of the project's topics' log segments on the brokers' disks (every replica), found
    through each broker's log.dirs; 0 where a broker's directories are not on this machine."""
    admin = AdminClient(kafka_config.admin(settings))
    brokers = admin.list_topics(timeout=10).brokers
    topics = settings.topics
    names = (topics.commands, topics.results, topics.events, topics.dead_letters)
    total = 0
    for broker_id in brokers:
        resource_ = ConfigResource(ResourceType.BROKER, str(broker_id))
        configs = next(iter(admin.describe_configs([resource_]).values())).result(timeout=10)
        dirs = configs["log.dirs"].value if "log.dirs" in configs else None
        for log_dir in str(dirs or configs["log.dir"].value).split(","):
            for name in names:
                total += sum(f.stat().st_size for f in Path(log_dir).glob(f"{name}-*/*.log"))
    return total


def children_cpu_s() -> float:
    """CPU seconds of this process's waited-for children (wrk, once run_wrk returns)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ---- worker drain ----------------------------------------------------------------------------


def produce_at_once(settings: Settings, records: list[Any]) -> None:
    """All records in one transaction: read_committed consumers see none, then all of them."""
    producer = Producer(
        {
            **kafka_config.client(settings),
            "transactional.id": f"{settings.kafka_topic_prefix}-bench-backlog-{uuid.uuid4().hex}",
            "linger.ms": 20,
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for n, (key, value, headers) in enumerate(records):
        producer.produce(settings.topics.commands, key=key, value=value, headers=headers)
        if n % 1000 == 0:
            producer.poll(0)
    producer.commit_transaction(60)


def wait_group_stable(settings: Settings, members: int, timeout_s: float = 45) -> bool:
    """Until the worker group is Stable with `members` members, each holding a partition."""
    admin = AdminClient(kafka_config.admin(settings))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        group = settings.worker_group_id
        description = admin.describe_consumer_groups([group])[group].result(timeout=10)
        holding = [m for m in description.members if m.assignment.topic_partitions]
        if description.state == ConsumerGroupState.STABLE and len(holding) == members:
            return True
        time.sleep(0.2)
    return False


def committed_total(admin: AdminClient, settings: Settings, partitions: int) -> int:
    """The worker group's committed offsets summed over the commands partitions."""
    group = settings.worker_group_id
    wanted = [TopicPartition(settings.topics.commands, p) for p in range(partitions)]
    request = [ConsumerGroupTopicPartitions(group, wanted)]
    answer = admin.list_consumer_group_offsets(request)[group].result(timeout=10)
    return sum(max(0, tp.offset) for tp in answer.topic_partitions)


def drain_step(
    base: Settings, log_dir: Path, plan: ScalingPlan, workers: int, deadline_s: float
) -> Step:
    with isolated_settings(base, kafka_command_partitions=plan.partitions) as settings:
        records = order_records(plan.commands // 5)
        processes = [
            ServiceProcess(
                "worker",
                settings,
                log_dir,
                worker_id=str(n + 1),
                worker_metrics_port=free_port(),
            )
            for n in range(workers)
        ]
        try:
            for process in processes:
                process.start(wait=False)
            for process in processes:
                process.wait_ready()
            stable = wait_group_stable(settings, workers)
            kafka = broker_pids(settings)
            with postgres_finder(settings) as postgres:
                sampler = CpuSampler(
                    {"worker": tree_of(processes), "kafka": lambda: kafka, "postgres": postgres}
                )
                log_before, lsn_before = kafka_log_bytes(settings), wal_lsn(settings)
                produce_at_once(settings, records)
                step = timed_drain(settings, plan, sampler, len(records), deadline_s)
                wal = wal_bytes(settings, lsn_before)
            log = kafka_log_bytes(settings) - log_before
            # Both cover the whole backlog, not only the timed window.
            step["wal_bytes_per_command"] = round(wal / max(1, step["commands"]))
            step["kafka_log_bytes_per_command"] = round(log / max(1, step["commands"]))
            with psycopg.connect(settings.admin_url) as conn:
                row = conn.execute(OUTCOMES).fetchone()
            step |= {"workers": workers, "outcomes": int(row[0]) if row else 0}
            step["group_stable_before"] = stable
        finally:
            for process in processes:
                process.terminate()
    return step


def timed_drain(
    settings: Settings, plan: ScalingPlan, sampler: CpuSampler, total: int, deadline_s: float
) -> Step:
    admin = AdminClient(kafka_config.admin(settings))
    deadline = time.monotonic() + deadline_s
    first_done, first, last = 0, None, None
    done = 0
    while done < total and time.monotonic() < deadline:
        done = committed_total(admin, settings, plan.partitions)
        if done and first is None:
            first, first_done = sampler.snapshot(), done
        time.sleep(0.05)
    last = sampler.snapshot()
    if first is None:
        return {"commands": 0, "of": total, "commands_per_s": 0.0}
    cpu = cpu_between(first, last)
    measured = min(done, total) - first_done
    return {
        "commands": min(done, total),
        "of": total,
        "seconds": round(cpu.wall_s, 2),
        "commands_per_s": round(measured / cpu.wall_s, 1) if cpu.wall_s else 0.0,
        "measured_commands": measured,
        **cpu_summary(cpu, measured),
    }


# ---- PATCH throughput ------------------------------------------------------------------------


def patch_steps(
    base: Settings,
    log_dir: Path,
    plan: ScalingPlan,
    api_settings: Callable[[int], dict[str, Any]],
    time_left: Callable[[], float],
    results: ScalingResults,
) -> None:
    with isolated_settings(base) as settings:
        worker = ServiceProcess(
            "worker", settings, log_dir, worker_metrics_port=free_port()
        ).start()
        try:
            with postgres_finder(settings) as postgres:
                kafka = broker_pids(settings)
                for processes in plan.api_processes:
                    if time_left() < plan.wrk_s + 40:
                        results.skipped.append(f"PATCH with {processes} API processes")
                        continue
                    step = patch_step(
                        settings,
                        log_dir,
                        plan,
                        processes,
                        api_settings(processes),
                        {"worker": tree_of([worker]), "kafka": lambda: kafka, "postgres": postgres},
                    )
                    results.patch.append(step)
                    say(f"  {processes} API process(es): {line_of(step)}")
        finally:
            worker.terminate()


def patch_step(
    settings: Settings,
    log_dir: Path,
    plan: ScalingPlan,
    processes: int,
    overrides: dict[str, Any],
    groups: dict[str, Finder],
) -> Step:
    api = ServiceProcess("api", settings, log_dir, log_level="WARNING", **overrides).start()
    url = f"http://127.0.0.1:{settings.api_port}"
    try:
        # /readyz answers once one process is up: wait for all, or the first ones take every
        # connection and the rest's start-up lands in the measured window.
        all_started = wait_api_processes(settings, processes)
        warm = seed(settings, 4, 200)
        run_wrk(
            url,
            write_orders(log_dir / "scaling-warm.txt", warm),
            mode="fresh",
            connections=plan.connections,
            seconds=2,
        )
        tenants = seed(settings, 4, int(2_500 * plan.wrk_s))
        orders = write_orders(log_dir / f"scaling-api{processes}.txt", tenants)
        sampler = CpuSampler({"api": tree_of([api]), **groups})
        # The same processes with no load: what they cost per second whatever the rate (consumers'
        # fetch polling, timers), and, on a shared machine, the brokers' share of others' work.
        idle_before = sampler.snapshot()
        time.sleep(plan.idle_s)
        idle = cpu_between(idle_before, sampler.snapshot())
        lsn_before = wal_lsn(settings)
        before, generator_before = sampler.snapshot(), children_cpu_s()
        result = run_wrk(
            url, orders, mode="fresh", connections=plan.connections, seconds=plan.wrk_s
        )
        after, generator_s = sampler.snapshot(), children_cpu_s() - generator_before
        wal = wal_bytes(settings, lsn_before)
    finally:
        api.terminate()
    cpu = cpu_between(before, after)
    applied = result.statuses.get(200, 0)
    return {
        "api_processes": processes,
        "requests": result.requests,
        "applied": applied,
        "applied_per_s": result.rate_of(200),
        "p50_ms": result.p50_ms,
        "p95_ms": result.p95_ms,
        "p99_ms": result.p99_ms,
        "statuses": dict(sorted(result.statuses.items())),
        "wal_bytes_per_command": round(wal / max(1, applied)),
        **cpu_summary(cpu, applied, generator_s),
        "all_processes_started": all_started,
        "idle_percent": {name: idle.percent(name) for name in idle.groups},
        "marginal_cpu_ms_per_command": marginal_costs(cpu, idle, applied),
    }


def wait_api_processes(settings: Settings, processes: int, timeout_s: float = 60) -> bool:
    if processes == 1:
        return True  # one process: /readyz is its own
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(settings.admin_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(REPLY_LOCKS).fetchone()
            if row and int(row[0]) >= processes:
                return True
            time.sleep(0.2)
    return False


def marginal_costs(busy: CpuUse, idle: CpuUse, commands: int) -> dict[str, float]:
    """CPU-ms per command above the idle rate of the same processes (never below zero)."""
    if not commands:
        return {}
    return {
        name: round(
            max(0.0, 1000 * (use.seconds - idle.percent(name) / 100 * busy.wall_s) / commands), 3
        )
        for name, use in busy.groups.items()
    }


# ---- figures ---------------------------------------------------------------------------------


def cpu_summary(cpu: CpuUse, commands: int, generator_s: float | None = None) -> Step:
    """Each group's processes as % of one core, and the CPU-ms per command of each component."""
    each = {name: cpu.each_percent(name) for name in cpu.groups}
    seconds = {name: use.seconds for name, use in cpu.groups.items()}
    if generator_s is not None:
        each["load generator"] = [round(100 * generator_s / cpu.wall_s, 1)]
        seconds["load generator"] = generator_s
    return {
        "cpu_percent": each,
        "machine_percent": cpu.machine_percent,
        "other_percent": cpu.other_percent,
        "cpu_ms_per_command": {
            name: round(1000 * s / commands, 3) if commands else None for name, s in seconds.items()
        },
        "lost_processes": cpu.lost,
        "saturates": saturation(each, cpu.machine_percent),
    }


def saturation(each: dict[str, list[float]], machine_percent: float, cores: int = 0) -> str:
    """What a step ran out of: a process at >= HOT_PERCENT of a core, or the machine's cores at
    >= BUSY_MACHINE of all of them; and always the busiest component, for the reader."""
    cores = cores or os.cpu_count() or 1
    totals = {name: sum(values) for name, values in each.items()}
    busiest = sorted(totals.items(), key=lambda kv: -kv[1])[:3]
    hot = [
        f"{name} {n + 1} ({pct:g} %)"
        for name, values in each.items()
        for n, pct in enumerate(values)
        if pct >= HOT_PERCENT
    ]
    parts = []
    if machine_percent >= BUSY_MACHINE * 100 * cores:
        parts.append(f"the machine's {cores} cores ({machine_percent:g} % of {100 * cores})")
    if hot:
        parts.append("one core of " + ", ".join(hot))
    verdict = "; ".join(parts) if parts else "nothing (below the limits)"
    return verdict + "; busiest: " + ", ".join(f"{n} {t:.0f} %" for n, t in busiest)


def each_cell(values: list[float]) -> str:
    return " + ".join(f"{v:g}" for v in values) if values else "-"


def line_of(step: Step) -> str:
    rate = step.get("applied_per_s", step.get("commands_per_s"))
    cpu = ", ".join(
        f"{k} {round(sum(v), 1) if k == 'postgres' else each_cell(v)}"
        for k, v in step.get("cpu_percent", {}).items()
    )
    return f"{rate}/s; CPU % {cpu}; machine {step.get('machine_percent')} %"


# ---- the phase -------------------------------------------------------------------------------


def phase_scaling(
    base: Settings,
    log_dir: Path,
    quick: bool,
    api_settings: Callable[[int], dict[str, Any]],
    time_left: Callable[[], float],
) -> ScalingResults:
    plan = ScalingPlan.of(quick)
    results = ScalingResults(cores=os.cpu_count() or 1)
    deadline = time.monotonic() + PHASE_S

    def left() -> float:
        return min(time_left(), deadline - time.monotonic())

    say(f"scaling: worker drain ({plan.commands} commands, {plan.partitions} partitions)")
    for workers in plan.workers:
        if left() < DRAIN_STEP_S + PATCH_PART_S:
            results.skipped.append(f"drain with {workers} workers")
            continue
        step = drain_step(base, log_dir, plan, workers, min(90.0, left() - PATCH_PART_S))
        results.drain.append(step)
        say(f"  {workers} worker(s): {line_of(step)}")
    say(f"scaling: PATCH, wrk {plan.connections} connections, {plan.wrk_s:g} s per step")
    patch_steps(base, log_dir, plan, api_settings, left, results)
    return results
