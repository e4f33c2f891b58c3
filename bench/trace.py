"""Where an idle PATCH's time goes (issue 9): one caller, sequential requests, against an API and a
worker started here on an isolated database and topic prefix (tests/stack.py), then the segments
read back from both processes' log lines (`rid`, `ts`, `duration_ms`) and the worker's step
histograms:

- client: the caller's round trip;
- api: the API's own `duration_ms` (receive -> answer);
- to outcome: the API receiving the request -> the worker reporting the outcome (after its Kafka
  transaction committed): produce, the worker's fetch, its database step, its transaction;
- outcome -> answer: the worker's report -> the API's answer (the results consumer's fetch of a
  committed transaction, then the event loop);
- db / transaction: the worker's per-batch step means (orderstatus_worker_db_seconds,
  orderstatus_worker_publish_seconds).

    python -m bench.trace --requests 100 [--env WORKER_FETCH_WAIT_MAX_MS=10 ...]
    python -m bench.trace --transaction [--env WORKER_KAFKA_RETRY_BACKOFF_MS=1]

`--transaction`: the worker's Kafka transaction alone, call by call, with the worker's own client
configurations (begin, 3 records, send_offsets_to_transaction, commit, then the committed-offset
check), on two scratch topics. Settings given with --env apply to every process and client.
Prints medians and p90s; asserts nothing."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from services.adapters.kafka_config import admin, worker_consumer, worker_producer
from services.adapters.settings import Settings
from services.loadgen import seed
from tests.stack import ServiceProcess, free_port, isolated_settings


def _lines(path: Path, evt_key: str = "rid") -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if evt_key in record and "duration_ms" in record:
            found[record[evt_key]] = record
    return found


def _epoch(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(record["ts"]).timestamp()


def _histogram_means(metrics_text: str) -> dict[str, float]:
    sums: dict[str, float] = {}
    for line in metrics_text.splitlines():
        for name in ("orderstatus_worker_db_seconds", "orderstatus_worker_publish_seconds"):
            for part in ("_sum", "_count"):
                if line.startswith(name + part + " "):
                    sums[name + part] = float(line.split()[1])
    return {
        name.removeprefix("orderstatus_worker_").removesuffix("_seconds"): 1000
        * sums[name + "_sum"]
        / sums[name + "_count"]
        for name in ("orderstatus_worker_db_seconds", "orderstatus_worker_publish_seconds")
        if sums.get(name + "_count")
    }


def _summary(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"p50 {statistics.median(ordered):6.1f}  p90 {p90:6.1f} ms"


def trace(base: Settings, requests: int, overrides: dict[str, Any]) -> dict[str, str]:
    log_dir = Path(tempfile.mkdtemp(prefix="orderstatus-trace-"))
    with isolated_settings(base, **overrides) as settings:
        metrics_port = free_port()
        worker = ServiceProcess("worker", settings, log_dir, worker_metrics_port=metrics_port)
        api = ServiceProcess("api", settings, log_dir, log_level="INFO")
        started: list[ServiceProcess] = []
        try:
            for process in (worker, api):
                process.start()
                started.append(process)
            tenant = seed(settings, 1, requests + 5)[0]
            url = f"http://127.0.0.1:{settings.api_port}"
            client_ms: dict[str, float] = {}
            headers = {"Authorization": f"Bearer {tenant.token}"}
            with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
                for n, order in enumerate(tenant.orders[: requests + 5]):
                    t0 = time.perf_counter()
                    answer = client.patch(f"/orders/{order}/status", json={"status": "accepted"})
                    elapsed = 1000 * (time.perf_counter() - t0)
                    if n >= 5:  # the first few warm the connections up
                        client_ms[answer.headers["x-request-id"]] = elapsed
                    time.sleep(0.02)
            time.sleep(1.0)
            means = _histogram_means(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text)
        finally:
            for process in reversed(started):
                process.terminate()
        answered, processed = _lines(api.log_path), _lines(worker.log_path)
    api_ms, to_outcome, to_answer = [], [], []
    for rid in client_ms:
        a, w = answered.get(rid), processed.get(rid)
        if a is None or w is None:
            continue
        api_end = _epoch(a)
        api_start = api_end - a["duration_ms"] / 1000
        api_ms.append(a["duration_ms"])
        to_outcome.append(1000 * (_epoch(w) - api_start))
        to_answer.append(1000 * (api_end - _epoch(w)))
    return {
        "client": _summary(list(client_ms.values())),
        "api": _summary(api_ms),
        "to outcome": _summary(to_outcome),
        "outcome -> answer": _summary(to_answer),
        **{f"worker {k} (mean)": f"{v:6.1f} ms" for k, v in means.items()},
    }


def trace_transaction(settings: Settings, transactions: int = 60) -> dict[str, str]:
    """The worker's transaction call by call, on scratch topics (removed afterwards)."""
    name = f"trace-{uuid.uuid4().hex[:8]}"
    settings = settings.model_copy(update={"worker_group_id": name, "worker_id": name})
    out, source = f"{name}.out", f"{name}.in"
    admin_client = AdminClient(admin(settings))
    for future in admin_client.create_topics(
        [NewTopic(out, 2, 1), NewTopic(source, 2, 1)]
    ).values():
        future.result()
    producer, consumer = Producer(worker_producer(settings)), Consumer(worker_consumer(settings))
    steps: dict[str, list[float]] = {
        k: [] for k in ("send_offsets", "commit", "committed check", "whole")
    }
    try:
        time.sleep(1.0)  # the new topics' leaders
        consumer.assign([TopicPartition(source, 0, 0)])
        producer.init_transactions(30)
        for n in range(transactions + 10):
            t0 = time.perf_counter()
            producer.begin_transaction()
            for key in (b"a", b"b", b"c"):
                producer.produce(out, key=key, value=b"v" * 200)
            t1 = time.perf_counter()
            offsets = [TopicPartition(source, 0, n + 1)]
            metadata = consumer.consumer_group_metadata()
            producer.send_offsets_to_transaction(offsets, metadata, 30)
            t2 = time.perf_counter()
            producer.commit_transaction(30)
            t3 = time.perf_counter()
            consumer.committed([TopicPartition(source, 0)], timeout=10)
            t4 = time.perf_counter()
            if n >= 10:
                for step, ms in zip(steps, (t2 - t1, t3 - t2, t4 - t3, t4 - t0), strict=True):
                    steps[step].append(1000 * ms)
            time.sleep(0.03)  # idle: one command at a time
    finally:
        consumer.close()
        for future in admin_client.delete_topics([out, source]).values():
            future.result()
    return {step: _summary(values) for step, values in steps.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--transaction", action="store_true", help="the Kafka transaction only")
    parser.add_argument("--env", action="append", default=[], help="SETTING=value, both processes")
    args = parser.parse_args()
    overrides = {}
    for item in args.env:
        name, _, value = item.partition("=")
        overrides[name.lower()] = value
    base = Settings()
    base = base.model_copy(update=dict(Settings(**overrides).model_dump(include=set(overrides))))
    figures = trace_transaction(base) if args.transaction else trace(base, args.requests, {})
    for name, figure in figures.items():
        print(f"{name:>24}: {figure}")


if __name__ == "__main__":
    main()
