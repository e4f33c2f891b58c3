"""The demo's webhook part: a receiver in the demo process (verifying every signature), registered
as an endpoint of one restaurant; afterwards, what arrived there (`orderstatus demo`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from uuid import UUID

import httpx

from services.notifier.receiver import Answer, Delivery, describe, receiver_in_thread

WAIT_FOR_DELIVERIES_S = 5.0


@dataclass
class DemoReceiver:
    secret: str = ""
    lines: list[tuple[bool, str]] = field(default_factory=list)

    async def handle(self, delivery: Delivery) -> Answer:
        ok, line = describe(delivery, self.secret)
        self.lines.append((ok, line))
        return Answer(204 if ok else 401)


@contextlib.asynccontextmanager
async def webhook_receiver(
    client: httpx.AsyncClient, restaurant_id: UUID
) -> AsyncIterator[DemoReceiver]:
    """Registers a local receiver for the restaurant; prints its deliveries at the end."""
    receiver = DemoReceiver()
    with receiver_in_thread(receiver.handle) as port:
        url = f"http://127.0.0.1:{port}/webhooks"
        response = await client.post(
            "/webhooks/endpoints",
            json={"restaurant_id": str(restaurant_id), "url": url, "description": "demo"},
        )
        if response.status_code != 201:
            print(f"webhooks: endpoint not registered: {response.status_code} {response.text}")
            yield receiver
            return
        endpoint = response.json()
        receiver.secret = endpoint["secret"]
        print(f"webhooks: receiver {url} registered as endpoint {endpoint['id'][:8]}", flush=True)
        try:
            yield receiver
        finally:
            deadline = time.monotonic() + WAIT_FOR_DELIVERIES_S
            settled = -1
            while time.monotonic() < deadline and settled != len(receiver.lines):
                settled = len(receiver.lines)
                await asyncio.sleep(1.0)
            for _ok, line in receiver.lines[:8]:
                print(f"webhooks: {line}")
            verified = sum(ok for ok, _ in receiver.lines)
            print(
                f"webhooks: {len(receiver.lines)} deliveries, {verified} signatures verified"
                + ("" if receiver.lines else " (is the notifier running? make up starts it)")
            )
            await client.delete(f"/webhooks/endpoints/{endpoint['id']}")
