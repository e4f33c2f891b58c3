"""The consumer printed in docs/consuming-events.md works as written: run against the events the
real worker published, it handles one order's events once each, in version order, and skips a
redelivered copy."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx

from services.adapters import kafka_config
from services.adapters.kafka_records import header
from tests.conftest import Stack
from tests.stack import Tokens
from tests.topics import produce, read_topic

DOC = Path(__file__).resolve().parents[2] / "docs" / "consuming-events.md"
WALK = ["accepted", "preparing", "ready", "completed"]


def documented_consumer() -> Any:
    section = DOC.read_text().split("## A consumer in Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "no python block in the consumer section"
    namespace: dict[str, Any] = {"__name__": "consuming_events_doc"}
    exec(compile(match.group(1), str(DOC), "exec"), namespace)
    return namespace["consume"]


def test_the_documented_consumer_handles_each_change_once_in_order(
    api: httpx.Client, tokens: Tokens, stack: Stack
) -> None:
    restaurant = uuid.uuid4()
    headers = tokens.headers(restaurant)
    created = api.post("/orders", json={"restaurant_id": str(restaurant)}, headers=headers)
    assert created.status_code == 201, created.text
    order_id = created.json()["order_id"]
    for version, status in enumerate(WALK, start=2):
        body = {"status": status, "expected_version": version - 1}
        response = api.patch(f"/orders/{order_id}/status", json=body, headers=headers)
        assert response.status_code == 200, response.text

    topic = stack.settings.topics.events
    ours = [m for m in read_topic(stack.settings, topic) if m.key() == order_id.encode()]
    assert len(ours) == 5
    assert all(header(m, "content-type") == b"application/cloudevents+json" for m in ours)
    # A redelivered copy, as a consumer sees after a crash before its offset commit.
    copy = ours[2]
    produce(stack.settings, topic, [(copy.key(), copy.value(), [])], partition=copy.partition())

    handled: list[dict[str, Any]] = []
    documented_consumer()(
        kafka_config.client(stack.settings),
        topic,
        f"doc-consumer-{uuid.uuid4().hex[:8]}",
        handled.append,
        idle_s=8,
    )

    mine = [e for e in handled if e["subject"] == order_id]
    assert [e["data"]["version"] for e in mine] == [1, 2, 3, 4, 5]
    assert [e["data"]["to_status"] for e in mine] == ["pending", *WALK]
    assert [e["type"].rsplit(".", 2)[-2] for e in mine] == ["created"] + ["status_changed"] * 4
    assert len({e["id"] for e in mine}) == 5
