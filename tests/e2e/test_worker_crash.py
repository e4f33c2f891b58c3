"""kill -9 of the worker while commands are in flight loses no accepted command and duplicates none:
every command the API answered for has one result, one event and its rows (tests/exactly_once.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.adapters.kafka_records import header
from services.adapters.settings import Settings
from services.command_api.answers import COMMAND_ID_HEADER
from services.core.topics import HEADER_COMMAND_ID
from tests.exactly_once import Sent, assert_exactly_once
from tests.stack import ServiceProcess, Tokens, isolated_settings
from tests.topics import read_topic

STATUSES = ["accepted", "preparing", "ready", "completed"]


@pytest.fixture(scope="module")
def crash_settings(base_settings: Settings) -> Iterator[Settings]:
    with isolated_settings(base_settings, api_reply_timeout_s=3.0) as settings:
        yield settings


async def walk(client: httpx.AsyncClient, order_id: str, sent: dict[str, str]) -> list[int]:
    """Moves one order to completed; after a 504 it waits for the accepted command to land.
    Records each command the API answered for (its X-Command-ID) in `sent`."""
    codes = []
    for version, status in enumerate(STATUSES, start=2):
        response = await client.patch(f"/orders/{order_id}/status", json={"status": status})
        codes.append(response.status_code)
        sent[response.headers[COMMAND_ID_HEADER]] = order_id
        if response.status_code == 504:
            deadline = time.monotonic() + 60
            while (await client.get(f"/orders/{order_id}")).json()["version"] < version:
                assert time.monotonic() < deadline, "accepted command never applied"
                await asyncio.sleep(0.2)
        else:
            assert response.status_code == 200, response.text
    return codes


def test_killing_the_worker_mid_flight_loses_and_duplicates_nothing(
    crash_settings: Settings, log_dir: Path
) -> None:
    worker = ServiceProcess("worker", crash_settings, log_dir, worker_metrics_port=0).start()
    api = ServiceProcess("api", crash_settings, log_dir).start()
    restaurant = uuid.uuid4()
    headers = {"Authorization": f"Bearer {Tokens(crash_settings).staff(restaurant)}"}
    url = f"http://127.0.0.1:{crash_settings.api_port}"
    replacement = ServiceProcess("worker", crash_settings, log_dir, worker_metrics_port=0)
    sent: dict[str, str] = {}  # command id -> order id, from every answer's X-Command-ID
    created: list[str] = []

    async def scenario() -> list[list[int]]:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
            creations = await asyncio.gather(
                *(
                    client.post("/orders", json={"restaurant_id": str(restaurant)})
                    for _ in range(30)
                )
            )
            for response in creations:
                assert response.status_code == 201, response.text
                created.append(response.json()["order_id"])
                sent[response.headers[COMMAND_ID_HEADER]] = created[-1]
            walks = asyncio.gather(*(walk(client, o, sent) for o in created))
            await asyncio.sleep(0.3)
            worker.kill()
            await asyncio.sleep(1.0)
            replacement.start(wait=False)
            return await walks

    try:
        codes = asyncio.run(scenario())
    finally:
        api.terminate()
        replacement.terminate()
        worker.kill()

    print("response codes:", Counter(code for walk_codes in codes for code in walk_codes))
    assert all(len(c) == 4 for c in codes)
    before_kill = worker.logs().count('"evt":"order_status_success"')
    # The 30 creations are answered before the walks start, so the kill landed mid-stream only
    # if some changes were applied before it (more than 30) and some were left for the
    # replacement.
    assert 30 < before_kill < 150, f"the kill did not land mid-stream ({before_kill} applied)"
    assert '"evt":"order_status_success"' in replacement.logs(), "the replacement applied nothing"
    settings = crash_settings
    published = Counter(
        (header(m, HEADER_COMMAND_ID) or b"").decode()
        for m in read_topic(settings, settings.topics.commands)
    )
    assert len(sent) == 30 + 30 * 4
    assert published == dict.fromkeys(sent, 1), "the API published what it answered for, once"
    seen = assert_exactly_once(settings, Sent(sent, frozenset(created)))
    assert Counter(o.outcome for o in seen.inbox) == {"applied": len(sent)}
    assert {(o.status, o.version) for o in seen.orders} == {("completed", 5)}
