"""`orderstatus load`: drives the API like a crowd of POS terminals and reports latency figures.

Each terminal creates an order and walks it to completed, again and again, timing every PATCH."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx

from services.command_api.auth import mint_token
from services.core.messages import Role
from services.core.settings import Settings

WALK = ("accepted", "preparing", "ready", "completed")


@dataclass
class LoadReport:
    patch_seconds: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    elapsed: float = 0.0

    def percentile(self, q: float) -> float:
        if not self.patch_seconds:
            return float("nan")
        ordered = sorted(self.patch_seconds)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, float | int | dict[int, int]]:
        count = len(self.patch_seconds)
        return {
            "patches": count,
            "patches_per_s": round(count / self.elapsed, 1) if self.elapsed else 0.0,
            "p50_ms": round(self.percentile(0.50) * 1000, 1),
            "p95_ms": round(self.percentile(0.95) * 1000, 1),
            "p99_ms": round(self.percentile(0.99) * 1000, 1),
            "mean_ms": round(statistics.fmean(self.patch_seconds) * 1000, 1) if count else 0.0,
            "statuses": dict(sorted(self.statuses.items())),
        }


async def _terminal(
    client: httpx.AsyncClient, restaurant: uuid.UUID, deadline: float, report: LoadReport
) -> None:
    while time.monotonic() < deadline:
        created = await client.post("/orders", json={"restaurant_id": str(restaurant)})
        report.statuses[created.status_code] += 1
        if created.status_code != 201:
            await asyncio.sleep(0.1)
            continue
        order_id = created.json()["order_id"]
        version = 1
        for status in WALK:
            started = time.perf_counter()
            response = await client.patch(
                f"/orders/{order_id}/status", json={"status": status, "expected_version": version}
            )
            report.patch_seconds.append(time.perf_counter() - started)
            report.statuses[response.status_code] += 1
            if response.status_code != 200:
                break
            version += 1


async def run_load(settings: Settings, url: str, terminals: int, seconds: float) -> LoadReport:
    restaurant = uuid.uuid4()
    # Like a POS integration: a service token scoped to its restaurant (docs/security.md).
    token = mint_token(
        settings, sub="load-generator", role=Role.SERVICE_ROLE, restaurant_ids=[restaurant]
    )
    report = LoadReport()
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
