"""A small Prometheus HTTP API client: instant queries and the scrape targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


class PrometheusError(Exception):
    """Prometheus unreachable, or it refused the query."""


@dataclass(frozen=True, slots=True)
class Sample:
    labels: dict[str, str]
    value: float


class Prometheus:
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        try:
            response = httpx.get(f"{self.url}{path}", params=params, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise PrometheusError(f"{type(exc).__name__}: {exc}") from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise PrometheusError(f"HTTP {response.status_code}: not JSON") from exc
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"HTTP {response.status_code}: {body.get('error', body)}")
        return body["data"]

    def ready(self) -> None:
        try:
            response = httpx.get(f"{self.url}/-/ready", timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise PrometheusError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise PrometheusError(f"HTTP {response.status_code} from /-/ready")

    def query(self, expr: str) -> list[Sample]:
        data = self._get("/api/v1/query", {"query": expr})
        if data["resultType"] == "scalar":
            return [Sample({}, float(data["result"][1]))]
        return [Sample(item["metric"], float(item["value"][1])) for item in data["result"]]

    def scalar(self, expr: str) -> float | None:
        """The value of a query that yields one series at most; None when it yields none."""
        samples = self.query(expr)
        return samples[0].value if samples else None

    def targets(self, jobs: tuple[str, ...]) -> list[tuple[str, str, bool]]:
        """(job, instance, up) of the active targets of `jobs`."""
        data = self._get("/api/v1/targets", {"state": "active"})
        return [
            (t["labels"].get("job", ""), t["labels"].get("instance", ""), t["health"] == "up")
            for t in data["activeTargets"]
            if t["labels"].get("job") in jobs
        ]
