"""The figures web views run on faust's event loop, not in a worker thread.

A plain `def` handler runs in Starlette's thread pool; its first touch of faust's TableManager
bound the manager to a new, never running loop of that thread, and the worker then hung at start
('Recovery: Starting', no JoinGroup). See services/figures/http.py."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from services.adapters.settings import Settings
from services.figures.app import FiguresApp
from services.figures.http import create_web_app
from services.figures.metrics import FiguresMetrics


@pytest.mark.parametrize("path", ["/readyz", "/figures", "/metrics", "/"])
def test_a_request_before_faust_starts_leaves_the_tables_on_the_running_loop(path: str) -> None:
    figures = FiguresApp(Settings(kafka_topic_prefix=f"unit-web-loop-{path.strip('/') or 'page'}"))
    metrics = FiguresMetrics(figures.all_figures, 5)
    web = create_web_app(figures, metrics)
    seen: dict[str, object] = {}

    async def first_requests() -> None:
        transport = httpx.ASGITransport(app=web)
        async with httpx.AsyncClient(transport=transport, base_url="http://figures") as client:
            response = await client.get(path)
            seen["status"] = response.status_code
            # /readyz reads the recovery service, the others the tables: both late-bind a loop.
            await client.get("/readyz")
        seen["running"] = asyncio.get_running_loop()

    asyncio.run(first_requests())
    tables = figures.app.tables
    recovery = getattr(tables, "recovery")  # noqa: B009 (not in TableManagerT)
    assert seen["status"] in (200, 503)
    assert tables.loop is seen["running"]
    assert recovery.loop is seen["running"]
