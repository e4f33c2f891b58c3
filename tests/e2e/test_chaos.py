"""The short version of `make chaos`: one round of each fault under load, on the run's own Kafka
broker and PostgreSQL (so a developer's stack is left alone), then the checker's verdict."""

from __future__ import annotations

import pytest
from rich.console import Console

from tests.chaos.actions import SINGLE_BROKER_KINDS
from tests.chaos.run import ChaosConfig, print_summary, run_chaos


@pytest.mark.timeout(600)  # a bound on a hang, not a performance claim
def test_one_round_of_each_fault_under_load_loses_duplicates_and_reorders_nothing() -> None:
    """Including kill -9 of the API (retries under the same Idempotency-Key) and POSTs without
    order_id (a retry that became a second order is a duplicate order)."""
    config = ChaosConfig(
        rounds=len(SINGLE_BROKER_KINDS), commands=1_000, terminals=12, max_minutes=8, seed=20261127
    )
    console = Console(width=140)
    result = run_chaos(config, console)
    print_summary(result, console)

    verdict = result.verdict
    assert verdict.lost.count == 0, verdict.lost.examples
    assert verdict.duplicated.count == 0, verdict.duplicated.examples
    assert verdict.out_of_order.count == 0, verdict.out_of_order.examples
    assert verdict.duplicate_orders.count == 0, verdict.duplicate_orders.examples
    # Every published command and created order in all three places (tests/exactly_once.py).
    assert verdict.disagreements.count == 0, verdict.disagreements.examples
    assert verdict.inconsistent.count == 0, verdict.inconsistent.examples  # no wrong answer
    assert verdict.unresolved == 0  # every request got a known final answer
    assert not verdict.unexpected_conflicts, verdict.unexpected_conflicts
    assert result.stalls == 0, [r for r in result.rounds if r.recovered_s is None]
    assert {r.kind for r in result.rounds} == set(SINGLE_BROKER_KINDS)
    assert verdict.accepted >= config.commands
    # Every command the API named is in Kafka (the checker's `lost`); published may exceed
    # accepted by attempts that ended without an answer. Each published command has one outcome:
    assert sum(verdict.outcomes.values()) == verdict.published
    assert verdict.passed
