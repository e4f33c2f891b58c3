"""The processes a benchmark measures: the project's API and worker (tests/stack.py) and the
direct-to-PostgreSQL baseline (bench/baseline.py), each on a free port."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx

from services.adapters.settings import Settings
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


def _vm_hwm_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


def sampled_pid(process: ServiceProcess) -> int:
    """The process to profile: itself, or its first child when it runs several (uvicorn's
    supervisor of API_PROCESSES > 1 only waits)."""
    assert process.process is not None
    pid = process.process.pid
    return next(iter(_descendants(pid)), pid)


def peak_rss_mb(process: ServiceProcess) -> float:
    """VmHWM, the most resident memory a process ever had: of the process, or of the largest of
    its child processes when it has some (an API started with several worker processes)."""
    assert process.process is not None
    pid = process.process.pid
    sizes = [_vm_hwm_mb(p) for p in (pid, *_descendants(pid))]
    return max((size for size in sizes if size == size), default=float("nan"))  # NaN: gone
