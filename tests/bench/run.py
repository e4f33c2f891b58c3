"""`make bench`: throughput and latency figures of the running system, with ratios against a
baseline measured in the same invocation. Loopback only; every phase is bounded in time.

- worker drain: commands already waiting in Kafka, applied by one worker; the baseline applies
  one command per database and Kafka transaction (WORKER_BATCH_MAX=1), the default batches them;
- PATCH latency: one terminal on an idle system, then many terminals at once;
- peak memory (VmHWM) of the worker and the API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from services.core.settings import Settings
from services.loadgen import run_load
from tests.stack import ServiceProcess, isolated_settings
from tests.topics import change_command, command_record, create_command, produce

STEPS = ("accepted", "preparing", "ready", "completed")


def peak_rss_mb(process: ServiceProcess) -> float:
    assert process.process is not None
    for line in Path(f"/proc/{process.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def drain(base: Settings, log_dir: Path, commands: int, batch_max: int) -> dict[str, Any]:
    orders = commands // (1 + len(STEPS))
    with isolated_settings(base) as settings:
        records = []
        for _ in range(orders):
            create = create_command(uuid.uuid4())
            records.append(command_record(create))
            records.extend(command_record(change_command(create.order_id, s)) for s in STEPS)
        produce(settings, settings.topics.commands, records)
        worker = ServiceProcess(
            "worker",
            settings,
            log_dir,
            worker_metrics_port=0,
            worker_batch_max=batch_max,
            log_level="WARNING",
        )
        started = time.monotonic()
        worker.start(wait=False)
        done = 0
        with psycopg.connect(settings.admin_url, autocommit=True) as conn:
            deadline = started + 600
            while done < len(records) and time.monotonic() < deadline:
                time.sleep(0.05)
                row = conn.execute("SELECT count(*) FROM command_outcomes").fetchone()
                done = int(row[0]) if row else 0
        elapsed = time.monotonic() - started
        rss = peak_rss_mb(worker)
        worker.terminate()
    return {
        "batch_max": batch_max,
        "commands": done,
        "seconds": round(elapsed, 2),
        "commands_per_s": round(done / elapsed, 1),
        "worker_peak_rss_mb": rss,
    }


def patch_latency(base: Settings, log_dir: Path, seconds: float) -> dict[str, Any]:
    with isolated_settings(base) as settings:
        worker = ServiceProcess("worker", settings, log_dir, worker_metrics_port=0).start()
        api = ServiceProcess("api", settings, log_dir, log_level="WARNING").start()
        url = f"http://127.0.0.1:{settings.api_port}"
        try:
            idle = asyncio.run(run_load(settings, url, 1, seconds)).summary()
            loaded = asyncio.run(run_load(settings, url, 32, seconds)).summary()
            rss = {"api_peak_rss_mb": peak_rss_mb(api), "worker_peak_rss_mb": peak_rss_mb(worker)}
        finally:
            api.terminate()
            worker.terminate()
    return {"idle_1_terminal": idle, "loaded_32_terminals": loaded, **rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--baseline-commands", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    base = Settings()
    log_dir = Path(tempfile.mkdtemp(prefix="orderstatus-bench-"))

    print("worker drain (commands waiting in Kafka, one worker)")
    baseline = drain(base, log_dir, args.baseline_commands, batch_max=1)
    print(f"  baseline, one command per transaction: {baseline}")
    batched = drain(base, log_dir, args.commands, batch_max=base.worker_batch_max)
    print(f"  batched (WORKER_BATCH_MAX={base.worker_batch_max}):       {batched}")
    ratio = batched["commands_per_s"] / baseline["commands_per_s"]
    print(f"  ratio batched / baseline: {ratio:.1f}x")

    print(f"PATCH latency ({args.seconds:.0f} s per phase)")
    latency = patch_latency(base, log_dir, args.seconds)
    idle, loaded = latency["idle_1_terminal"], latency["loaded_32_terminals"]
    print(
        f"  idle, 1 terminal:    p50 {idle['p50_ms']} ms, p95 {idle['p95_ms']} ms, {idle['patches_per_s']} PATCH/s"
    )
    print(
        f"  loaded, 32 terminals: p50 {loaded['p50_ms']} ms, p95 {loaded['p95_ms']} ms, {loaded['patches_per_s']} PATCH/s, statuses {loaded['statuses']}"
    )
    print(
        f"  peak RSS: API {latency['api_peak_rss_mb']} MB, worker {latency['worker_peak_rss_mb']} MB"
    )
    print(f"  ratio loaded p95 / idle p95: {loaded['p95_ms'] / idle['p95_ms']:.1f}x")
    print(f"logs: {log_dir}")
    if args.json:
        args.json.write_text(json.dumps({"drain": [baseline, batched], "patch": latency}, indent=2))


if __name__ == "__main__":
    main()
