"""The capacity model of docs/scaling.md, computed from make bench's scaling figures: how many API
processes, workers, commands partitions, Kafka brokers and PostgreSQL primaries a multiple of
today's load needs. Pure arithmetic; every assumption is a named constant below, and the doc says
which were measured and which are assumed.

Cores = rate x CPU-ms per command / 1000 / TARGET_UTILISATION, per component. A Python process
(API or worker) is one core at most (the GIL), so processes = cores. Partitions are the unit of
worker parallelism and of per-order ordering: at least the workers, with room to double the
workers before the count must change (adding partitions moves keys to other partitions, which
breaks per-order ordering for orders in flight, so it is done seldom and ahead of need)."""

from __future__ import annotations

import math
from dataclasses import dataclass

TARGET_UTILISATION = 0.6
"""Run every component at most 60 % busy: headroom for peaks, a lost instance, a rebalance."""
MIN_PARTITIONS = 12
"""Today's KAFKA_COMMAND_PARTITIONS."""
REPLICATION_FACTOR = 3
"""Production Kafka: RF 3, min.insync.replicas 2 (docs/kafka-cluster.md). The measured broker
cost is at RF 1; each follower appends and serves every byte again, so the broker CPU and bytes
are taken x RF (an upper bound: a follower's fetch is cheaper than a client's produce)."""
BROKER_CORES = 8
BROKER_WRITE_MB_S = 100.0
"""Assumed per broker: 8 cores, 100 MB/s of sustained log writes (replicas included) on its disk."""
MIN_BROKERS = 3
PARTITION_REPLICAS_PER_BROKER = 4_000
"""A conservative ceiling of partition replicas per broker."""
TOPICS_PER_PARTITION_COUNT = 3
"""commands, results and events share the partition count (the dead-letter topic has one)."""
PRIMARY_CORES = 32
PRIMARY_WAL_MB_S = 150.0
"""Assumed for one PostgreSQL primary: 32 cores for backends, 150 MB/s of WAL (replicas and
archiving keep up). Past either, shard by restaurant (docs/database-scaling.md)."""


@dataclass(frozen=True)
class Costs:
    """Measured per applied command (docs/scaling.md says which step)."""

    api_ms: float
    worker_ms: float
    kafka_ms: float
    postgres_ms: float
    kafka_log_bytes: float
    wal_bytes: float
    worker_drain_per_s: float
    """One worker's measured backlog drain rate: a worker's ceiling whatever its CPU says."""


@dataclass(frozen=True)
class Capacity:
    multiple: int
    rate: float
    api_processes: int
    workers: int
    partitions: int
    broker_cores: float
    broker_write_mb_s: float
    brokers: int
    postgres_cores: float
    wal_mb_s: float
    primaries: int


def cores(rate: float, ms_per_command: float) -> float:
    return rate * ms_per_command / 1000 / TARGET_UTILISATION


def partitions_for(workers: int) -> int:
    """At least twice the workers, a multiple of 12 (divides evenly over 1-4, 6 and 12 workers)."""
    return max(MIN_PARTITIONS, 12 * math.ceil(2 * workers / 12))


def capacity(today: float, multiple: int, costs: Costs) -> Capacity:
    rate = today * multiple
    per_worker = min(1000 / costs.worker_ms, costs.worker_drain_per_s) * TARGET_UTILISATION
    workers = max(1, math.ceil(rate / per_worker))
    partitions = partitions_for(workers)
    broker_cores = cores(rate, costs.kafka_ms) * REPLICATION_FACTOR
    write_mb_s = rate * costs.kafka_log_bytes * REPLICATION_FACTOR / 1e6
    replicas = (TOPICS_PER_PARTITION_COUNT * partitions + 1) * REPLICATION_FACTOR
    brokers = max(
        MIN_BROKERS,
        math.ceil(broker_cores / BROKER_CORES),
        math.ceil(write_mb_s / BROKER_WRITE_MB_S / TARGET_UTILISATION),
        math.ceil(replicas / PARTITION_REPLICAS_PER_BROKER),
    )
    postgres_cores = cores(rate, costs.postgres_ms)
    wal_mb_s = rate * costs.wal_bytes / 1e6
    primaries = max(
        1,
        math.ceil(postgres_cores / PRIMARY_CORES),
        math.ceil(wal_mb_s / PRIMARY_WAL_MB_S / TARGET_UTILISATION),
    )
    return Capacity(
        multiple=multiple,
        rate=round(rate),
        api_processes=max(1, math.ceil(cores(rate, costs.api_ms))),
        workers=workers,
        partitions=partitions,
        broker_cores=round(broker_cores, 1),
        broker_write_mb_s=round(write_mb_s, 1),
        brokers=brokers,
        postgres_cores=round(postgres_cores, 1),
        wal_mb_s=round(wal_mb_s, 1),
        primaries=primaries,
    )


HEADER = [
    "load",
    "commands/s",
    "API processes",
    "workers",
    "partitions",
    "broker cores (RF 3)",
    "broker writes MB/s (RF 3)",
    "brokers",
    "PostgreSQL cores",
    "WAL MB/s",
    "primaries (shards)",
]


def row(c: Capacity) -> list[object]:
    return [
        f"{c.multiple}x",
        c.rate,
        c.api_processes,
        c.workers,
        c.partitions,
        c.broker_cores,
        c.broker_write_mb_s,
        c.brokers,
        c.postgres_cores,
        c.wal_mb_s,
        c.primaries,
    ]
