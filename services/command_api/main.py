"""`orderstatus api`: runs the command API under uvicorn."""

from __future__ import annotations

import math

import uvicorn

from services.command_api.app import create_app
from services.core.jsonlog import configure_logging
from services.core.settings import Settings


def run(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    configure_logging("command-api", settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
        # Event streams never end on their own: past the longest command answer, cut them off
        # (their clients resume elsewhere with Last-Event-ID) rather than wait for them forever.
        timeout_graceful_shutdown=math.ceil(
            settings.api_publish_timeout_s + settings.api_reply_timeout_s + 1
        ),
    )
