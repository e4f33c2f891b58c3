"""Wiring of the figures process: `orderstatus figures` (faust worker + web server, one loop)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import faust

from services.core.jsonlog import JsonFormatter, configure_logging
from services.core.settings import Settings
from services.figures.app import FiguresApp
from services.figures.http import create_web_app, web_server
from services.figures.metrics import FiguresMetrics

log = logging.getLogger(__name__)


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
        lambda: [figures.figures(r) for r in figures.restaurants()],
        settings.figures_metrics_max_restaurants,
    )
    figures.on_handled = metrics.handled
    figures.prepare()
    server = web_server(
        create_web_app(figures, metrics), settings.figures_host, settings.figures_port
    )

    async def serve() -> None:
        log.info(
            "figures web server starting",
            extra={"evt": "figures_web_started", "port": settings.figures_port},
        )
        await server.serve()

    figures.app.task(serve)
    worker = faust.Worker(
        figures.app,
        loglevel=settings.log_level,
        # faust's worker sets logging up again: JSON lines, like the other services.
        logging_config=json_logging(settings.log_level),
        redirect_stdouts=False,
        quiet=True,
    )
    worker.execute_from_commandline()
