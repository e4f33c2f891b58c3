"""`orderstatus api`: runs the command API under uvicorn, API_PROCESSES processes on one port,
bounded: at most API_LIMIT_CONCURRENCY connections and tasks per process (beyond them uvicorn
answers 503), idle keep-alive connections closed after API_TIMEOUT_KEEP_ALIVE_S, request heads due
within API_HEADER_TIMEOUT_S (limits.py); and the retention purge every RETENTION_PURGE_EVERY_S in a
thread of its own (services/ops/retention.py)."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import threading

import uvicorn

from services.adapters.command_signing import signing_refusal
from services.adapters.jsonlog import configure_logging
from services.adapters.settings import Settings, dev_secret_refusal
from services.command_api.app import create_app
from services.command_api.limits import HEADER_TIMEOUT_PROTOCOL, HeaderTimeoutProtocol
from services.ops.retention import purge_periodically


def run(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    configure_logging("command-api", settings.log_level)
    refusal = dev_secret_refusal(settings) or signing_refusal(settings)
    if refusal is not None:
        raise SystemExit(f"orderstatus api: refusing to start: {refusal}")
    stop_purging = threading.Event()
    threading.Thread(
        target=purge_periodically, args=(settings, stop_purging), name="purge", daemon=True
    ).start()
    HeaderTimeoutProtocol.head_timeout_s = settings.api_header_timeout_s
    several = settings.api_processes > 1
    metrics_dir = spawned_processes_environment(settings) if several else None
    try:
        uvicorn.run(
            # Several processes share the port: uvicorn spawns each and builds its app there
            # (process_app), each with its own reply partition (reply_partition.py).
            "services.command_api.app:process_app" if several else create_app(settings),
            factory=several,
            workers=settings.api_processes,
            host=settings.api_host,
            port=settings.api_port,
            log_config=None,
            access_log=False,
            loop="uvloop",
            http=HEADER_TIMEOUT_PROTOCOL,
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
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def spawned_processes_environment(settings: Settings) -> str | None:
    """What each spawned process reads from the environment: a reply partition of its own (not
    every process reading every result), and one metrics directory that /metrics sums over.
    Returns that directory when it is made here (and is to be removed afterwards)."""
    if settings.api_results_partition == "all":
        os.environ["API_RESULTS_PARTITION"] = "auto"
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    made = tempfile.mkdtemp(prefix="orderstatus-api-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
    return made
