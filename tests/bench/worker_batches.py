"""Worker figures per batch: how fast one worker drains a backlog, and where a batch's time goes
(PostgreSQL vs the Kafka transaction) both for a backlog and for commands trickling in at a steady
rate (small batches, where fixed per-transaction waits dominate). Prints figures; asserts nothing.

    .venv/bin/python -m tests.bench.worker_batches [--commands 10000] [--rate 400] [--seconds 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from confluent_kafka import Producer

from services.adapters import kafka_config
from services.adapters.settings import Settings
from tests.stack import ServiceProcess, free_port, isolated_settings
from tests.topics import change_command, command_record, create_command, produce

STEPS = ("accepted", "preparing", "ready", "completed")
Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def order_records(orders: int) -> list[Record]:
    records: list[Record] = []
    for _ in range(orders):
        create = create_command(uuid.uuid4())
        records.append(command_record(create))
        records.extend(command_record(change_command(create.order_id, s)) for s in STEPS)
    return records


def scrape(port: int) -> dict[str, float]:
    """The worker's batch histograms: sums and counts."""
    wanted = (
        "orderstatus_worker_db_seconds_sum",
        "orderstatus_worker_db_seconds_count",
        "orderstatus_worker_publish_seconds_sum",
        "orderstatus_worker_publish_seconds_count",
        "orderstatus_worker_batch_size_sum",
        "orderstatus_worker_batch_size_count",
    )
    figures: dict[str, float] = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            figures[name] = float(value)
    return figures


def per_batch(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    def mean(metric: str, scale: float = 1.0) -> float:
        count = after[f"{metric}_count"] - before.get(f"{metric}_count", 0)
        total = after[f"{metric}_sum"] - before.get(f"{metric}_sum", 0)
        return round(total / count * scale, 2) if count else float("nan")

    return {
        "batches": after["orderstatus_worker_batch_size_count"]
        - before.get("orderstatus_worker_batch_size_count", 0),
        "commands_per_batch": mean("orderstatus_worker_batch_size"),
        "db_ms_per_batch": mean("orderstatus_worker_db_seconds", 1000),
        "publish_ms_per_batch": mean("orderstatus_worker_publish_seconds", 1000),
    }


def outcomes(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM command_outcomes").fetchone()
    return int(row[0]) if row else 0


def wait_for(conn: psycopg.Connection[Any], count: int, deadline_s: float) -> int:
    deadline = time.monotonic() + deadline_s
    done = outcomes(conn)
    while done < count and time.monotonic() < deadline:
        time.sleep(0.02)
        done = outcomes(conn)
    return done


def backlog(base: Settings, log_dir: Path, commands: int) -> dict[str, Any]:
    with isolated_settings(base) as settings:
        records = order_records(commands // (1 + len(STEPS)))
        produce(settings, settings.topics.commands, records)
        port = free_port()
        worker = ServiceProcess(
            "worker", settings, log_dir, worker_metrics_port=port, log_level="WARNING"
        )
        started = time.monotonic()
        worker.start(wait=False)
        try:
            with psycopg.connect(settings.admin_url, autocommit=True) as conn:
                done = wait_for(conn, len(records), 300)
            elapsed = time.monotonic() - started
            figures = per_batch({}, scrape(port))
        finally:
            worker.terminate()
    return {"commands": done, "commands_per_s": round(done / elapsed, 1), **figures}


def paced(base: Settings, log_dir: Path, rate: float, seconds: float) -> dict[str, Any]:
    """Commands produced at `rate`/s for `seconds` while the worker runs: small batches."""
    with isolated_settings(base) as settings:
        port = free_port()
        worker = ServiceProcess("worker", settings, log_dir, worker_metrics_port=port).start()
        producer = Producer({**kafka_config.client(settings), "linger.ms": 1})
        try:
            before = scrape(port)
            records = order_records(int(rate * seconds) // (1 + len(STEPS)))
            started = time.monotonic()
            for i, (key, value, headers) in enumerate(records):
                pause = started + i / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                producer.produce(settings.topics.commands, key=key, value=value, headers=headers)
                producer.poll(0)
            producer.flush(30)
            with psycopg.connect(settings.admin_url, autocommit=True) as conn:
                done = wait_for(conn, len(records), 120)
            figures = per_batch(before, scrape(port))
        finally:
            worker.terminate()
    return {"rate": rate, "commands": done, **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=400.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    base = Settings()
    log_dir = Path(tempfile.mkdtemp(prefix="orderstatus-worker-bench-"))
    print(f"backlog drain: {backlog(base, log_dir, args.commands)}")
    print(f"paced load:    {paced(base, log_dir, args.rate, args.seconds)}")
    print(f"logs: {log_dir}")


if __name__ == "__main__":
    main()
