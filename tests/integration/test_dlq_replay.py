"""`orderstatus dlq`: a command the database refused is replayed, once its cause is fixed, as a new
command that the inbox applies once however often it is replayed; bytes that are no command are
never replayed."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from services.adapters.kafka_records import header
from services.adapters.settings import Settings
from services.core.topics import HEADER_COMMAND_ID
from services.dlq import HEADER_REPLAY_OF, ParkedMessage, read_parked, replay, select
from tests.stack import ORDERSTATUS, ServiceProcess, isolated_settings, settings_env
from tests.topics import (
    change_command,
    command_record,
    create_command,
    produce,
    read_topic,
    signed,
)

REFUSE_EXPLOSIVE_REASONS = """
CREATE FUNCTION refuse_explosive_reasons() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.reason = 'explode' THEN RAISE EXCEPTION 'refused by test trigger'; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_explosive_reasons BEFORE INSERT ON order_status_events
    FOR EACH ROW EXECUTE FUNCTION refuse_explosive_reasons();
"""


@pytest.fixture
def fresh(base_settings: Settings) -> Iterator[Settings]:
    with isolated_settings(base_settings) as settings:
        yield settings


def outcomes(settings: Settings) -> dict[str, str]:
    with psycopg.connect(settings.admin_url) as conn:
        rows = conn.execute("SELECT command_id::text, outcome FROM command_outcomes").fetchall()
    return {str(command_id): str(outcome) for command_id, outcome in rows}


def wait_for(settings: Settings, count: int, timeout: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while len(seen := outcomes(settings)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} outcomes: {seen}"
        time.sleep(0.1)
    return seen


def results_of(settings: Settings, command_id: str) -> list[bool]:
    """The results published for `command_id`, in order: whether each is flagged duplicate."""
    return [
        header(m, "duplicate") is not None
        for m in read_topic(settings, settings.topics.results)
        if header(m, HEADER_COMMAND_ID) == command_id.encode()
    ]


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ORDERSTATUS, "dlq", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_refused_command_is_replayed_once_after_the_fix_and_garbage_is_skipped(
    fresh: Settings, log_dir: Path
) -> None:
    with psycopg.connect(fresh.admin_url, autocommit=True) as conn:
        conn.execute(REFUSE_EXPLOSIVE_REASONS)
    create = create_command(uuid.uuid4())
    explosive = change_command(create.order_id, "accepted").model_copy(update={"reason": "explode"})
    garbage = (b"not-an-order", b"\x00not json", [(HEADER_COMMAND_ID, b"garbage")])
    worker = ServiceProcess("worker", fresh, log_dir, worker_metrics_port=0).start()
    try:
        produce(fresh, fresh.topics.commands, [command_record(create), command_record(explosive)])
        produce(fresh, fresh.topics.commands, [signed(garbage)])
        assert wait_for(fresh, 2)[str(explosive.command_id)] == "error"
        parked: list[ParkedMessage] = []
        deadline = time.monotonic() + 30
        while len(parked) < 2:
            assert time.monotonic() < deadline, parked
            parked = read_parked(fresh)
        listed = cli(fresh, "list")
        assert listed.returncode == 0, listed.stderr
        assert "2 dead letter(s)" in listed.stdout
        assert cli(fresh, "replay").returncode == 2  # nothing named and no --all: refused

        with psycopg.connect(fresh.admin_url, autocommit=True) as conn:  # the cause, fixed
            conn.execute("DROP TRIGGER refuse_explosive_reasons ON order_status_events")
        first = replay(fresh, select(parked, [], None))
        again = cli(fresh, "replay", "--reason", "error", "--all")
        assert again.returncode == 0, again.stderr
        replays = [r.command for r in first if r.command is not None]
        assert len(replays) == 1 and replays[0].command_id != explosive.command_id
        assert [r.command for r in first if r.message.reason.startswith("undecodable")] == [None]
        replay_id = str(replays[0].command_id)
        assert replay_id in again.stdout  # the same dead letter, the same new id

        assert wait_for(fresh, 3)[replay_id] == "applied"
        # The second copy of the replay was handled too (not merely given a second to be): its
        # result is published, flagged as the duplicate it is.
        deadline = time.monotonic() + 60
        while len(replay_results := results_of(fresh, replay_id)) < 2:
            assert time.monotonic() < deadline, replay_results
            time.sleep(0.1)
        assert replay_results == [False, True]  # first applied, then the copy: a duplicate
    finally:
        worker.terminate()
    assert len(outcomes(fresh)) == 3
    with psycopg.connect(fresh.admin_url) as conn:
        assert conn.execute("SELECT status, version FROM orders").fetchall() == [("accepted", 2)]
        assert conn.execute("SELECT count(*) FROM order_status_events").fetchone() == (1,)
    sent = [m for m in read_topic(fresh, fresh.topics.commands) if header(m, HEADER_REPLAY_OF)]
    assert [header(m, HEADER_REPLAY_OF) for m in sent] == [str(explosive.command_id).encode()] * 2
    assert {header(m, HEADER_COMMAND_ID) for m in sent} == {replay_id.encode()}
