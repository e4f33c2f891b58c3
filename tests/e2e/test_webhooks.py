"""Webhooks through the whole system: orders changed through the API, applied by the worker,
published as CloudEvents, delivered by the notifier to a local receiver, signed and in order."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
from standardwebhooks.webhooks import Webhook

from services.adapters.settings import Settings
from services.core.events import decode_cloud_event
from tests.stack import ServiceProcess, Tokens, free_port, isolated_settings
from tests.webhooks import Receiver, running_receiver, wait_until


def test_an_orders_changes_reach_a_registered_receiver_signed_and_in_order(
    base_settings: Settings, log_dir: Path
) -> None:
    receiver = Receiver()
    with (
        isolated_settings(base_settings, webhook_allowed_cidrs="127.0.0.0/8") as settings,
        running_receiver(receiver) as url,
    ):
        processes = [
            ServiceProcess("worker", settings, log_dir, worker_metrics_port=free_port()).start(),
            ServiceProcess("api", settings, log_dir).start(),
            ServiceProcess(
                "notifier", settings, log_dir, notifier_metrics_port=free_port()
            ).start(),
        ]
        try:
            restaurant = uuid.uuid4()
            headers = Tokens(settings).headers(restaurant, sub="e2e-webhooks")
            with httpx.Client(
                base_url=f"http://127.0.0.1:{settings.api_port}", headers=headers
            ) as api:
                endpoint = api.post(
                    "/webhooks/endpoints", json={"restaurant_id": str(restaurant), "url": url}
                ).json()
                order = api.post("/orders", json={"restaurant_id": str(restaurant)}).json()
                for status in ("accepted", "preparing", "ready"):
                    changed = api.patch(
                        f"/orders/{order['order_id']}/status", json={"status": status}
                    )
                    assert changed.status_code == 200, changed.text
                wait_until(lambda: len(receiver.ok_events()) >= 4, 60, "four deliveries")
                time.sleep(0.5)  # nothing more arrives
                attempts = api.get(f"/webhooks/endpoints/{endpoint['id']}/attempts").json()
        finally:
            for process in reversed(processes):
                process.terminate()
    events = [decode_cloud_event(d.body) for d in receiver.received]
    assert [e.data.to_status.value for e in events] == ["pending", "accepted", "preparing", "ready"]
    assert [e.data.version for e in events] == [1, 2, 3, 4]
    for delivery, event in zip(receiver.received, events, strict=True):
        assert delivery.headers["webhook-id"] == event.id
        Webhook(endpoint["secret"]).verify(delivery.body, delivery.headers, json_parse=False)
    assert sorted(a["event_id"] for a in attempts) == sorted(e.id for e in events)
