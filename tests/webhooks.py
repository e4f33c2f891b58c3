"""Test support for the notifier: CloudEvents of the events contract put straight on the events
topic, real local HTTP receivers that record, fail or hang, and bounded waiting."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import Producer

from services.adapters import kafka_config
from services.adapters.settings import Settings
from services.core.events import (
    EVENT_SOURCE,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_STATUS_CHANGED,
    OrderChangeData,
    OrderCloudEvent,
    encode_cloud_event,
)
from services.core.statuses import OrderStatus
from services.notifier.receiver import Answer, Delivery, receiver_in_thread

STATUSES = ["pending", "accepted", "preparing", "ready", "completed"]


def cloud_event(order_id: uuid.UUID, restaurant_id: uuid.UUID, version: int) -> bytes:
    """An event as the worker publishes it (services.core.events, the contract)."""
    command_id = uuid.uuid4()
    return encode_cloud_event(
        OrderCloudEvent(
            specversion="1.0",
            id=str(command_id),
            source=EVENT_SOURCE,
            type=EVENT_TYPE_CREATED if version == 1 else EVENT_TYPE_STATUS_CHANGED,
            subject=str(order_id),
            time=datetime.now(UTC),
            datacontenttype="application/json",
            data=OrderChangeData(
                order_id=order_id,
                restaurant_id=restaurant_id,
                from_status=None if version == 1 else OrderStatus(STATUSES[version - 2]),
                to_status=OrderStatus(STATUSES[version - 1]),
                version=version,
                command_id=command_id,
                actor="test",
                reason=None,
                rid="test",
            ),
        )
    )


class EventWriter:
    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topics.events
        self.producer = Producer({**kafka_config.client(settings), "acks": "all", "linger.ms": 2})

    def order_events(
        self, restaurant_id: uuid.UUID, order_id: uuid.UUID, versions: range
    ) -> list[str]:
        ids = []
        for version in versions:
            value = cloud_event(order_id, restaurant_id, version)
            ids.append(json.loads(value)["id"])
            self.producer.produce(
                self.topic,
                key=str(order_id).encode(),
                value=value,
                headers=[("content-type", b"application/cloudevents+json")],
            )
            self.producer.poll(0)
        return ids

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


@dataclass
class Receiver:
    """Records every request; `answer` decides the reply (change it while running)."""

    answer: Callable[[Delivery], Answer | None] = lambda _d: Answer(204)
    hang: threading.Event = field(default_factory=threading.Event)
    received: list[Delivery] = field(default_factory=list)
    answered: list[tuple[Delivery, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle(self, delivery: Delivery) -> Answer:
        with self.lock:
            self.received.append(delivery)
        if self.hang.is_set():
            await asyncio.sleep(3600)
        answer = self.answer(delivery) or Answer(204)
        with self.lock:
            self.answered.append((delivery, answer.status))
        return answer

    def ok_events(self) -> list[dict[str, object]]:
        with self.lock:
            return [json.loads(d.body) for d, status in self.answered if 200 <= status < 300]


@contextmanager
def running_receiver(receiver: Receiver) -> Iterator[str]:
    with receiver_in_thread(receiver.handle) as port:
        yield f"http://127.0.0.1:{port}/hooks"


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Polls `check` for at most `timeout` s (a bound against hanging, not a figure under test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {what}")


def first_receipt_versions(events: list[dict[str, object]]) -> dict[str, list[int]]:
    """Per order, the versions in the order they were first received successfully."""
    seen: set[str] = set()
    per_order: dict[str, list[int]] = {}
    for event in events:
        if event["id"] in seen:
            continue
        seen.add(str(event["id"]))
        data = event["data"]
        assert isinstance(data, dict)
        per_order.setdefault(data["order_id"], []).append(int(data["version"]))
    return per_order
