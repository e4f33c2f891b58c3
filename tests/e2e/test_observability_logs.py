"""A request's `rid` (from X-Request-ID) is in the API's JSON log line for it and in the worker's
line for the command it sent, with the runbook's fields."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from tests.conftest import Stack
from tests.observability_stack import wait_for
from tests.stack import ServiceProcess, Tokens


def lines_with_rid(service: ServiceProcess, rid: str) -> list[dict[str, Any]]:
    found = []
    for line in service.logs().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("rid") == rid:
            found.append(record)
    return found


def test_a_request_id_is_in_the_api_and_the_worker_log_lines(
    stack: Stack, api: httpx.Client, tokens: Tokens
) -> None:
    restaurant = uuid.uuid4()
    headers = tokens.headers(restaurant)
    order = api.post("/orders", json={"restaurant_id": str(restaurant)}, headers=headers).json()
    rid = f"runbook-{uuid.uuid4().hex}"
    response = api.patch(
        f"/orders/{order['order_id']}/status",
        json={"status": "accepted", "expected_version": 1},
        headers={**headers, "X-Request-ID": rid},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == rid

    api_lines = wait_for(lambda: lines_with_rid(stack.api, rid), 10, "API log line")
    worker_lines = wait_for(lambda: lines_with_rid(stack.worker, rid), 10, "worker log line")

    request = api_lines[-1]
    assert request["service"] == "command-api"
    assert request["evt"] == "order_status_success"
    assert request["status_code"] == 200 and request["duration_ms"] >= 0
    assert request["order_id"] == order["order_id"]
    command = worker_lines[-1]
    assert command["service"] == "status-worker"
    assert command["evt"] == "order_status_success"
    assert command["command_id"] == request["command_id"]
    assert (command["order_id"], command["restaurant_id"], command["status"]) == (
        order["order_id"],
        str(restaurant),
        "accepted",
    )
    assert command["duration_ms"] >= 0


def test_without_x_request_id_the_api_makes_one_and_returns_it(
    stack: Stack, api: httpx.Client, tokens: Tokens
) -> None:
    restaurant = uuid.uuid4()
    response = api.post(
        "/orders", json={"restaurant_id": str(restaurant)}, headers=tokens.headers(restaurant)
    )
    rid = response.headers["x-request-id"]
    assert len(rid) >= 16
    wait_for(lambda: lines_with_rid(stack.worker, rid), 10, "worker log line with generated rid")
