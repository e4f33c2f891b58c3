"""`orderstatus api`: runs the command API under uvicorn, bounded: at most API_LIMIT_CONCURRENCY
connections and tasks (beyond them uvicorn answers 503), idle keep-alive connections closed after
API_TIMEOUT_KEEP_ALIVE_S, request heads due within API_HEADER_TIMEOUT_S (limits.py); and the
retention purge every RETENTION_PURGE_EVERY_S in a thread of its own (services/ops/retention.py)."""

from __future__ import annotations

import math
import threading

import uvicorn

from services.command_api.app import create_app
from services.command_api.limits import protocol_with_header_timeout
from services.core.jsonlog import configure_logging
from services.core.settings import Settings, dev_secret_refusal
from services.ops.retention import purge_periodically


def run(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    configure_logging("command-api", settings.log_level)
    refusal = dev_secret_refusal(settings)
    if refusal is not None:
        raise SystemExit(f"orderstatus api: refusing to start: {refusal}")
    stop_purging = threading.Event()
    threading.Thread(
        target=purge_periodically, args=(settings, stop_purging), name="purge", daemon=True
    ).start()
    try:
        uvicorn.run(
            create_app(settings),
            host=settings.api_host,
            port=settings.api_port,
            log_config=None,
            access_log=False,
            loop="uvloop",
            http=protocol_with_header_timeout(settings.api_header_timeout_s),
            limit_concurrency=settings.api_limit_concurrency,
            timeout_keep_alive=max(1, round(settings.api_timeout_keep_alive_s)),
            # Event streams never end on their own: past the longest command answer, cut them off
            # (their clients resume elsewhere with Last-Event-ID) rather than wait for them forever.
            timeout_graceful_shutdown=math.ceil(
                settings.api_publish_timeout_s + settings.api_reply_timeout_s + 1
            ),
        )
    finally:
        stop_purging.set()
