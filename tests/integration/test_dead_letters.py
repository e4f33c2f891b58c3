"""Poison and invalid commands go to the dead-letter topic with the reason; the partition goes on."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from services.adapters.kafka_records import header
from services.adapters.settings import Settings
from services.core.messages import decode_result
from services.core.topics import (
    HEADER_COMMAND_ID,
    HEADER_DLQ_OFFSET,
    HEADER_DLQ_PARTITION,
    HEADER_DLQ_REASON,
)
from tests.integration.test_dlq_replay import REFUSE_EXPLOSIVE_REASONS
from tests.stack import ORDERSTATUS, ServiceProcess, isolated_settings, settings_env
from tests.topics import (
    change_command,
    command_record,
    create_command,
    produce,
    read_topic,
    signed,
)


@pytest.fixture
def dlq_settings(base_settings: Settings) -> Iterator[Settings]:
    with isolated_settings(base_settings) as settings:
        yield settings


def wait_for_outcome(settings: Settings, command_id: uuid.UUID, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    with psycopg.connect(settings.admin_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT outcome FROM command_outcomes WHERE command_id = %s", (command_id,)
            ).fetchone()
            if row:
                return str(row[0])
            time.sleep(0.1)
    raise TimeoutError(f"no outcome for {command_id}")


def refuse_explosive_reasons(settings: Settings) -> None:
    """A trigger that makes PostgreSQL refuse a status change whose reason is 'explode'."""
    with psycopg.connect(settings.admin_url, autocommit=True) as conn:
        conn.execute(REFUSE_EXPLOSIVE_REASONS)


def test_poison_messages_are_dead_lettered_and_the_partition_goes_on(
    dlq_settings: Settings, log_dir: Path
) -> None:
    worker = ServiceProcess("worker", dlq_settings, log_dir, worker_metrics_port=0).start()
    valid = create_command(uuid.uuid4())
    key, value, headers = command_record(valid)
    payload = json.loads(value)
    identified = uuid.uuid4()
    poison: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = [
        (b"garbage", b"\x00\xff\x13not json at all", []),
        (key, value[: len(value) // 2], []),  # truncated JSON
        (key, json.dumps({**payload, "schema_version": 2}).encode(), []),
        (key, b"{" + b" " * 70_000 + b"}", []),  # oversize
        (
            key,
            json.dumps({**payload, "type": "teleport_order"}).encode(),
            [(HEADER_COMMAND_ID, str(identified).encode())],
        ),
        (None, None, []),
    ]
    try:
        produce(
            dlq_settings,
            dlq_settings.topics.commands,
            [*(signed(p) for p in poison), (key, value, headers)],
            partition=0,
        )
        assert wait_for_outcome(dlq_settings, valid.command_id) == "applied"
        assert worker.process is not None and worker.process.poll() is None, "worker died"
    finally:
        worker.terminate()

    dead = read_topic(dlq_settings, dlq_settings.topics.dead_letters)
    assert len(dead) == len(poison)
    reasons = [(header(m, HEADER_DLQ_REASON) or b"").decode() for m in dead]
    assert [r.split(":")[0] for r in reasons] == ["undecodable"] * 3 + ["oversize"] + [
        "undecodable"
    ] * 2
    assert "schema_version" in reasons[2]
    assert [int(header(m, HEADER_DLQ_PARTITION) or b"-1") for m in dead] == [0] * len(poison)
    assert [int(header(m, HEADER_DLQ_OFFSET) or b"-1") for m in dead] == list(range(len(poison)))
    assert [m.value() for m in dead[:3]] == [p[1] for p in poison[:3]]  # kept byte for byte

    results = [
        decode_result(m.value() or b"")
        for m in read_topic(dlq_settings, dlq_settings.topics.results)
    ]
    by_command = {r.command_id: r for r in results}
    assert by_command[identified].outcome == "invalid"  # the caller learns why
    assert by_command[valid.command_id].outcome == "applied"
    # ... and so does GET /commands/{id}, which reads the inbox: not `pending` for ever.
    assert wait_for_outcome(dlq_settings, identified, timeout=1) == "invalid"


def test_the_guard_stops_the_worker_when_dead_letters_dominate(
    dlq_settings: Settings, log_dir: Path
) -> None:
    worker = ServiceProcess(
        "worker",
        dlq_settings,
        log_dir,
        worker_metrics_port=0,
        worker_dead_letter_window=20,
        worker_dead_letter_max_ratio=0.5,
    ).start()
    produce(
        dlq_settings, dlq_settings.topics.commands, [(b"k", b"not a command", [])] * 40, partition=1
    )
    assert worker.process is not None
    assert worker.process.wait(60) == 3
    assert '"evt":"dead_letter_guard_tripped"' in worker.logs()
    assert len(read_topic(dlq_settings, dlq_settings.topics.dead_letters)) < 40


def test_a_command_the_database_refuses_gets_an_error_outcome_and_the_partition_goes_on(
    dlq_settings: Settings, log_dir: Path
) -> None:
    refuse_explosive_reasons(dlq_settings)
    create = create_command(uuid.uuid4())
    explosive = change_command(create.order_id, "accepted").model_copy(update={"reason": "explode"})
    after = change_command(create.order_id, "accepted", expected_version=1)
    worker = ServiceProcess("worker", dlq_settings, log_dir, worker_metrics_port=0).start()
    try:
        produce(
            dlq_settings,
            dlq_settings.topics.commands,
            [command_record(c) for c in (create, explosive, after)],
        )
        assert wait_for_outcome(dlq_settings, after.command_id) == "applied"
        assert wait_for_outcome(dlq_settings, explosive.command_id) == "error"
        assert worker.process is not None and worker.process.poll() is None
    finally:
        worker.terminate()
    dead = read_topic(dlq_settings, dlq_settings.topics.dead_letters)
    assert len(dead) == 1
    assert (header(dead[0], HEADER_DLQ_REASON) or b"").startswith(b"error: RaiseException")
    assert header(dead[0], HEADER_COMMAND_ID) == str(explosive.command_id).encode()
    with psycopg.connect(dlq_settings.admin_url) as conn:
        assert conn.execute("SELECT status, version FROM orders").fetchall() == [("accepted", 2)]


def dead_letters_of(settings: Settings) -> int:
    return len(read_topic(settings, settings.topics.dead_letters))


def worker_ops(settings: Settings, action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ORDERSTATUS, "worker-ops", action],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_tripped_guard_stays_tripped_across_restarts_until_an_operator_resets_it(
    dlq_settings: Settings, log_dir: Path
) -> None:
    """A restart policy must not restart a tripped worker into the next window: each run of a
    worker whose guard is smaller than two batches would divert another batch before tripping."""
    guarded = {
        "worker_metrics_port": 0,
        "worker_dead_letter_window": 20,
        "worker_dead_letter_max_ratio": 0.5,
        "worker_batch_max": 10,
    }
    produce(
        dlq_settings, dlq_settings.topics.commands, [(b"k", b"not a command", [])] * 40, partition=1
    )
    first = ServiceProcess("worker", dlq_settings, log_dir, **guarded).start(wait=False)
    assert first.process is not None and first.process.wait(60) == 3
    diverted = dead_letters_of(dlq_settings)
    assert 0 < diverted < 40

    again = ServiceProcess("worker", dlq_settings, log_dir, **guarded).start(wait=False)
    assert again.process is not None and again.process.wait(60) == 3
    assert '"evt":"dead_letter_guard_still_tripped"' in again.logs()
    assert dead_letters_of(dlq_settings) == diverted  # nothing more diverted

    shown = worker_ops(dlq_settings, "guard")
    assert shown.returncode == 1 and "tripped at" in shown.stdout, shown.stderr
    reset = worker_ops(dlq_settings, "reset-guard")
    assert reset.returncode == 0 and "reset: tripped at" in reset.stdout, reset.stderr
    assert worker_ops(dlq_settings, "guard").returncode == 0
    relaxed = {**guarded, "worker_dead_letter_window": 1000}
    worker = ServiceProcess("worker", dlq_settings, log_dir, **relaxed).start()
    try:
        deadline = time.monotonic() + 30
        while dead_letters_of(dlq_settings) < 40 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert dead_letters_of(dlq_settings) == 40
        assert worker.process is not None and worker.process.poll() is None
    finally:
        worker.terminate()


def test_a_redone_batch_dead_letters_its_refused_command_again(
    dlq_settings: Settings, log_dir: Path
) -> None:
    """The first attempt's dead letter is lost with its aborted transaction; the redo, answered
    from the inbox, must write it again so the command stays recoverable (`orderstatus dlq
    replay`)."""
    refuse_explosive_reasons(dlq_settings)
    create = create_command(uuid.uuid4())
    explosive = change_command(create.order_id, "accepted").model_copy(update={"reason": "explode"})
    after = change_command(create.order_id, "accepted", expected_version=1)
    produce(
        dlq_settings,
        dlq_settings.topics.commands,
        [command_record(c) for c in (create, explosive, after)],
    )
    # The coordinator loses the first transaction but its commit "succeeds": the worker finds the
    # offsets not advanced and redoes the batch from the inbox.
    worker = ServiceProcess(
        "worker",
        dlq_settings,
        log_dir,
        worker_metrics_port=0,
        worker_fault="silent_abort",
        worker_fault_batch=1,
    ).start()
    try:
        assert wait_for_outcome(dlq_settings, after.command_id) == "applied"
        deadline = time.monotonic() + 30
        results: set[uuid.UUID] = set()
        while after.command_id not in results and time.monotonic() < deadline:
            results = {
                decode_result(m.value() or b"").command_id
                for m in read_topic(dlq_settings, dlq_settings.topics.results)
            }
            time.sleep(0.2)
        assert after.command_id in results, "the redone batch was never committed"
        assert '"evt":"kafka_commit_not_visible"' in worker.logs()  # the batch was redone
    finally:
        worker.terminate()
    dead = read_topic(dlq_settings, dlq_settings.topics.dead_letters)
    assert [header(m, HEADER_COMMAND_ID) for m in dead] == [str(explosive.command_id).encode()]
    assert [m.value() for m in dead] == [command_record(explosive).value]
