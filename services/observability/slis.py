"""The runbook's four SLIs as PromQL: one definition shared by the recording rules
(deploy/prometheus/rules, checked by a unit test), the dashboard, `orderstatus doctor` and `watch`.

Success rate counts every answer that is not a 5xx: 409 and 403 are correct answers with SLIs of
their own, and counting them as failures would let a conflict rate within its 2 % objective breach
the 99.9 % success objective."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

REQUESTS = "orderstatus_http_requests_total"
DURATION = "orderstatus_http_request_duration_seconds"
SERVER_ERRORS = "orderstatus_http_server_errors_total"
WORKER_COMMANDS = "orderstatus_worker_commands_total"
CONSUMER_LAG = "orderstatus_worker_consumer_lag"
DEAD_LETTERS = "orderstatus_worker_dead_letters_total"
COMMAND_E2E = "orderstatus_command_e2e_seconds"

STATUS_ROUTE = "/orders/{order_id}/status"
API_ROUTES = 'route!~"/healthz|/readyz|/metrics"'
PATCH_STATUS = f'route="{STATUS_ROUTE}",method="PATCH"'
RULE_WINDOW = "5m"
WINDOW = "$window"


class Direction(StrEnum):
    AT_LEAST = ">="
    AT_MOST = "<="


@dataclass(frozen=True, slots=True)
class Sli:
    key: str
    title: str
    record: str
    """The recording rule that holds this SLI over RULE_WINDOW."""
    objective: float
    direction: Direction
    unit: str
    """Grafana's unit id: percentunit or s."""
    template: str
    """PromQL with WINDOW where the range goes."""

    def expr(self, window: str = RULE_WINDOW) -> str:
        return self.template.replace(WINDOW, window)

    def met(self, value: float) -> bool:
        if self.direction is Direction.AT_LEAST:
            return value >= self.objective
        return value <= self.objective

    def describe(self, value: float) -> str:
        if self.unit == "s":
            return f"{value * 1000:.0f} ms"
        return f"{value * 100:.2f} %"

    def objective_text(self) -> str:
        return f"{self.direction.value} {self.describe(self.objective)}"


def _ratio(selector: str, of: str) -> str:
    """`selector`'s share of `of`; 0 (not "no data") when `selector` never happened."""
    return (
        f"(sum(rate({REQUESTS}{{{selector}}}[{WINDOW}])) or vector(0))"
        f" / sum(rate({REQUESTS}{{{of}}}[{WINDOW}]))"
    )


SUCCESS = Sli(
    "success_rate",
    "API success rate (not 5xx)",
    "orderstatus:api_success:ratio_rate5m",
    0.999,
    Direction.AT_LEAST,
    "percentunit",
    "1 - " + _ratio(API_ROUTES + ',status=~"5.."', API_ROUTES),
)
PATCH_P95 = Sli(
    "patch_p95",
    "PATCH /status p95 latency",
    "orderstatus:patch_latency_seconds:p95_rate5m",
    0.3,
    Direction.AT_MOST,
    "s",
    f"histogram_quantile(0.95, sum by (le) (rate({DURATION}_bucket{{{PATCH_STATUS}}}[{WINDOW}])))",
)
CONFLICT = Sli(
    "conflict_rate",
    "Conflict rate (409 / PATCH)",
    "orderstatus:patch_conflict:ratio_rate5m",
    0.02,
    Direction.AT_MOST,
    "percentunit",
    _ratio(PATCH_STATUS + ',status="409"', PATCH_STATUS),
)
DENIAL = Sli(
    "denial_rate",
    "Denial rate (403 / PATCH)",
    "orderstatus:patch_denial:ratio_rate5m",
    0.005,
    Direction.AT_MOST,
    "percentunit",
    _ratio(PATCH_STATUS + ',status="403"', PATCH_STATUS),
)

SLIS: tuple[Sli, ...] = (SUCCESS, PATCH_P95, CONFLICT, DENIAL)

# Throughput and the worker, as recorded by the rules and shown by the dashboard and `watch`.
REQUEST_RATE = "orderstatus:api_requests:rate5m"
REQUEST_RATE_EXPR = f"sum by (route, method, status) (rate({REQUESTS}{{{API_ROUTES}}}[5m]))"
COMMAND_RATE = "orderstatus:worker_commands:rate5m"
COMMAND_RATE_EXPR = f"sum by (outcome) (rate({WORKER_COMMANDS}[5m]))"
LAG_TOTAL = "orderstatus:consumer_lag:sum"
LAG_TOTAL_EXPR = f"sum({CONSUMER_LAG})"
