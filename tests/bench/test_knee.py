"""The knee rule of `make bench` (tests/bench/run.py): pure, no services."""

from __future__ import annotations

from typing import Any

from tests.bench.run import knee_of


def step(rate: float, p95_ms: float, non_5xx: float = 1.0) -> dict[str, Any]:
    return {"rate": rate, "p95_ms": p95_ms, "non_5xx_share": non_5xx}


def test_knee_is_the_highest_rate_within_both_limits() -> None:
    steps = [step(250, 20), step(500, 40), step(1000, 299.9), step(1500, 301), step(2000, 900)]
    assert knee_of(steps) == 1000


def test_a_rate_with_too_many_5xx_or_unanswered_requests_is_not_the_knee() -> None:
    assert knee_of([step(250, 20), step(500, 30, non_5xx=0.998)]) == 250
    assert knee_of([step(250, 400)]) is None
