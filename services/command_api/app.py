"""The command API's composition root: builds every client, store and collector, and the routes.
Nothing connects or registers before `create_app` (or its lifespan) runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from confluent_kafka import Consumer, Producer
from fastapi import FastAPI

from services.adapters import kafka_config
from services.adapters.jsonlog import configure_logging
from services.adapters.settings import Settings
from services.command_api.auth import TokenVerifier
from services.command_api.db import order_reads
from services.command_api.dispatch import CommandDispatch
from services.command_api.event_hub import EventHub, EventHubMetrics
from services.command_api.http import RequestContext, install_error_handlers, router
from services.command_api.idempotency import CommandRequests
from services.command_api.kafka import UNAUTHENTICATED_RESULTS, CommandBus
from services.command_api.limits import RequestLimits
from services.command_api.orders_feed import router as orders_feed_router
from services.command_api.reply_partition import reply_partition
from services.command_api.webhooks import router as webhooks_router
from services.observability.api_metrics import ApiMetrics
from services.observability.sentry import init_sentry

log = logging.getLogger(__name__)


async def _purge_expired_keys(requests: CommandRequests, every_s: float = 300.0) -> None:
    while True:
        with contextlib.suppress(Exception):
            purged = await requests.purge_expired()
            if purged:
                log.info("expired command requests purged", extra={"purged": purged})
        await asyncio.sleep(every_s)


def command_bus(settings: Settings) -> CommandBus:
    return CommandBus(
        settings,
        Producer(kafka_config.api_producer(settings)),
        Consumer(kafka_config.api_results_consumer(settings)),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    init_sentry(settings, "command-api")
    metrics = ApiMetrics()
    hub_metrics = EventHubMetrics(metrics.registry)
    metrics.registry.register(UNAUTHENTICATED_RESULTS)  # counted by the bus, served on /metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reads = order_reads(settings.database_url, settings.database_read_url)
        bus, requests = command_bus(settings), CommandRequests(reads.pool)  # writes: the primary
        await reads.open()
        replies = await reply_partition(settings, await bus.results_partitions())
        await bus.start(replies.partition)
        log.info(
            "reading results", extra={"evt": "reply_partition", "partition": replies.partition}
        )
        app.state.event_hub = hub = EventHub(settings, hub_metrics)
        await hub.start()
        app.state.reads, app.state.bus = reads, bus
        orders = reads if settings.api_stale_refusal else None
        app.state.dispatch = CommandDispatch(bus, reads, requests, orders=orders)
        purging = asyncio.create_task(_purge_expired_keys(requests))
        try:
            yield
        finally:
            purging.cancel()
            await hub.stop()
            await bus.stop()
            await replies.release()
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
    metrics.mount(app)
    install_error_handlers(app)
    # Size limits first (inside RequestContext, so a 413/431 is logged with its request id).
    app.add_middleware(
        RequestLimits,
        max_body_bytes=settings.api_max_body_bytes,
        max_header_bytes=settings.api_max_header_bytes,
    )
    app.add_middleware(RequestContext, metrics=metrics)
    return app


def process_app() -> FastAPI:
    """uvicorn's app factory when API_PROCESSES > 1 (`uvicorn.run("services.command_api.app:
    process_app", factory=True, workers=N)`): each spawned process configures its own logs and
    builds its app, and takes its own reply partition, from the environment."""
    settings = Settings()
    configure_logging("command-api", settings.log_level)
    return create_app(settings)
