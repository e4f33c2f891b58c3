"""Transient faults, graceful shutdown and several workers: nothing skipped, reordered or repeated."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from services.adapters.settings import Settings
from tests.chaos.checker import wait_until_drained
from tests.e2e.test_exactly_once import (
    assert_each_order_walked_once,
    order_script,
    wait_for_outcomes,
)
from tests.faults import TcpProxy
from tests.stack import ServiceProcess, Tokens, isolated_settings
from tests.topics import command_record, produce, read_topic


@pytest.fixture
def fresh(base_settings: Settings) -> Iterator[Settings]:
    with isolated_settings(base_settings) as settings:
        yield settings


def outcome_count(settings: Settings) -> int:
    with psycopg.connect(settings.admin_url) as conn:
        row = conn.execute("SELECT count(*) FROM command_outcomes").fetchone()
    return int(row[0]) if row else 0


def test_the_worker_pauses_while_postgres_is_unreachable_and_resumes_in_order(
    fresh: Settings, log_dir: Path
) -> None:
    host = "127.0.0.1"
    port = int(str(psycopg.conninfo.conninfo_to_dict(fresh.database_url)["port"]))
    proxy = TcpProxy(host, port)
    through_proxy = psycopg.conninfo.make_conninfo(fresh.database_url, port=proxy.port)
    worker = ServiceProcess(
        "worker", fresh, log_dir, worker_metrics_port=0, database_url=through_proxy
    ).start()
    first = [c for _ in range(5) for c in order_script(uuid.uuid4())]
    second = [c for _ in range(5) for c in order_script(uuid.uuid4())]
    try:
        produce(fresh, fresh.topics.commands, [command_record(c) for c in first])
        wait_for_outcomes(fresh, len(first))
        proxy.cut()
        produce(fresh, fresh.topics.commands, [command_record(c) for c in second])
        # Not "a few seconds went by": the worker took up the second batch and found the
        # database gone; only then does "nothing was applied" mean anything.
        deadline = time.monotonic() + 60
        while '"evt":"database_unavailable"' not in worker.logs():
            assert time.monotonic() < deadline, "the worker never tried the second batch"
            time.sleep(0.05)
        assert outcome_count(fresh) == len(first), "applied while the database was unreachable?"
        assert worker.process is not None and worker.process.poll() is None
        proxy.restore()
        wait_for_outcomes(fresh, len(first) + len(second))
    finally:
        worker.terminate()
        proxy.close()
    assert '"evt":"database_unavailable"' in worker.logs()
    assert '"evt":"database_available"' in worker.logs()
    assert_each_order_walked_once(fresh, first + second)


def test_sigterm_finishes_the_batch_in_hand_and_a_restart_repeats_nothing(
    fresh: Settings, log_dir: Path
) -> None:
    commands = [c for _ in range(60) for c in order_script(uuid.uuid4())]
    worker = ServiceProcess(
        "worker", fresh, log_dir, worker_metrics_port=0, worker_batch_max=20
    ).start()
    produce(fresh, fresh.topics.commands, [command_record(c) for c in commands])
    deadline = time.monotonic() + 30
    while outcome_count(fresh) < 40:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert worker.terminate() == 0
    assert '"evt":"worker_stopped"' in worker.logs()
    stopped_at = outcome_count(fresh)
    assert stopped_at < len(commands), "the worker finished everything before SIGTERM landed"

    successor = ServiceProcess("worker", fresh, log_dir, worker_metrics_port=0).start()
    try:
        wait_for_outcomes(fresh, len(commands))
        # Every command offset committed: anything repeated would have been published by now.
        wait_until_drained(fresh)
    finally:
        successor.terminate()
    assert_each_order_walked_once(fresh, commands)


def test_two_workers_share_the_partitions_and_one_takes_over_when_the_other_leaves(
    fresh: Settings, log_dir: Path
) -> None:
    one = ServiceProcess("worker", fresh, log_dir, worker_metrics_port=0, worker_id="1").start()
    two = ServiceProcess("worker", fresh, log_dir, worker_metrics_port=0, worker_id="2").start()
    batch_one = [c for _ in range(20) for c in order_script(uuid.uuid4())]
    batch_two = [c for _ in range(20) for c in order_script(uuid.uuid4())]
    try:
        deadline = time.monotonic() + 30
        while not all(_has_share(w) for w in (one, two)):
            assert time.monotonic() < deadline, "the two workers never split the partitions"
            time.sleep(0.2)
        produce(fresh, fresh.topics.commands, [command_record(c) for c in batch_one])
        wait_for_outcomes(fresh, len(batch_one))
        # The worker logs a batch after its Kafka commit, a moment after the database shows it.
        deadline = time.monotonic() + 30
        while sum(w.logs().count('"evt":"order_status_success"') for w in (one, two)) < len(
            batch_one
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        applied_by = Counter(
            w.settings.worker_id
            for w in (one, two)
            for _ in range(w.logs().count('"evt":"order_status_success"'))
        )
        assert set(applied_by) == {"1", "2"}, f"one worker did all the work: {applied_by}"

        two.kill()
        produce(fresh, fresh.topics.commands, [command_record(c) for c in batch_two])
        wait_for_outcomes(fresh, len(batch_one) + len(batch_two), timeout=90)
    finally:
        one.terminate()
        two.kill()
    assert_each_order_walked_once(fresh, batch_one + batch_two)


def _has_share(worker: ServiceProcess) -> bool:
    """True once the worker's latest assignment is a real share (neither empty nor everything)."""
    lines = [line for line in worker.logs().splitlines() if '"evt":"partitions_assigned"' in line]
    if not lines:
        return False
    partitions = json.loads(lines[-1])["partitions"]
    return 0 < len(partitions) < worker.settings.kafka_command_partitions


def test_the_api_answers_503_not_500_while_postgres_is_unreachable(
    fresh: Settings, log_dir: Path
) -> None:
    port = int(str(psycopg.conninfo.conninfo_to_dict(fresh.database_url)["port"]))
    proxy = TcpProxy("127.0.0.1", port)
    through_proxy = psycopg.conninfo.make_conninfo(fresh.database_url, port=proxy.port)
    api = ServiceProcess("api", fresh, log_dir, database_url=through_proxy).start()
    restaurant = uuid.uuid4()
    headers = {"Authorization": f"Bearer {Tokens(fresh).pos(restaurant)}"}
    url = f"http://127.0.0.1:{fresh.api_port}"
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            proxy.cut()
            read = client.get(f"/orders/{uuid.uuid4()}")
            keyed = client.post(
                "/orders",
                json={"restaurant_id": str(restaurant)},
                headers={"Idempotency-Key": "while-db-down"},
            )
            proxy.restore()
            again = client.get(f"/orders/{uuid.uuid4()}")
    finally:
        api.terminate()
        proxy.close()
    for response in (read, keyed):
        assert response.status_code == 503, response.text
        assert response.json()["type"] == "/problems/database-unavailable"
        assert response.headers["retry-after"] == "1"
    assert again.status_code == 404
    # 503 means nothing happened: the keyed POST published no command.
    assert read_topic(fresh, fresh.topics.commands) == []
