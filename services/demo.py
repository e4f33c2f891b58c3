"""`orderstatus demo`: a few simulated POS terminals driving orders through their statuses."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass

import httpx

from services.adapters.settings import Settings
from services.command_api.auth import mint_token
from services.core.messages import Role
from services.notifier.demo import webhook_receiver

RESTAURANTS = ["Trattoria Roma", "Sushi Kai", "Taco Loco", "Curry House", "Pho Saigon"]
HAPPY_PATH = ["accepted", "preparing", "ready", "completed"]


@dataclass
class Terminal:
    name: str
    restaurant: str
    restaurant_id: uuid.UUID
    client: httpx.AsyncClient

    def say(self, text: str) -> None:
        print(f"[{self.name} {self.restaurant:<14}] {text}", flush=True)

    async def call(
        self, method: str, path: str, body: dict[str, object]
    ) -> tuple[int, dict[str, object], float]:
        started = time.perf_counter()
        response = await self.client.request(method, path, json=body)
        return response.status_code, response.json(), (time.perf_counter() - started) * 1000


async def _serve_orders(terminal: Terminal, orders: int, rng: random.Random) -> int:
    surprises = 0
    for _ in range(orders):
        code, order, ms = await terminal.call(
            "POST", "/orders", {"restaurant_id": str(terminal.restaurant_id)}
        )
        if code != 201:
            terminal.say(f"create failed: {code} {order}")
            return surprises + 1
        order_id = str(order["order_id"])
        terminal.say(f"order {order_id[:8]} created: pending v{order['version']} ({ms:.0f} ms)")
        path = HAPPY_PATH if rng.random() > 0.25 else ["accepted", "cancelled"]
        version = int(str(order["version"]))
        for status in path:
            await asyncio.sleep(rng.uniform(0.05, 0.2))
            code, body, ms = await terminal.call(
                "PATCH",
                f"/orders/{order_id}/status",
                {"status": status, "expected_version": version},
            )
            if code == 200:
                terminal.say(
                    f"order {order_id[:8]} -> {status:<9} v{body['version']} ({code}, {ms:.0f} ms)"
                )
                version = int(str(body["version"]))
            else:
                terminal.say(
                    f"order {order_id[:8]} -> {status}: {code} {body.get('type')} ({ms:.0f} ms)"
                )
                surprises += 1
    return surprises


async def _race(terminals: list[Terminal]) -> int:
    """Two staff tap 'accept' on the same order at once: one wins, the other gets a 409."""
    first = terminals[0]
    second = Terminal("pos-2b", first.restaurant, first.restaurant_id, first.client)
    _, order, _ = await first.call("POST", "/orders", {"restaurant_id": str(first.restaurant_id)})
    order_id = str(order["order_id"])
    body = {"status": "accepted", "expected_version": 1}
    results = await asyncio.gather(
        first.call("PATCH", f"/orders/{order_id}/status", body),
        second.call("PATCH", f"/orders/{order_id}/status", body),
    )
    codes = sorted(code for code, _, _ in results)
    for who, (code, answer, ms) in zip((first, second), results, strict=True):
        detail = (
            f"v{answer.get('version')}"
            if code == 200
            else f"{answer.get('type')} (now {answer.get('current_status')})"
        )
        who.say(f"race on order {order_id[:8]}: {code} {detail} ({ms:.0f} ms)")
    return 0 if codes == [200, 409] else 1


async def _unknown_order(terminal: Terminal) -> int:
    code, body, _ = await terminal.call(
        "PATCH", f"/orders/{uuid.uuid4()}/status", {"status": "accepted"}
    )
    terminal.say(f"unknown order -> {code} {body.get('type')}")
    return 0 if code == 404 else 1


async def _another_restaurants_order(terminals: list[Terminal]) -> int:
    """A terminal reaches for another restaurant's order: PostgreSQL's policies refuse it (403)."""
    owner, stranger = terminals[0], terminals[-1]
    if owner is stranger:
        return 0
    _, order, _ = await owner.call("POST", "/orders", {"restaurant_id": str(owner.restaurant_id)})
    order_id = str(order["order_id"])
    code, body, _ = await stranger.call(
        "PATCH", f"/orders/{order_id}/status", {"status": "cancelled"}
    )
    stranger.say(f"{owner.restaurant}'s order {order_id[:8]} -> {code} {body.get('type')}")
    return 0 if code == 403 else 1


async def _demo(settings: Settings, url: str, terminals: int, orders: int) -> int:
    rng = random.Random(7)
    clients = []
    pos: list[Terminal] = []
    for index in range(terminals):
        restaurant_id = uuid.uuid4()
        # A POS integration: a service token scoped to its restaurant (docs/security.md).
        token = mint_token(
            settings,
            sub=f"pos-{index + 1}",
            role=Role.SERVICE_ROLE,
            restaurant_ids=[restaurant_id],
        )
        client = httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        clients.append(client)
        pos.append(
            Terminal(
                f"pos-{index + 1}", RESTAURANTS[index % len(RESTAURANTS)], restaurant_id, client
            )
        )
    try:
        async with webhook_receiver(pos[0].client, pos[0].restaurant_id):
            started = time.perf_counter()
            surprises = sum(await asyncio.gather(*(_serve_orders(t, orders, rng) for t in pos)))
            problems = (
                await _race(pos)
                + await _unknown_order(pos[-1])
                + await _another_restaurants_order(pos)
            )
            elapsed = time.perf_counter() - started
    finally:
        for client in clients:
            await client.aclose()
    print(
        f"demo done in {elapsed:.1f} s: {terminals} terminals, {terminals * orders} orders; "
        f"{'all outcomes as expected' if problems == 0 else f'{problems} unexpected outcomes'}"
        f"{f', {surprises} refused status changes' if surprises else ''}"
    )
    return 1 if problems else 0


def run_demo(settings: Settings, url: str, *, terminals: int, orders: int) -> int:
    return asyncio.run(_demo(settings, url, terminals, orders))
