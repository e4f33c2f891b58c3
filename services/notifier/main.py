"""Wiring of the notifier process: `orderstatus notifier`."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop
from prometheus_client import start_http_server

from services.adapters.jsonlog import configure_logging
from services.adapters.kafka_admin import ensure_topics
from services.adapters.settings import Settings
from services.notifier.addresses import parse_allowed
from services.notifier.db import NotifierDatabase
from services.notifier.http import DeliveryClient, DeliveryLimits
from services.notifier.kafka import EventSource
from services.notifier.pipeline import Notifier, NotifierConfig
from services.notifier.schedule import parse_schedule
from services.observability.sentry import init_sentry

log = logging.getLogger(__name__)


def limits_of(settings: Settings) -> DeliveryLimits:
    return DeliveryLimits(
        connect_timeout_s=settings.webhook_connect_timeout_s,
        total_timeout_s=settings.webhook_total_timeout_s,
        max_response_bytes=settings.webhook_max_response_bytes,
        per_host_connections=settings.notifier_per_host_connections,
    )


async def serve(settings: Settings) -> None:
    config = NotifierConfig(
        schedule=parse_schedule(settings.webhook_retry_schedule_s),
        disable_after_s=settings.webhook_disable_after_s,
        max_in_flight=settings.notifier_max_in_flight,
        per_host=settings.notifier_per_host_connections,
    )
    database = NotifierDatabase(settings.database_url)
    await database.open()
    client = DeliveryClient(limits_of(settings), parse_allowed(settings.webhook_allowed_cidrs))
    source = EventSource(settings)
    notifier = Notifier(config, source, database, client)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, notifier.stopping.set)
    log.info("notifier started", extra={"evt": "notifier_started"})
    try:
        await notifier.run()
    finally:
        await asyncio.to_thread(source.close)  # leave the group: partitions move at once
        await client.close()
        await database.close()
        log.info("notifier stopped", extra={"evt": "notifier_stopped"})


def run(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    configure_logging("notifier", settings.log_level)
    init_sentry(settings, "notifier")
    ensure_topics(settings, only=frozenset({settings.topics.events}))  # the one it reads
    if settings.notifier_metrics_port:
        start_http_server(settings.notifier_metrics_port, addr=settings.notifier_metrics_host)
    # uvloop, as the API runs: less CPU per attempt and per database round trip on the loop.
    uvloop.run(serve(settings))
