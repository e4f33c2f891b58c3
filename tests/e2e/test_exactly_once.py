"""Exactly one outcome per command as a read_committed consumer sees it, whatever fails: every
command sent has one result, every applied change one event, and the database says the same
(tests/exactly_once.py checks all three places for every command and order sent)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from services.adapters.kafka_records import header
from services.adapters.settings import Settings
from services.core.messages import ChangeStatus, CreateOrder, decode_result
from services.core.topics import HEADER_COMMAND_ID
from tests.conftest import Stack
from tests.exactly_once import Sent, assert_exactly_once, visible_results
from tests.stack import ServiceProcess, Tokens, isolated_settings
from tests.topics import (
    change_command,
    command_record,
    create_command,
    high_watermarks,
    produce,
    read_topic,
)


@pytest.fixture
def fresh(base_settings: Settings) -> Iterator[Settings]:
    with isolated_settings(base_settings) as settings:
        yield settings


def wait_for_outcomes(settings: Settings, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(settings.admin_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM command_outcomes").fetchone()
            if row and row[0] >= count:
                return
            time.sleep(0.1)
    raise TimeoutError(f"fewer than {count} outcomes after {timeout}s")


def order_script(restaurant: uuid.UUID) -> list[CreateOrder | ChangeStatus]:
    create = create_command(restaurant)
    return [create] + [
        change_command(create.order_id, s) for s in ("accepted", "preparing", "ready", "completed")
    ]


def assert_each_order_walked_once(
    settings: Settings, commands: Iterable[CreateOrder | ChangeStatus]
) -> None:
    """Order scripts sent: exactly once in all three places, every command applied, every order
    completed at version 5."""
    sent = Sent.of(commands)
    seen = assert_exactly_once(settings, sent)
    assert Counter(o.outcome for o in seen.inbox) == {"applied": len(sent.commands)}
    assert {(o.status, o.version) for o in seen.orders} == {("completed", 5)}


def test_the_same_command_delivered_twice_changes_the_order_once(
    fresh: Settings, log_dir: Path
) -> None:
    worker = ServiceProcess("worker", fresh, log_dir, worker_metrics_port=0).start()
    create = create_command(uuid.uuid4())
    accept = change_command(create.order_id, "accepted")
    try:
        produce(fresh, fresh.topics.commands, [command_record(c) for c in (create, accept, accept)])
        wait_for_outcomes(fresh, 2)
        time.sleep(1)  # let the third message (the copy) be processed too
        produce(fresh, fresh.topics.commands, [command_record(accept)])  # and once more, later
        time.sleep(1.5)
    finally:
        worker.terminate()
    with psycopg.connect(fresh.admin_url) as conn:
        changes = conn.execute("SELECT count(*) FROM order_status_events").fetchone()
        order = conn.execute("SELECT status, version FROM orders").fetchall()
    assert changes == (1,)
    assert order == [("accepted", 2)]
    results = read_topic(fresh, fresh.topics.results)
    accepted = [
        m for m in results if header(m, HEADER_COMMAND_ID) == str(accept.command_id).encode()
    ]
    assert len(accepted) == 3  # each copy is answered, so a waiting caller gets its reply...
    assert [header(m, "duplicate") for m in accepted] == [None, b"1", b"1"]  # ...flagged
    assert {decode_result(m.value() or b"").order for m in accepted} == {
        decode_result(accepted[0].value() or b"").order
    }
    assert len(read_topic(fresh, fresh.topics.events)) == 2  # created + accepted, once each
    seen = assert_exactly_once(fresh, Sent.of([create, accept]))
    assert {o.outcome for o in seen.inbox} == {"applied"}


@pytest.mark.parametrize("fault", ["crash_after_db_commit", "crash_before_kafka_commit"])
def test_a_crash_between_the_database_commit_and_the_offset_commit_repeats_nothing(
    fresh: Settings, log_dir: Path, fault: str
) -> None:
    commands = [c for _ in range(10) for c in order_script(uuid.uuid4())]
    doomed = ServiceProcess(
        "worker", fresh, log_dir, worker_metrics_port=0, worker_fault=fault, worker_fault_batch=1
    ).start()
    produce(fresh, fresh.topics.commands, [command_record(c) for c in commands])
    assert doomed.process is not None and doomed.process.wait(30) == 70
    with psycopg.connect(fresh.admin_url) as conn:
        committed_before_crash = conn.execute("SELECT count(*) FROM command_outcomes").fetchone()
    assert committed_before_crash is not None and committed_before_crash[0] > 0

    successor = ServiceProcess("worker", fresh, log_dir, worker_metrics_port=0).start()
    try:
        wait_for_outcomes(fresh, len(commands))
        time.sleep(1)
    finally:
        successor.terminate()

    assert_each_order_walked_once(fresh, commands)
    if fault == "crash_before_kafka_commit":
        # The doomed transaction's records did reach the log; read_committed hides them.
        raw = read_topic(fresh, fresh.topics.results, committed_only=False)
        assert len(raw) > len(commands)


@pytest.mark.parametrize("fault", ["silent_abort", "false_abort"])
def test_a_commit_whose_reported_outcome_is_wrong_loses_and_repeats_nothing(
    fresh: Settings, log_dir: Path, fault: str
) -> None:
    """Around a coordinator restart Kafka may report a commit that did not happen, or a failure of
    one that did; the worker believes the group's committed offsets instead."""
    commands = [c for _ in range(10) for c in order_script(uuid.uuid4())]
    worker = ServiceProcess(
        "worker", fresh, log_dir, worker_metrics_port=0, worker_fault=fault, worker_fault_batch=1
    ).start()
    try:
        produce(fresh, fresh.topics.commands, [command_record(c) for c in commands])
        wait_for_outcomes(fresh, len(commands))
        deadline = time.monotonic() + 30
        while sum(not r.duplicate for r in visible_results(fresh)) < len(commands):
            assert time.monotonic() < deadline, "an outcome never became visible"
            time.sleep(0.2)
        time.sleep(1)
    finally:
        worker.terminate()
    assert '"evt":"fault_injected"' in worker.logs()
    assert_each_order_walked_once(fresh, commands)


def test_a_retry_with_the_same_idempotency_key_gets_the_same_answer_and_sends_one_command(
    stack: Stack, api: httpx.Client, tokens: Tokens
) -> None:
    restaurant = uuid.uuid4()
    headers = tokens.headers(restaurant)
    order_id = api.post("/orders", json={"restaurant_id": str(restaurant)}, headers=headers).json()[
        "order_id"
    ]
    commands_topic = stack.settings.topics.commands
    body = {"status": "accepted", "expected_version": 1}
    keyed = {**headers, "Idempotency-Key": '"a6a1a1e4-retry-1"'}

    before = high_watermarks(stack.settings, commands_topic)
    first = api.patch(f"/orders/{order_id}/status", json=body, headers=keyed)
    again = api.patch(f"/orders/{order_id}/status", json=body, headers=keyed)
    assert high_watermarks(stack.settings, commands_topic) == before + 1
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()

    other_body = api.patch(
        f"/orders/{order_id}/status", json={"status": "cancelled"}, headers=keyed
    )
    assert other_body.status_code == 422
    assert other_body.json()["type"] == "/problems/idempotency-key-reused"

    someone_else = api.patch(  # keys are scoped to the caller
        f"/orders/{order_id}/status",
        json=body,
        headers={
            **tokens.headers(restaurant, sub="other-staff"),
            "Idempotency-Key": '"a6a1a1e4-retry-1"',
        },
    )
    assert someone_else.status_code == 409
    assert high_watermarks(stack.settings, commands_topic) == before + 2


def test_concurrent_retries_with_one_key_share_one_command(
    stack: Stack, api: httpx.Client, tokens: Tokens
) -> None:
    restaurant = uuid.uuid4()
    headers = {**tokens.headers(restaurant), "Idempotency-Key": f"create-{uuid.uuid4()}"}
    before = high_watermarks(stack.settings, stack.settings.topics.commands)

    async def retries() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post("/orders", json={"restaurant_id": str(restaurant)})
                    for _ in range(10)
                )
            )

    responses = asyncio.run(retries())
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["order_id"] for r in responses}) == 1
    assert high_watermarks(stack.settings, stack.settings.topics.commands) == before + 1


def test_an_invalid_idempotency_key_is_a_400_problem(api: httpx.Client, tokens: Tokens) -> None:
    restaurant = uuid.uuid4()
    response = api.post(
        "/orders",
        json={"restaurant_id": str(restaurant)},
        headers={**tokens.headers(restaurant), "Idempotency-Key": "x" * 300},
    )
    assert response.status_code == 400
    assert response.json()["type"] == "/problems/invalid-idempotency-key"


@pytest.fixture
def api_without_worker(fresh: Settings, log_dir: Path) -> Iterator[ServiceProcess]:
    api = ServiceProcess("api", fresh, log_dir, api_reply_timeout_s=1.0).start()
    yield api
    api.terminate()


def test_async_commands_and_timed_out_commands_are_answered_once_the_worker_returns(
    fresh: Settings, api_without_worker: ServiceProcess, log_dir: Path
) -> None:
    restaurant = uuid.uuid4()
    tokens = Tokens(fresh)
    url = f"http://127.0.0.1:{fresh.api_port}"
    with httpx.Client(base_url=url, headers=tokens.headers(restaurant), timeout=15) as client:
        order_id = str(uuid.uuid4())
        accepted = client.post(
            "/orders",
            json={"restaurant_id": str(restaurant), "order_id": order_id},
            headers={"Prefer": "respond-async"},
        )
        assert accepted.status_code == 202
        assert accepted.headers["preference-applied"] == "respond-async"
        create_location = accepted.headers["location"]
        assert client.get(create_location).json()["state"] == "pending"

        timed_out = client.patch(f"/orders/{order_id}/status", json={"status": "accepted"})
        assert timed_out.status_code == 504
        change_location = timed_out.headers["location"]
        assert change_location == f"/commands/{timed_out.json()['command_id']}"
        assert client.get(change_location).json()["state"] == "pending"

        stranger = client.get(create_location, headers=tokens.headers(uuid.uuid4(), sub="stranger"))
        assert stranger.status_code == 404

        worker = ServiceProcess("worker", fresh, log_dir, worker_metrics_port=0).start()
        try:
            deadline = time.monotonic() + 30
            while client.get(change_location).json()["state"] != "completed":
                assert time.monotonic() < deadline
                time.sleep(0.2)
        finally:
            worker.terminate()
        created = client.get(create_location).json()
        changed = client.get(change_location).json()
    assert (created["status_code"], created["response"]["status"]) == (201, "pending")
    assert (changed["status_code"], changed["response"]["status"]) == (200, "accepted")
    assert changed["response"]["version"] == 2
