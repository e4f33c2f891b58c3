"""Issue 10's API scenarios, each reproduced against the running system: an accepted command always
reaches its one outcome, a 503 never hides an applied change, keys and lookups are scoped to the
token's restaurants, and retries are recognised however the caller spells the order id."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from services.adapters.command_signing import Purpose
from services.adapters.kafka_config import assign_only_reader
from services.adapters.kafka_records import header
from services.adapters.settings import Settings
from services.command_api.http import CreateOrderBody
from services.command_api.idempotency import fingerprint
from services.core.messages import CommandResult, OrderView, Outcome, decode_command
from services.core.statuses import OrderStatus
from services.core.topics import HEADER_COMMAND_ID
from tests.conftest import Stack
from tests.faults import TcpProxy
from tests.stack import ServiceProcess, Tokens, isolated_settings
from tests.topics import produce, read_topic, signed


@pytest.fixture
def fresh(base_settings: Settings) -> Iterator[Settings]:
    with isolated_settings(base_settings, api_reply_timeout_s=2.0) as settings:
        yield settings


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def published_command_ids(settings: Settings) -> list[str]:
    return [
        (header(m, HEADER_COMMAND_ID) or b"").decode()
        for m in read_topic(settings, settings.topics.commands, committed_only=False)
    ]


def test_a_claim_left_unpublished_by_a_dead_api_is_published_by_the_retry(
    api: httpx.Client, tokens: Tokens, stack: Stack
) -> None:
    """Scenario 2: the claim was committed, then the API died before publishing. The retry with
    the same key must publish the claimed command (same command and order id), not answer from a
    claim whose command never reached Kafka."""
    sub, restaurant = f"pos-{uuid.uuid4().hex[:8]}", uuid.uuid4()
    body = CreateOrderBody(restaurant_id=restaurant)
    command_id, order_id, key = uuid.uuid4(), uuid.uuid4(), "claimed-then-died"
    with stack.db() as conn:
        conn.execute(
            "INSERT INTO command_requests (command_id, caller, order_id, idempotency_key, "
            "fingerprint, expires_at) VALUES (%s, %s, %s, %s, %s, now() + interval '1 hour')",
            (
                command_id,
                f"service_role:{sub}",
                order_id,
                key,
                fingerprint("POST", "/orders", body.model_dump_json()),
            ),
        )
    retry = api.post(
        "/orders",
        json={"restaurant_id": str(restaurant)},
        headers={**bearer(tokens.service(sub=sub)), "Idempotency-Key": key},
    )
    assert retry.status_code == 201, retry.text
    assert retry.json()["order_id"] == str(order_id)
    assert retry.headers["x-command-id"] == str(command_id)


def test_a_change_published_before_the_database_failed_is_not_answered_503(
    fresh: Settings, log_dir: Path
) -> None:
    """Scenario 3: published, no outcome in time, then PostgreSQL unreachable. A 503 would tell
    the caller nothing happened, and its retry would apply the change twice."""
    port = int(psycopg.conninfo.conninfo_to_dict(fresh.database_url)["port"])
    proxy = TcpProxy("127.0.0.1", port)
    through_proxy = psycopg.conninfo.make_conninfo(fresh.database_url, port=proxy.port)
    api = ServiceProcess("api", fresh, log_dir, database_url=through_proxy).start()
    restaurant = uuid.uuid4()
    url = f"http://127.0.0.1:{fresh.api_port}"
    try:
        with httpx.Client(base_url=url, headers=bearer(Tokens(fresh).pos(restaurant))) as client:
            proxy.cut()  # no worker runs either: the outcome cannot come in time
            answer = client.patch(
                f"/orders/{uuid.uuid4()}/status", json={"status": "accepted"}, timeout=30
            )
            proxy.restore()
    finally:
        api.terminate()
        proxy.close()
    command_id = answer.headers.get("x-command-id")
    assert command_id in published_command_ids(fresh), answer.text
    assert answer.status_code == 504, answer.text
    assert answer.json()["type"] == "/problems/outcome-timeout"


def test_tokens_of_one_sub_for_different_restaurants_share_neither_keys_nor_commands(
    api: httpx.Client, tokens: Tokens
) -> None:
    """Scenario 6: the same person (sub) with a token per restaurant."""
    sub, first, second = f"staff-{uuid.uuid4().hex[:8]}", uuid.uuid4(), uuid.uuid4()
    for_first, for_second = tokens.headers(first, sub=sub), tokens.headers(second, sub=sub)
    orders = []
    for restaurant, headers in ((first, for_first), (second, for_second)):
        created = api.post("/orders", json={"restaurant_id": str(restaurant)}, headers=headers)
        assert created.status_code == 201, created.text
        orders.append(created.json()["order_id"])
    key = {"Idempotency-Key": "same-key-other-restaurant"}
    one = api.patch(
        f"/orders/{orders[0]}/status", json={"status": "accepted"}, headers=for_first | key
    )
    other = api.patch(
        f"/orders/{orders[1]}/status", json={"status": "rejected"}, headers=for_second | key
    )
    assert one.status_code == 200, one.text
    assert other.status_code == 200, other.text
    assert other.json()["status"] == "rejected"
    looked_up = api.get(f"/commands/{one.headers['x-command-id']}", headers=for_second)
    assert looked_up.status_code == 404, looked_up.text


def test_a_retry_spelling_the_order_id_in_upper_case_is_the_same_request(
    api: httpx.Client, tokens: Tokens
) -> None:
    """Scenario 9: the fingerprint is of the request as meant, not of the raw path."""
    restaurant = uuid.uuid4()
    headers = tokens.headers(restaurant)
    created = api.post("/orders", json={"restaurant_id": str(restaurant)}, headers=headers)
    order_id = created.json()["order_id"]
    keyed = headers | {"Idempotency-Key": f"case-{order_id}"}
    first = api.patch(f"/orders/{order_id}/status", json={"status": "accepted"}, headers=keyed)
    retry = api.patch(
        f"/orders/{order_id.upper()}/status", json={"status": "accepted"}, headers=keyed
    )
    assert first.status_code == 200, first.text
    assert retry.status_code == 200, retry.text
    assert retry.headers["x-command-id"] == first.headers["x-command-id"]


@pytest.mark.parametrize("reason", ["bell\x07", "esc\x1b[31m", "rtl\u202eoverride", "iso\u2066"])
def test_a_reason_with_control_or_bidi_characters_is_refused(
    api: httpx.Client, tokens: Tokens, reason: str
) -> None:
    """Scenario 9: such a reason would reach the staff's screens and the logs as it is."""
    restaurant = uuid.uuid4()
    headers = tokens.headers(restaurant)
    created = api.post("/orders", json={"restaurant_id": str(restaurant)}, headers=headers)
    order_id = created.json()["order_id"]
    refused = api.patch(
        f"/orders/{order_id}/status",
        json={"status": "rejected", "reason": reason},
        headers=headers,
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["type"] == "/problems/validation-error"
    order = api.get(f"/orders/{order_id}", headers=headers).json()
    assert order["status"] == "pending"


def _first_command(settings: Settings, deadline_s: float = 20) -> Any:
    consumer = Consumer(assign_only_reader(settings, "test-commands"))
    topic = settings.topics.commands
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    try:
        stop_at = time.monotonic() + deadline_s
        while time.monotonic() < stop_at:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                return decode_command(message.value())
        raise TimeoutError("no command published")
    finally:
        consumer.close()


def test_an_undecodable_result_of_an_applied_change_is_answered_from_the_store(
    base_settings: Settings, log_dir: Path
) -> None:
    """Scenario 9: the outcome is stored; only its copy on the results topic is unreadable."""
    with isolated_settings(base_settings, api_reply_timeout_s=15.0) as settings:
        api = ServiceProcess("api", settings, log_dir).start()
        restaurant, order_id = uuid.uuid4(), uuid.uuid4()
        url = f"http://127.0.0.1:{settings.api_port}/orders/{order_id}/status"
        answers: list[httpx.Response] = []
        token = Tokens(settings).pos(restaurant)
        sending = threading.Thread(
            target=lambda: answers.append(
                httpx.patch(url, json={"status": "accepted"}, headers=bearer(token), timeout=30)
            )
        )
        try:
            sending.start()
            command = _first_command(settings)
            order = OrderView(
                order_id=order_id,
                restaurant_id=restaurant,
                status=OrderStatus.ACCEPTED,
                version=2,
                updated_at=datetime.now(UTC),
            )
            result = CommandResult(
                command_id=command.command_id,
                order_id=order_id,
                command_type="change_status",
                outcome=Outcome.APPLIED,
                order=order,
                processed_at=datetime.now(UTC),
            )
            with psycopg.connect(settings.admin_url, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO command_outcomes (command_id, order_id, restaurant_id, "
                    "command_type, outcome, result, actor_sub, actor_role) "
                    "VALUES (%s, %s, %s, 'change_status', 'applied', %s, %s, 'service_role')",
                    (
                        command.command_id,
                        order_id,
                        restaurant,
                        result.model_dump_json(),
                        command.actor.sub,
                    ),
                )
            record = signed(  # by a worker's key: undecodable, not forged
                (
                    str(order_id).encode(),
                    b"\xff not a result",
                    [(HEADER_COMMAND_ID, str(command.command_id).encode())],
                ),
                purpose=Purpose.RESULT,
            )
            produce(settings, settings.topics.results, [record])
            sending.join(30)
        finally:
            api.terminate()
    assert answers, "no answer"
    assert answers[0].status_code == 200, answers[0].text
    assert answers[0].json()["version"] == 2
