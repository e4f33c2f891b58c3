"""The figures app's web server: the live page, the JSON views, /metrics and /readyz. FastAPI,
served by uvicorn inside faust's event loop, so the handlers read the tables directly.

Every handler is `async def`, on purpose: Starlette runs a plain `def` handler in a worker thread,
and the first touch of faust's TableManager from a thread binds it to that thread's new event
loop, which never runs (mode's `Service.loop` late-binds with `get_event_loop()`; faust 0.15.3
creates the TableManager without a loop). A /readyz poll that came before the manager's first use
in faust's loop left its "tables registered" wait on that dead loop: the worker logged
'Recovery: Starting' and never subscribed, so it never joined its group (docs/figures.md). The
table reads are also not thread-safe against the agents that write them."""

from __future__ import annotations

import time
from typing import Any, Literal
from uuid import UUID

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.figures import aggregates as agg
from services.figures import page
from services.figures.app import FiguresApp
from services.figures.metrics import FiguresMetrics

PAGE_RESTAURANTS = 20


def overview(figures: FiguresApp, now: float | None = None) -> dict[str, Any]:
    """Throughput of the last 15 minutes and the busiest restaurants, as the page shows them."""
    now = time.time() if now is None else now
    every = figures.all_figures(now)
    every.sort(key=lambda f: (-f.changes_last_hour, -f.changes_last_minute, f.restaurant_id))
    rows = []
    for one in every[:PAGE_RESTAURANTS]:
        summary = one.to_json()
        rows.append(
            {
                "restaurant_id": one.restaurant_id,
                "changes_last_minute": one.changes_last_minute,
                "changes_last_hour": one.changes_last_hour,
                "conflicts_last_minute": one.conflicts_last_minute,
                "prep_p50_s": summary["prep_time_s"]["p50"],
                "prep_p95_s": summary["prep_time_s"]["p95"],
            }
        )
    return {
        "as_of": agg.iso(now),
        "throughput": [
            {"minute": agg.iso(minute), "changes": count}
            for minute, count in figures.throughput(now)
        ],
        "restaurants": rows,
    }


def create_web_app(figures: FiguresApp, metrics: FiguresMetrics) -> FastAPI:
    web = FastAPI(title="Order Status figures", docs_url=None, redoc_url=None)

    @web.get("/readyz")
    async def readyz() -> JSONResponse:
        ready = figures.ready
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @web.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @web.get("/restaurants/{restaurant_id}/figures")
    async def restaurant_figures(restaurant_id: UUID | Literal["-"]) -> dict[str, Any]:
        """`-` is the row of refusals whose order's restaurant no event has shown (the page lists
        it like a restaurant, so its numbers have a view too)."""
        return figures.figures(str(restaurant_id)).to_json()

    @web.get("/figures")
    async def all_figures() -> dict[str, Any]:
        return overview(figures)

    @web.get("/", response_class=HTMLResponse)
    async def live_page() -> str:
        return page.render(overview(figures))

    return web


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: faust's worker owns SIGTERM and SIGINT."""

    def install_signal_handlers(self) -> None:
        return None

    def capture_signals(self) -> Any:  # uvicorn >= 0.29 captures signals here
        import contextlib

        return contextlib.nullcontext()


def web_server(web: FastAPI, host: str, port: int) -> EmbeddedServer:
    config = uvicorn.Config(web, host=host, port=port, log_config=None, access_log=False)
    return EmbeddedServer(config)
