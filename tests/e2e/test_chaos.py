"""The short version of `make chaos`: one round of each fault under load, on the run's own Kafka
broker and PostgreSQL (so a developer's stack is left alone), then the checker's verdict."""

from __future__ import annotations

import pytest
from rich.console import Console

from tests.chaos.actions import FaultKind
from tests.chaos.run import ChaosConfig, print_summary, run_chaos


@pytest.mark.timeout(600)  # a bound on a hang, not a performance claim
def test_one_round_of_each_fault_under_load_loses_duplicates_and_reorders_nothing() -> None:
    config = ChaosConfig(
        rounds=len(FaultKind), commands=1_000, terminals=12, max_minutes=8, seed=20261127
    )
    console = Console(width=140)
    result = run_chaos(config, console)
    print_summary(result, console)

    verdict = result.verdict
    assert verdict.lost.count == 0, verdict.lost.examples
    assert verdict.duplicated.count == 0, verdict.duplicated.examples
    assert verdict.out_of_order.count == 0, verdict.out_of_order.examples
    assert result.stalls == 0, [r for r in result.rounds if r.recovered_s is None]
    assert {r.kind for r in result.rounds} == set(FaultKind)
    assert verdict.accepted >= config.commands
    assert verdict.published == verdict.accepted  # every command the API named is in Kafka
    assert sum(verdict.outcomes.values()) == verdict.published  # ...and has one outcome
