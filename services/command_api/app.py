"""Wiring of the command API: settings, the command bus, the read pool, routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.command_api.auth import TokenVerifier
from services.command_api.db import OrderReads
from services.command_api.dispatch import CommandDispatch
from services.command_api.event_hub import EventHub
from services.command_api.http import RequestContext, install_error_handlers, router
from services.command_api.idempotency import CommandRequests
from services.command_api.kafka import CommandBus
from services.command_api.limits import RequestLimits
from services.command_api.orders_feed import router as orders_feed_router
from services.command_api.webhooks import router as webhooks_router
from services.core.settings import Settings
from services.observability.api_metrics import mount_metrics
from services.observability.sentry import init_sentry

log = logging.getLogger(__name__)


async def _purge_expired_keys(requests: CommandRequests, every_s: float = 300.0) -> None:
    while True:
        with contextlib.suppress(Exception):
            purged = await requests.purge_expired()
            if purged:
                log.info("expired command requests purged", extra={"purged": purged})
        await asyncio.sleep(every_s)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    init_sentry(settings, "command-api")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reads = OrderReads(settings.database_url)
        bus = CommandBus(settings)
        await reads.open()
        await bus.start()
        app.state.event_hub = hub = EventHub(settings)
        await hub.start()
        requests = CommandRequests(reads.pool)
        app.state.reads, app.state.bus = reads, bus
        app.state.dispatch = CommandDispatch(bus, reads, requests)
        purging = asyncio.create_task(_purge_expired_keys(requests))
        try:
            yield
        finally:
            purging.cancel()
            await hub.stop()
            await bus.stop()
            await reads.close()

    app = FastAPI(
        title="Order Status command API",
        version="1",
        summary="Change an order's status; each change is applied serially per order by the worker.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.verifier = TokenVerifier(settings)
    app.include_router(router)
    app.include_router(orders_feed_router)
    app.include_router(webhooks_router)
    mount_metrics(app)
    install_error_handlers(app)
    # Size limits first (inside RequestContext, so a 413/431 is logged with its request id).
    app.add_middleware(
        RequestLimits,
        max_body_bytes=settings.api_max_body_bytes,
        max_header_bytes=settings.api_max_header_bytes,
    )
    app.add_middleware(RequestContext)
    return app
