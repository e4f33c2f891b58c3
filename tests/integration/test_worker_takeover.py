"""A worker dies with its Kafka transaction open while a second worker runs: the survivor takes its
partitions over, fences the dead slot's transactional.id (aborting that transaction at once) and
gives every command its one outcome, long before transaction.timeout.ms would have aborted it.

The transaction timeout is set to 60 s and the wait for the outcomes is bounded well below it, so
without the fencing (WORKER_FENCE_DEPARTED_SLOTS=false) the survivor's read_committed consumer
waits behind the open transaction and this test fails. The death is WORKER_FAULT
crash_before_kafka_commit: os._exit with the batch's records and offsets in an open transaction,
which is what kill -9 at that instant leaves behind (no abort, no LeaveGroup), made deterministic."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka import KafkaException

from services.adapters.settings import Settings
from services.status_worker.faults import CRASH_EXIT_CODE
from tests.chaos.checker import wait_until_drained
from tests.e2e.test_exactly_once import assert_each_order_walked_once, order_script
from tests.stack import ServiceProcess, free_port, isolated_settings
from tests.topics import command_record, produce

TRANSACTION_TIMEOUT_MS = 60_000
SESSION_TIMEOUT_MS = 6_000  # the broker's group.min.session.timeout.ms
WAIT_S = 40.0
"""Takeover takes about the session timeout plus a rebalance; an unfenced transaction would hold
the partitions for TRANSACTION_TIMEOUT_MS (and up to the broker's 10 s abort check on top)."""


@pytest.fixture
def settings(base_settings: Settings) -> Iterator[Settings]:
    overrides = {
        "worker_transaction_timeout_ms": TRANSACTION_TIMEOUT_MS,
        "worker_session_timeout_ms": SESSION_TIMEOUT_MS,
    }
    with isolated_settings(base_settings, **overrides) as settings:
        yield settings


def wait_until_committed(settings: Settings, timeout_s: float) -> None:
    """Until every command offset is committed. While a transaction holds offsets of the group
    open, reading them times out (they are unstable): that counts as not yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            wait_until_drained(settings, timeout_s=max(0.0, deadline - time.monotonic()))
            return
        except KafkaException:
            assert time.monotonic() < deadline, f"offsets still pending after {timeout_s}s"


def latest_share(worker: ServiceProcess) -> list[int]:
    lines = [line for line in worker.logs().splitlines() if '"evt":"partitions_assigned"' in line]
    return list(json.loads(lines[-1])["partitions"]) if lines else []


def events(worker: ServiceProcess, evt: str) -> list[dict[str, object]]:
    marker = f'"evt":"{evt}"'
    return [json.loads(line) for line in worker.logs().splitlines() if marker in line]


def test_a_survivor_fences_the_dead_workers_open_transaction_and_answers_its_partitions(
    settings: Settings, log_dir: Path
) -> None:
    partitions = settings.kafka_command_partitions
    doomed = ServiceProcess(
        "worker",
        settings,
        log_dir,
        worker_id="1",
        worker_metrics_port=0,
        worker_fault="crash_before_kafka_commit",
        worker_fault_batch=1,
    ).start()
    survivor = ServiceProcess(
        "worker", settings, log_dir, worker_id="2", worker_metrics_port=free_port()
    ).start()
    commands = [c for _ in range(20) for c in order_script(uuid.uuid4())]
    try:
        deadline = time.monotonic() + 30
        while not all(0 < len(latest_share(w)) < partitions for w in (doomed, survivor)):
            assert time.monotonic() < deadline, "the two workers never split the partitions"
            time.sleep(0.2)
        taken = set(latest_share(doomed))
        produce(settings, settings.topics.commands, [command_record(c) for c in commands])
        assert doomed.process is not None
        assert doomed.process.wait(30) == CRASH_EXIT_CODE  # mid-transaction, at its first batch
        wait_until_committed(settings, WAIT_S)
        metrics = httpx.get(f"http://127.0.0.1:{survivor.settings.worker_metrics_port}/metrics")
    finally:
        survivor.terminate()
        doomed.kill()
    fenced = events(survivor, "worker_slot_fenced")
    assert [e["slot"] for e in fenced] == [f"{settings.worker_group_id}.1"]
    assert "orderstatus_worker_fenced_slots_total 1.0" in metrics.text
    assert taken <= set(latest_share(survivor)), "the survivor did not take the partitions over"
    assert events(survivor, "worker_slot_fence_failed") == []
    assert_each_order_walked_once(settings, commands)


def test_a_slot_restarted_at_once_fences_its_predecessor_and_is_not_fenced_by_the_survivor(
    settings: Settings, log_dir: Path
) -> None:
    """The restarted slot's init_transactions aborts what its predecessor left open (else the
    outcomes would wait out the 60 s transaction timeout and the bounded wait fail). It may come
    back before the session timeout (no rebalance) or after it (the survivor takes over and fences
    the slot first); either way it must live on with its partitions: it initialises its producer
    only once a member, after any fence of the survivor's (the race is not forced here)."""
    partitions = settings.kafka_command_partitions
    doomed = ServiceProcess(
        "worker",
        settings,
        log_dir,
        worker_id="1",
        worker_metrics_port=0,
        worker_fault="crash_before_kafka_commit",
        worker_fault_batch=1,
    ).start()
    survivor = ServiceProcess("worker", settings, log_dir, worker_id="2", worker_metrics_port=0)
    survivor.start()
    restarted = ServiceProcess("worker", settings, log_dir, worker_id="1", worker_metrics_port=0)
    commands = [c for _ in range(20) for c in order_script(uuid.uuid4())]
    try:
        deadline = time.monotonic() + 30
        while not all(0 < len(latest_share(w)) < partitions for w in (doomed, survivor)):
            assert time.monotonic() < deadline, "the two workers never split the partitions"
            time.sleep(0.2)
        produce(settings, settings.topics.commands, [command_record(c) for c in commands])
        assert doomed.process is not None
        assert doomed.process.wait(30) == CRASH_EXIT_CODE
        restarted.start(wait=False)
        wait_until_committed(settings, WAIT_S)
        time.sleep(1)  # a fatal error of the restarted worker's producer would show by now
        assert restarted.process is not None and restarted.process.poll() is None, restarted.logs()
    finally:
        survivor.terminate()
        restarted.terminate()
        doomed.kill()
    assert events(restarted, "kafka_fatal_error") == []
    assert latest_share(restarted), "the restarted slot holds no partition"
    assert_each_order_walked_once(settings, commands)
