"""Settled conflicts refused by the API before publishing (dispatch._settled_refusal), over HTTP
against the running API and worker: an expected_version below the order's, or any change of a
final order. The answer is the worker's conflict, no command reaches Kafka, and nothing else
changes (keys, other tenants, later changes)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.conftest import Stack
from tests.e2e.test_order_lifecycle import PROBLEM, create_order
from tests.stack import Tokens
from tests.topics import high_watermarks


def patch(
    api: httpx.Client, order_id: Any, headers: dict[str, str], status: str, version: int
) -> httpx.Response:
    body = {"status": status, "expected_version": version}
    return api.patch(f"/orders/{order_id}/status", json=body, headers=headers)


def commands_in_kafka(stack: Stack) -> int:
    return high_watermarks(stack.settings, stack.settings.topics.commands)


def new_order(api: httpx.Client, tokens: Tokens) -> tuple[Any, dict[str, str]]:
    """A pending order of a new restaurant, and its staff's headers."""
    restaurant = uuid.uuid4()
    return create_order(api, tokens, restaurant)["order_id"], tokens.headers(restaurant)


def test_a_stale_expectation_is_refused_without_a_command_and_changes_nothing(
    api: httpx.Client, tokens: Tokens, stack: Stack
) -> None:
    order_id, headers = new_order(api, tokens)
    assert patch(api, order_id, headers, "accepted", 1).status_code == 200  # seen at version 2

    published = commands_in_kafka(stack)
    stale = patch(api, order_id, headers, "accepted", 1)
    assert stale.status_code == 409
    assert stale.headers["content-type"] == PROBLEM
    body = stale.json()
    assert body["type"] == "/problems/stale-version"
    assert (body["current_status"], body["current_version"]) == ("accepted", 2)
    assert body["detail"] == "expected version 1, order is at 2"
    assert "command_id" not in body and "x-command-id" not in stale.headers
    assert commands_in_kafka(stack) == published  # answered without a Kafka round trip

    moved_on = patch(api, order_id, headers, "preparing", 2)
    assert moved_on.status_code == 200 and moved_on.json()["version"] == 3
    with stack.db() as conn:
        history = conn.execute(
            "SELECT to_status FROM order_status_events WHERE order_id = %s ORDER BY version",
            (order_id,),
        ).fetchall()
    assert history == [("accepted",), ("preparing",)]


def test_a_final_order_is_answered_without_a_command(
    api: httpx.Client, tokens: Tokens, stack: Stack
) -> None:
    order_id, headers = new_order(api, tokens)
    for version, status in enumerate(["accepted", "preparing", "ready", "completed"], start=1):
        assert patch(api, order_id, headers, status, version).status_code == 200

    published = commands_in_kafka(stack)
    again = patch(api, order_id, headers, "cancelled", 5)  # the current version, a final status
    unversioned = api.patch(f"/orders/{order_id}/status", json={"status": "ready"}, headers=headers)
    for refused in (again, unversioned):
        assert refused.status_code == 409
        body = refused.json()
        assert body["type"] == "/problems/invalid-transition"
        assert (body["current_status"], body["current_version"]) == ("completed", 5)
    assert again.json()["detail"] == "cannot go from completed to cancelled"
    assert commands_in_kafka(stack) == published


def test_another_restaurants_caller_gets_the_workers_403_not_the_conflict(
    api: httpx.Client, tokens: Tokens, stack: Stack
) -> None:
    restaurant = uuid.uuid4()
    order_id = create_order(api, tokens, restaurant)["order_id"]
    assert patch(api, order_id, tokens.headers(restaurant), "accepted", 1).status_code == 200

    published = commands_in_kafka(stack)
    stranger = tokens.headers(uuid.uuid4(), sub="staff-elsewhere")
    refused = patch(api, order_id, stranger, "preparing", 1)
    assert refused.status_code == 403
    assert "current_version" not in refused.json()  # nothing of the order shows
    assert commands_in_kafka(stack) == published + 1  # the worker decided it


def test_a_retry_with_its_key_is_answered_from_the_first_request_not_refused(
    api: httpx.Client, tokens: Tokens
) -> None:
    restaurant = uuid.uuid4()
    headers = tokens.headers(restaurant) | {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    order_id = create_order(api, tokens, restaurant)["order_id"]
    first = patch(api, order_id, headers, "accepted", 1)
    assert first.status_code == 200
    retry = patch(api, order_id, headers, "accepted", 1)  # its expectation is stale by now
    assert retry.status_code == 200
    assert retry.headers["x-command-id"] == first.headers["x-command-id"]
    assert retry.json()["version"] == 2
