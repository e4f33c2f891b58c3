"""POS terminals walking orders through their lives, for tests that need changes of every kind
(creations, each status, prep times): each terminal creates an order and walks it to completed,
again and again, until the time is up. `orderstatus load` is the open-loop generator of PATCHes
for measurements; this is a workload, not a measurement."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx

from services.adapters.settings import Settings
from services.command_api.auth import mint_token
from services.core.messages import Role

WALK = ("accepted", "preparing", "ready", "completed")


@dataclass
class WalkReport:
    statuses: Counter[int] = field(default_factory=Counter)
    elapsed: float = 0.0

    def summary(self) -> dict[str, object]:
        return {
            "elapsed_s": round(self.elapsed, 1),
            "statuses": dict(sorted(self.statuses.items())),
        }


async def _terminal(
    client: httpx.AsyncClient, restaurant: uuid.UUID, deadline: float, report: WalkReport
) -> None:
    while time.monotonic() < deadline:
        created = await client.post("/orders", json={"restaurant_id": str(restaurant)})
        report.statuses[created.status_code] += 1
        if created.status_code != 201:
            await asyncio.sleep(0.1)
            continue
        order_id, version = created.json()["order_id"], 1
        for status in WALK:
            response = await client.patch(
                f"/orders/{order_id}/status", json={"status": status, "expected_version": version}
            )
            report.statuses[response.status_code] += 1
            if response.status_code != 200:
                break
            version += 1


async def walk_orders(settings: Settings, url: str, terminals: int, seconds: float) -> WalkReport:
    """`terminals` terminals of one new restaurant, with a POS integration's token (a service
    token scoped to that restaurant, docs/security.md), for `seconds`."""
    restaurant = uuid.uuid4()
    token = mint_token(
        settings, sub="terminals", role=Role.SERVICE_ROLE, restaurant_ids=[restaurant]
    )
    report = WalkReport()
    limits = httpx.Limits(max_connections=terminals, max_keepalive_connections=terminals)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30, limits=limits
    ) as client:
        started = time.monotonic()
        deadline = started + seconds
        await asyncio.gather(
            *(_terminal(client, restaurant, deadline, report) for _ in range(terminals))
        )
        report.elapsed = time.monotonic() - started
    return report
