"""What happens after an attempt: delivered, retried later (when and why), or given up; and when an
endpoint that keeps failing is disabled. Pure: the clock and the randomness are arguments."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

JITTER = 0.2
"""Each retry delay is the schedule's delay times a uniform factor in [1 - JITTER, 1 + JITTER], so
many deliveries failing together do not come back together."""


class AttemptResult(enum.StrEnum):
    """One attempt's result, the `result` label of orderstatus_webhook_attempts_total."""

    SUCCESS = "success"
    HTTP_ERROR = "http_error"  # any status but 2xx and 410
    GONE = "gone"  # 410: the receiver asks us to stop; the endpoint is disabled
    TIMEOUT = "timeout"
    NETWORK_ERROR = "network_error"
    REFUSED = "refused"  # the URL resolves to an address we may not connect to


class Verdict(enum.StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"  # the schedule is used up
    DISABLE = "disable"  # 410


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    next_attempt_at: datetime | None = None


def parse_schedule(text: str) -> tuple[float, ...]:
    """`"5,300,1800"` -> (5.0, 300.0, 1800.0): delays before retry 1, 2, 3 (then give up)."""
    try:
        delays = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"retry schedule: comma-separated seconds, not {text!r}") from exc
    if any(d < 0 for d in delays):
        raise ValueError("retry schedule: delays must not be negative")
    return delays


def result_of_status(status_code: int) -> AttemptResult:
    if 200 <= status_code < 300:
        return AttemptResult.SUCCESS
    if status_code == 410:
        return AttemptResult.GONE
    return AttemptResult.HTTP_ERROR


def retry_after_s(header: str | None, now: datetime) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None when absent or bad."""
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def decide(
    result: AttemptResult,
    attempts_made: int,
    schedule: tuple[float, ...],
    now: datetime,
    rng: random.Random,
    retry_after: float | None = None,
) -> Decision:
    """After attempt number `attempts_made` (1 = the first): the delivery's next state.

    Retry-After lengthens the delay (never shortens it), bounded by the schedule's longest delay so
    a receiver cannot park a delivery forever."""
    if result is AttemptResult.SUCCESS:
        return Decision(Verdict.DELIVERED)
    if result is AttemptResult.GONE:
        return Decision(Verdict.DISABLE)
    retry = attempts_made  # retries already made + 1 = index of the next delay
    if retry > len(schedule):
        return Decision(Verdict.FAILED)
    delay = schedule[retry - 1] * rng.uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay = max(delay, min(retry_after, max(schedule)))
    return Decision(Verdict.RETRY, now + timedelta(seconds=delay))
