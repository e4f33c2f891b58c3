"""The processes a benchmark measures: the project's API and worker (tests/stack.py) and the
direct-to-PostgreSQL baseline (bench/baseline.py), each on a free port."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx

from services.core.settings import Settings
from tests.stack import ServiceProcess, free_port


class BaselineProcess(ServiceProcess):
    """`python -m bench.baseline` on a free port, with the settings' database and JWT secret."""

    def __init__(self, settings: Settings, log_dir: Path, **overrides: Any) -> None:
        super().__init__("baseline", settings, log_dir, **overrides)
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "bench.baseline", "--port", str(self.port)]

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


def peak_rss_mb(process: ServiceProcess) -> float:
    """VmHWM: the most resident memory the process ever had."""
    assert process.process is not None
    for line in Path(f"/proc/{process.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")
