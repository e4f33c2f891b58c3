"""What each outcome is called wherever it is named: one table, one row per outcome, so a new
outcome (or a renamed one) is one edit and a unit test says which column it lacks.

Columns:
- `evt`: the log line's `evt` (the worker's per command, the API's per answer): the names the
  runbook searches for (docs/runbook.md).
- `metric`: the `outcome` label of `orderstatus_worker_commands_total` and of the API's request
  metrics; dashboards, SLIs and alert rules select on these values.
- `http_status`: the API's answer (applied is 200, or 201 for a creation).
- `problem`: the problem+json `type` slug and title of a refused command; None for applied.
- `sentry_message`: whether the API reports the answer to Sentry as a message named after the evt
  (with dashes); an error is reported as the exception it is instead.

The evt and the Sentry name of one outcome are one name in two spellings (`sentry_name`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from services.core.messages import Outcome


@dataclass(frozen=True, slots=True)
class ProblemName:
    kind: str
    """The problem+json `type` (after /problems/); a conflict's own type replaces it."""
    title: str


@dataclass(frozen=True, slots=True)
class OutcomeNames:
    evt: str
    metric: str
    http_status: int
    problem: ProblemName | None
    sentry_message: bool

    @property
    def sentry_name(self) -> str:
        """The Sentry message or transaction name: the evt with dashes."""
        return self.evt.replace("_", "-")


OUTCOME_NAMES: Mapping[Outcome, OutcomeNames] = MappingProxyType(
    {
        Outcome.APPLIED: OutcomeNames("order_status_success", "applied", 200, None, False),
        Outcome.CONFLICT: OutcomeNames(
            "order_status_conflict",
            "conflict",
            409,
            ProblemName("conflict", "Order status conflict"),
            True,
        ),
        Outcome.FORBIDDEN: OutcomeNames(
            "order_status_forbidden",
            "forbidden",
            403,
            ProblemName("order-status-forbidden", "Forbidden"),
            True,
        ),
        Outcome.NOT_FOUND: OutcomeNames(
            "order_status_not_found",
            "not_found",
            404,
            ProblemName("order-not-found", "Order not found"),
            False,
        ),
        Outcome.INVALID: OutcomeNames(
            "order_status_invalid",
            "invalid",
            422,
            ProblemName("invalid-command", "Invalid command"),
            False,
        ),
        Outcome.ERROR: OutcomeNames(
            "order_status_exception",
            "error",
            500,
            ProblemName("order-status-exception", "Internal error"),
            False,
        ),
    }
)

UNAVAILABLE_EVENT = "order_status_unavailable"
"""The API's answer when Kafka did not take a command: no outcome, nothing happened."""
TIMEOUT_EVENT = "order_status_timeout"
"""The API's answer when a command's outcome did not come within the reply timeout."""
