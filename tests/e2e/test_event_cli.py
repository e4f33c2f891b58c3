"""`orderstatus tail` and `orderstatus verify` against a real worker, database and topics of their
own: tail prints each event once, one line each, filtered by restaurant, from the beginning or live;
verify passes on what the worker wrote and names each order damaged behind its back."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from services.adapters.settings import Settings
from tests.e2e.test_exactly_once import order_script, wait_for_outcomes
from tests.stack import ORDERSTATUS, ServiceProcess, isolated_settings, settings_env
from tests.topics import command_record, create_command, produce, read_topic

ORDERS = 4


@dataclass
class Walked:
    settings: Settings
    worker: ServiceProcess
    restaurants: list[uuid.UUID]
    orders: list[uuid.UUID]
    """ORDERS walked to completed (one restaurant each), then one only created."""
    outcomes: int


@pytest.fixture(scope="module")
def walked(base_settings: Settings, log_dir: Path) -> Iterator[Walked]:
    with isolated_settings(base_settings) as settings:
        worker = ServiceProcess("worker", settings, log_dir, worker_metrics_port=0).start()
        try:
            restaurants = [uuid.uuid4() for _ in range(ORDERS + 1)]
            scripts = [order_script(r) for r in restaurants[:ORDERS]]
            scripts.append([create_command(restaurants[-1])])
            commands = [c for script in scripts for c in script]
            produce(settings, settings.topics.commands, [command_record(c) for c in commands])
            wait_for_outcomes(settings, len(commands))
            orders = [script[0].order_id for script in scripts]
            yield Walked(settings, worker, restaurants, orders, len(commands))
        finally:
            worker.terminate()


def orderstatus(
    settings: Settings, *args: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ORDERSTATUS, *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_verify_passes_on_what_the_worker_wrote(walked: Walked) -> None:
    done = orderstatus(walked.settings, "verify", "--settle", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    changes = ORDERS * 4
    assert f"{ORDERS + 1} orders, {changes} status changes, {walked.outcomes} events" in done.stdout


def test_tail_from_the_beginning_prints_one_restaurant_in_version_order(walked: Walked) -> None:
    restaurant, order = walked.restaurants[1], walked.orders[1]
    done = orderstatus(
        walked.settings, "tail", "--from-beginning", "--restaurant", str(restaurant),
        "--idle", "5",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 5, done.stdout
    assert all(f"restaurant={restaurant} order={order}" in line for line in lines)
    assert [line.split()[3:6] for line in lines] == [
        ["v1", "-", "->"],
        ["v2", "pending", "->"],
        ["v3", "accepted", "->"],
        ["v4", "preparing", "->"],
        ["v5", "ready", "->"],
    ]
    assert lines[-1].split()[6] == "completed"


def test_tail_prints_new_events_live(walked: Walked) -> None:
    restaurant = uuid.uuid4()
    tail = subprocess.Popen(
        [ORDERSTATUS, "tail", "--restaurant", str(restaurant), "--count", "5", "--idle", "60"],
        env=settings_env(walked.settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tail.stderr is not None
        assert "tailing" in tail.stderr.readline()  # its start offsets are fixed: go
        script = order_script(restaurant)
        produce(
            walked.settings, walked.settings.topics.commands, [command_record(c) for c in script]
        )
        out, _ = tail.communicate(timeout=60)
    finally:
        tail.kill()
    lines = out.splitlines()
    assert [line.split()[3] for line in lines] == ["v1", "v2", "v3", "v4", "v5"]
    assert all(f"order={script[0].order_id}" in line for line in lines)
    walked.orders.append(script[0].order_id)


def test_verify_names_each_damaged_order_and_only_those(walked: Walked) -> None:
    settings = walked.settings
    wait_for_outcomes(settings, walked.outcomes + 5)
    time.sleep(1)
    version_bumped, change_lost, event_repeated, status_changed = walked.orders[:4]
    with psycopg.connect(settings.admin_url, autocommit=True) as conn:
        conn.execute("UPDATE orders SET version = version + 1 WHERE id = %s", (version_bumped,))
        conn.execute(
            "DELETE FROM order_status_events WHERE order_id = %s AND version = 3", (change_lost,)
        )
        conn.execute("UPDATE orders SET status = 'cancelled' WHERE id = %s", (status_changed,))
    topic = settings.topics.events
    copy = next(
        m
        for m in read_topic(settings, topic)
        if m.key() == str(event_repeated).encode() and b'"version":2' in (m.value() or b"")
    )
    produce(
        settings,
        topic,
        [(copy.key(), copy.value(), []), (b"junk", b"not an event", [])],
        partition=copy.partition(),
    )

    done = orderstatus(settings, "verify", "--settle", "1")
    assert done.returncode == 1, done.stdout + done.stderr
    named = {line.split(":", 1)[0] for line in done.stdout.splitlines()[1:]}
    damaged = {str(o) for o in (version_bumped, change_lost, event_repeated, status_changed)}
    assert named == damaged | {"topic"}, done.stdout
    assert f"MISMATCH: {len(damaged)} orders of " in done.stdout
    assert "published 2 times" in done.stdout and "not an order event" in done.stdout
    assert f"{change_lost}: order_status_events versions [2, 4, 5]" in done.stdout
