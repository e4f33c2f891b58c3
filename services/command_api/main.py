"""`orderstatus api`: runs the command API under uvicorn."""

from __future__ import annotations

import uvicorn

from services.command_api.app import create_app
from services.core.jsonlog import configure_logging
from services.core.settings import Settings, dev_secret_refusal


def run(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    configure_logging("command-api", settings.log_level)
    refusal = dev_secret_refusal(settings)
    if refusal is not None:
        raise SystemExit(f"orderstatus api: refusing to start: {refusal}")
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
    )
