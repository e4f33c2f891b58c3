"""The staff feeds over HTTP against a running API and worker: `GET /orders` (open orders by status
and age, keyset pages) and `GET /restaurants/{id}/events/stream` (Server-Sent Events from the events
topic, resumable with Last-Event-ID, on any API process), both only for those who may act for the
restaurant, and many streams on one Kafka consumer per API process."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from services.adapters.tenancy import revoke_staff
from services.command_api.auth import mint_token
from services.core.events import decode_cloud_event
from tests.conftest import Stack
from tests.stack import ServiceProcess, Tokens, free_port

WALK = ["accepted", "preparing", "ready", "completed"]


@pytest.fixture(scope="module")
def feed_api(stack: Stack, log_dir: Path) -> Iterator[str]:
    """A second API process on the same database and topics: short heartbeats (membership is
    re-checked on each), a small buffer, and the other end of a cross-process resume."""
    process = ServiceProcess(
        "api", stack.settings, log_dir, api_port=free_port(), api_event_stream_heartbeat_s=1.0
    ).start()
    yield f"http://127.0.0.1:{process.settings.api_port}"
    process.terminate()


# ---- helpers --------------------------------------------------------------------------------


def create(api: httpx.Client, headers: dict[str, str], restaurant: uuid.UUID) -> str:
    response = api.post("/orders", json={"restaurant_id": str(restaurant)}, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["order_id"])


def move(api: httpx.Client, headers: dict[str, str], order_id: str, *statuses: str) -> None:
    for status in statuses:
        response = api.patch(f"/orders/{order_id}/status", json={"status": status}, headers=headers)
        assert response.status_code == 200, response.text


@dataclass
class Frame:
    id: str | None = None
    data: str | None = None
    comments: list[str] = field(default_factory=list)


class Stream:
    """An SSE client over an httpx streaming response: frames as they arrive."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.iter_lines()
        self.last_id: str | None = None

    def frame(self) -> Frame:
        frame = Frame()
        for line in self.lines:
            if line == "":
                if frame.id is not None:
                    self.last_id = frame.id
                return frame
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                frame.comments.append(value)
            elif name == "id":
                frame.id = value
            elif name == "data":
                frame.data = value
        raise EOFError("stream ended")

    def events(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        events: list[dict[str, Any]] = []
        while len(events) < count:
            assert time.monotonic() < deadline, f"only {len(events)} of {count} events"
            frame = self.frame()
            if frame.data is not None:
                events.append(decode_cloud_event(frame.data.encode()).model_dump(mode="json"))
        return events

    def connected(self) -> None:
        """Past the preamble (`retry`, any catch-up, then the live position)."""
        while self.frame().id is None:
            pass


def open_stream(
    client: httpx.Client, restaurant: uuid.UUID, headers: dict[str, str], **more: str
) -> Any:
    return client.stream(
        "GET",
        f"/restaurants/{restaurant}/events/stream",
        headers={**headers, **more},
        timeout=httpx.Timeout(30),
    )


def versions(events: list[dict[str, Any]], order_id: str) -> list[int]:
    return [e["data"]["version"] for e in events if e["subject"] == order_id]


# ---- GET /orders ----------------------------------------------------------------------------


def test_open_orders_by_status_and_age_page_by_page(
    api: httpx.Client, tokens: Tokens, stack: Stack
) -> None:
    restaurant = uuid.uuid4()
    headers = tokens.headers(restaurant)
    o = [create(api, headers, restaurant) for _ in range(7)]
    move(api, headers, o[0], "accepted", "preparing")
    move(api, headers, o[2], "accepted")
    move(api, headers, o[4], "accepted")
    move(api, headers, o[6], "cancelled")
    other = uuid.uuid4()
    create(api, tokens.headers(other), other)  # another restaurant's open order: never listed

    seen, pages, cursor = [], 0, None
    while True:
        params: dict[str, Any] = {"restaurant_id": str(restaurant), "limit": 2}
        if cursor:
            params["cursor"] = cursor
        response = api.get("/orders", params=params, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        seen += [(row["order_id"], row["status"]) for row in body["orders"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    # By status (as the index sorts them), then oldest first; closed orders left out.
    assert seen == [
        (o[2], "accepted"), (o[4], "accepted"),
        (o[1], "pending"), (o[3], "pending"), (o[5], "pending"),
        (o[0], "preparing"),
    ]  # fmt: skip
    assert pages == 3

    chosen = api.get(
        "/orders",
        params=[("restaurant_id", str(restaurant)), ("status", "preparing"), ("status", "pending")],
        headers=headers,
    ).json()
    assert [row["order_id"] for row in chosen["orders"]] == [o[1], o[3], o[5], o[0]]
    cancelled = api.get(
        "/orders", params={"restaurant_id": str(restaurant), "status": "cancelled"}, headers=headers
    ).json()
    assert [(row["order_id"], row["version"]) for row in cancelled["orders"]] == [(o[6], 2)]
    assert set(cancelled["orders"][0]) == {
        "order_id", "restaurant_id", "status", "version", "created_at", "updated_at",
    }  # fmt: skip


def test_listing_is_only_for_those_who_may_act_for_the_restaurant(
    api: httpx.Client, tokens: Tokens
) -> None:
    restaurant, other = uuid.uuid4(), uuid.uuid4()
    create(api, tokens.headers(restaurant), restaurant)
    params = {"restaurant_id": str(restaurant)}
    outsider = api.get("/orders", params=params, headers=tokens.headers(other, sub="outsider"))
    assert outsider.status_code == 403
    assert outsider.headers["content-type"] == "application/problem+json"
    assert outsider.json()["type"] == "/problems/restaurant-forbidden"
    pos_elsewhere = {"Authorization": f"Bearer {tokens.pos(other)}"}
    assert api.get("/orders", params=params, headers=pos_elsewhere).status_code == 403
    service = {"Authorization": f"Bearer {tokens.service()}"}
    assert len(api.get("/orders", params=params, headers=service).json()["orders"]) == 1
    assert api.get("/orders", params=params).status_code == 401


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"restaurant_id": "not-a-uuid"},
        {"cursor": "garbage"},
        {"cursor": "WyJzaGlwcGVkIiwiMjAyNi0xMi0wMVQwMDowMDowMCswMDowMCIsIngiXQ"},
        {"status": "shipped"},
        {"limit": "0"},
        {"limit": "201"},
    ],
    ids=lambda p: ",".join(p) or "nothing",
)
def test_a_bad_listing_request_is_a_problem(
    api: httpx.Client, tokens: Tokens, params: dict[str, str]
) -> None:
    restaurant = uuid.uuid4()
    query = {"restaurant_id": str(restaurant), **params} if params else {}
    response = api.get("/orders", params=query, headers=tokens.headers(restaurant))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


# ---- the event stream -----------------------------------------------------------------------


def test_a_stream_carries_its_restaurants_events_in_order_and_nothing_else(
    api: httpx.Client, tokens: Tokens, stack: Stack
) -> None:
    restaurant, other = uuid.uuid4(), uuid.uuid4()
    headers = tokens.headers(restaurant)
    with httpx.Client(base_url=stack.url) as client, open_stream(client, restaurant, headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        stream = Stream(r)
        stream.connected()
        create(api, tokens.headers(other), other)
        order_id = create(api, headers, restaurant)
        move(api, headers, order_id, *WALK)
        events = stream.events(5)
    assert versions(events, order_id) == [1, 2, 3, 4, 5]
    assert {e["data"]["restaurant_id"] for e in events} == {str(restaurant)}
    assert [e["data"]["to_status"] for e in events] == ["pending", *WALK]
    assert events[0]["type"] == "com.orderstatus.order.created.v1"
    assert stream.last_id is not None and re.fullmatch(r"\d+:\d+(,\d+:\d+)*", stream.last_id)


def test_a_stream_resumes_with_last_event_id_on_any_api_process(
    api: httpx.Client, tokens: Tokens, stack: Stack, feed_api: str
) -> None:
    restaurant = uuid.uuid4()
    headers = tokens.headers(restaurant)
    with httpx.Client(base_url=stack.url) as client, open_stream(client, restaurant, headers) as r:
        stream = Stream(r)
        stream.connected()
        first = create(api, headers, restaurant)
        move(api, headers, first, "accepted")
        before = stream.events(2)
        resume_at = stream.last_id
    assert resume_at is not None
    # While no stream is open: the rest of the first order and a second one.
    move(api, headers, first, "preparing", "ready")
    second = create(api, headers, restaurant)

    with (
        httpx.Client(base_url=feed_api) as client,
        open_stream(client, restaurant, headers, **{"Last-Event-ID": resume_at}) as r,
    ):
        assert r.status_code == 200
        stream = Stream(r)
        missed = stream.events(3)
        move(api, headers, second, "accepted")
        live = stream.events(1)
    assert versions(before, first) == [1, 2]
    assert versions(missed, first) == [3, 4] and versions(missed, second) == [1]
    assert versions(live, second) == [2]
    ids = [e["id"] for e in before + missed + live]
    assert len(ids) == len(set(ids)) == 6


def test_a_quiet_stream_still_gets_a_resume_position(
    api: httpx.Client, tokens: Tokens, stack: Stack, feed_api: str
) -> None:
    """Connected, no event yet, gone: it resumes where it connected, so it misses nothing."""
    restaurant = uuid.uuid4()
    headers = tokens.headers(restaurant)
    with httpx.Client(base_url=feed_api) as client, open_stream(client, restaurant, headers) as r:
        stream = Stream(r)
        stream.connected()
        assert stream.frame().comments == ["keep-alive"]  # heartbeat 1 s on this process
        resume_at = stream.last_id
    order_id = create(api, headers, restaurant)
    assert resume_at is not None
    with (
        httpx.Client(base_url=stack.url) as client,
        open_stream(client, restaurant, headers, **{"Last-Event-ID": resume_at}) as r,
    ):
        assert versions(Stream(r).events(1), order_id) == [1]


def test_a_stream_is_only_for_those_who_may_act_for_the_restaurant(
    tokens: Tokens, stack: Stack
) -> None:
    restaurant, other = uuid.uuid4(), uuid.uuid4()
    tokens.grant("staff-test", restaurant)
    with httpx.Client(base_url=stack.url) as client:
        for headers in (
            tokens.headers(other, sub="outsider"),
            {"Authorization": f"Bearer {tokens.pos(other)}"},
        ):
            with open_stream(client, restaurant, headers) as r:
                r.read()
                assert r.status_code == 403
                assert r.json()["type"] == "/problems/restaurant-forbidden"
        with open_stream(client, restaurant, {}) as r:
            r.read()
            assert r.status_code == 401
        bad = {"Last-Event-ID": "yesterday"}
        with open_stream(client, restaurant, tokens.headers(restaurant), **bad) as r:
            r.read()
            assert r.status_code == 422


def test_a_stream_ends_once_the_callers_access_is_revoked(
    tokens: Tokens, stack: Stack, feed_api: str
) -> None:
    restaurant, sub = uuid.uuid4(), f"leaver-{uuid.uuid4().hex[:6]}"
    headers = tokens.headers(restaurant, sub=sub)
    with httpx.Client(base_url=feed_api) as client, open_stream(client, restaurant, headers) as r:
        stream = Stream(r)
        stream.connected()
        with psycopg.connect(stack.settings.admin_url, autocommit=True) as conn:
            revoke_staff(conn, user_id=sub, restaurant_id=restaurant)
        started = time.monotonic()
        with pytest.raises(EOFError):
            while time.monotonic() - started < 20:
                stream.frame()
    print(f"stream ended {time.monotonic() - started:.1f} s after the revocation")


def test_a_stream_ends_when_its_token_expires(tokens: Tokens, stack: Stack, feed_api: str) -> None:
    restaurant = uuid.uuid4()
    tokens.grant("staff-test", restaurant)
    token = mint_token(stack.settings, sub="staff-test", restaurant_ids=[restaurant], ttl_seconds=3)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=feed_api) as client, open_stream(client, restaurant, headers) as r:
        stream = Stream(r)
        stream.connected()
        started = time.monotonic()
        with pytest.raises(EOFError):
            while time.monotonic() - started < 20:
                stream.frame()
    print(f"stream ended {time.monotonic() - started:.1f} s after it opened (token for 3 s)")


def test_many_streams_share_one_kafka_consumer(
    api: httpx.Client, tokens: Tokens, feed_api: str
) -> None:
    restaurant = uuid.uuid4()
    headers = tokens.headers(restaurant)
    streams = 40

    arrived: list[float] = []

    async def watch(client: httpx.AsyncClient, opened: asyncio.Queue[None]) -> list[str]:
        url = f"/restaurants/{restaurant}/events/stream"
        async with client.stream("GET", url, headers=headers) as response:
            data: list[str] = []
            async for line in response.aiter_lines():
                if line.startswith("id:") and not data:
                    opened.put_nowait(None)
                if line.startswith("data:"):
                    data.append(line)
                    if len(data) == 2:
                        arrived.append(time.monotonic())
                        return data
        return data

    async def run() -> tuple[list[list[str]], str]:
        limits = httpx.Limits(max_connections=streams + 5)
        async with httpx.AsyncClient(base_url=feed_api, timeout=30, limits=limits) as client:
            opened: asyncio.Queue[None] = asyncio.Queue()
            tasks = [asyncio.create_task(watch(client, opened)) for _ in range(streams)]
            for _ in range(streams):
                await asyncio.wait_for(opened.get(), 30)
            metrics = (await client.get("/metrics")).text
            order_id = await asyncio.to_thread(create, api, headers, restaurant)
            sent.append(time.monotonic())
            await asyncio.to_thread(move, api, headers, order_id, "accepted")
            return await asyncio.gather(*tasks), metrics

    sent: list[float] = []
    received, metrics = asyncio.run(run())
    after = sorted((t - sent[0]) * 1000 for t in arrived)
    print(
        f"{streams} streams: from sending the PATCH, its event reached the first in "
        f"{after[0]:.1f} ms, the median {after[len(after) // 2]:.1f} ms, the last {after[-1]:.1f} ms"
    )
    assert all(len(data) == 2 for data in received)
    assert len({tuple(data) for data in received}) == 1  # every stream got the very same events
    assert _sample(metrics, "orderstatus_api_event_streams") >= streams
    assert _sample(metrics, "orderstatus_api_event_hub_consumers_total") == 1.0


def _sample(exposition: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", exposition, re.MULTILINE)
    assert match, f"{name} not exposed"
    return float(match.group(1))
