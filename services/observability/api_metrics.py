"""Prometheus metrics of the command API, by route template (bounded label values), served on the
API's own port at /metrics.

With PROMETHEUS_MULTIPROC_DIR set before this module is imported, every uvicorn worker process
writes its samples to files there and /metrics sums them (prometheus-client's multiprocess mode);
the directory must be emptied before the API starts."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import Scope

from services.core.outcomes import OUTCOME_NAMES, TIMEOUT_EVENT, UNAVAILABLE_EVENT
from services.observability import slis

UNMATCHED = "unmatched"
"""The route label of requests no route matched (random paths must not grow the label set)."""

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
"""0.3 s is the runbook's PATCH p95 objective: the histogram must have that edge."""

OUTCOME_OF_EVENT = {
    **{names.evt: names.metric for names in OUTCOME_NAMES.values()},
    UNAVAILABLE_EVENT: "unavailable",
    TIMEOUT_EVENT: "timeout",
}


def route_template(scope: Scope) -> str:
    """The matched route's path template (e.g. /orders/{order_id}/status), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def route_templates(
    routes: Iterable[BaseRoute], prefix: str = ""
) -> Iterator[tuple[str, frozenset[str]]]:
    """Every (path template, methods), also inside routers that FastAPI includes lazily."""
    for route in routes:
        path = getattr(route, "path", None)
        if isinstance(path, str):
            yield prefix + path, frozenset(getattr(route, "methods", None) or ())
        included = getattr(route, "original_router", None)
        if included is not None:
            context = getattr(route, "include_context", None)
            yield from route_templates(included.routes, prefix + getattr(context, "prefix", ""))


NOT_API = ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/healthz", "/readyz")
ANSWERS = ("200", "201", "202", "403", "404", "409", "500", "503", "504")
"""Statuses whose series exist from the start: rate() cannot see a series' first sample, so a
first 409 or 5xx would otherwise be missed by the SLIs."""


class ApiMetrics:
    """The API's collectors, registered in `registry` when the app is built (not at import), so
    every app (and every test) has its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            slis.REQUESTS.removesuffix("_total"),
            "HTTP requests answered, by route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            slis.DURATION,
            "Time to answer an HTTP request, by route template and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.server_errors = Counter(
            slis.SERVER_ERRORS.removesuffix("_total"),
            "5xx answers by route template; every route starts at 0 so the first one is an increase",
            ["route"],
            registry=self.registry,
        )
        self.command_outcomes = Counter(
            "orderstatus_api_command_outcomes",
            "Commands answered by the API, by outcome (the worker's outcomes plus unavailable and "
            "timeout)",
            ["outcome"],
            registry=self.registry,
        )

    def initialise(self, routes: Iterable[BaseRoute]) -> None:
        """Creates the series that rules take rate()/increase() of, so their first event counts."""
        for template, methods in route_templates(routes):
            self.server_errors.labels(template)
            if template in NOT_API or template == "/metrics":
                continue
            for method in methods - {"HEAD", "OPTIONS"}:
                for status in ANSWERS:
                    self.requests.labels(template, method, status)
        for outcome in OUTCOME_OF_EVENT.values():
            self.command_outcomes.labels(outcome)

    def observe_request(
        self, route: str, method: str, status: int, seconds: float, evt: str | None = None
    ) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.duration.labels(route, method).observe(seconds)
        if status >= 500:
            self.server_errors.labels(route).inc()
        outcome = OUTCOME_OF_EVENT.get(evt or "")
        if outcome is not None:
            self.command_outcomes.labels(outcome).inc()

    def exposition(self) -> bytes:
        """This app's samples; in multiprocess mode the sum over every process's files."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)

    def mount(self, app: Starlette) -> None:
        """Serves /metrics on the app's own port; call after the routes are included."""
        self.initialise(app.routes)

        async def metrics_endpoint(_request: Request) -> Response:
            return Response(self.exposition(), media_type=CONTENT_TYPE_LATEST)

        app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
