"""Closed-loop load with wrk (Debian package; deploy/local/bench-tools.sh installs it): N
connections, each sending its next request as soon as the previous one is answered. wrk cannot
hold a constant arrival rate (that is wrk2, not packaged): open-loop runs use `orderstatus load`.
The Lua script (bench/wrk.lua) reads the orders to patch from a file and prints its figures as
JSON from done()."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from services.loadgen import Tenant

SCRIPT = Path(__file__).with_name("wrk.lua")
Mode = Literal["fresh", "hot"]


@dataclass
class WrkResult:
    connections: int
    seconds: float
    requests: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[int, int] = field(default_factory=dict)
    socket_errors: dict[str, int] = field(default_factory=dict)

    @property
    def requests_per_s(self) -> float:
        return round(self.requests / self.seconds, 1) if self.seconds else 0.0

    def rate_of(self, *codes: int) -> float:
        answered = sum(self.statuses.get(code, 0) for code in codes)
        return round(answered / self.seconds, 1) if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "requests": self.requests,
            "requests_per_s": self.requests_per_s,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "statuses": dict(sorted(self.statuses.items())),
            "socket_errors": {k: v for k, v in self.socket_errors.items() if v},
        }


def write_orders(path: Path, tenants: list[Tenant], per_tenant: int | None = None) -> Path:
    """The file bench/wrk.lua reads: every tenant's token, then their orders interleaved."""
    lines = [f"T {tenant.token}" for tenant in tenants]
    columns = [t.orders[:per_tenant] for t in tenants]
    for row in range(max(len(c) for c in columns)):
        lines += [f"O {n + 1} {c[row]}" for n, c in enumerate(columns) if row < len(c)]
    path.write_text("\n".join(lines) + "\n")
    return path


def parse(output: str, connections: int) -> WrkResult:
    line = next(x for x in output.splitlines() if x.startswith("WRK_JSON "))
    raw = json.loads(line.removeprefix("WRK_JSON "))
    statuses: Counter[int] = Counter()
    for code, count in raw["statuses"]:
        statuses[int(code)] += int(count)
    ms = {k: round(raw[f"{k}_us"] / 1000, 1) for k in ("p50", "p90", "p95", "p99", "max")}
    return WrkResult(
        connections=connections,
        seconds=raw["duration_us"] / 1e6,
        requests=raw["requests"],
        p50_ms=ms["p50"],
        p90_ms=ms["p90"],
        p95_ms=ms["p95"],
        p99_ms=ms["p99"],
        max_ms=ms["max"],
        statuses=dict(statuses),
        socket_errors=raw["errors"],
    )


def run_wrk(
    url: str,
    orders_file: Path,
    *,
    mode: Mode,
    connections: int,
    seconds: float,
    threads: int = 2,
) -> WrkResult:
    """One wrk run against `url` (bounded: wrk stops itself after `seconds`, and is killed if it
    does not within 30 s more)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed: deploy/local/bench-tools.sh install")
    threads = max(1, min(threads, connections))
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(SCRIPT),
        url,
        "--",
        mode,
        str(orders_file),
        str(threads),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    if done.returncode != 0 or "WRK_JSON" not in done.stdout:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr}")
    return parse(done.stdout, connections)
