"""Wiring of the figures process: `orderstatus figures` (faust worker + web server, one loop)."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import faust
from mode import Service

from services.adapters.jsonlog import JsonFormatter, configure_logging
from services.adapters.settings import Settings
from services.figures.app import FiguresApp
from services.figures.http import EmbeddedServer, create_web_app, web_server
from services.figures.metrics import FiguresMetrics

log = logging.getLogger(__name__)


class WebService(Service):
    """The web server as a service of faust's worker: started after the app, and asked to finish
    its requests and stop (not cancelled) when the worker stops."""

    def __init__(self, server: EmbeddedServer, port: int) -> None:
        super().__init__()
        self.server = server
        self.port = port
        self._serving: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        log.info(
            "figures web server starting", extra={"evt": "figures_web_started", "port": self.port}
        )
        self._serving = asyncio.ensure_future(self.server.serve())

    async def on_stop(self) -> None:
        self.server.should_exit = True
        if self._serving is not None:
            await asyncio.wait_for(self._serving, timeout=10)


def json_logging(level: str) -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter, "service": "figures"}},
        "handlers": {
            "json": {"class": "logging.StreamHandler", "formatter": "json", "stream": sys.stdout}
        },
        "root": {"level": level.upper(), "handlers": ["json"]},
    }


def run(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    configure_logging("figures", settings.log_level)
    figures = FiguresApp(settings)
    metrics = FiguresMetrics(
        figures.all_figures,
        settings.figures_metrics_max_restaurants,
    )
    figures.on_handled = metrics.handled
    figures.prepare()
    server = web_server(
        create_web_app(figures, metrics), settings.figures_host, settings.figures_port
    )

    web = WebService(server, settings.figures_port)
    worker = faust.Worker(
        figures.app,
        web,
        loglevel=settings.log_level,
        # faust's worker sets logging up again: JSON lines, like the other services.
        logging_config=json_logging(settings.log_level),
        redirect_stdouts=False,
        quiet=True,
    )
    worker.execute_from_commandline()
