"""The pure pieces of `make chaos-cluster`: the weighted fault plan, the targets it must meet, the
ISR bookkeeping of the node faults, and the figures of what a client saw while a leader moved."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from tests.chaos.actions import (
    CLUSTER_SHARES,
    CLUSTER_WEIGHTS,
    PAIRS,
    SINGLE_BROKER_KINDS,
    FaultKind,
    RoundRecord,
    fault_plan,
    holding,
    minimum_counts,
)
from tests.chaos.infra import PartitionState
from tests.chaos.load import Attempt, Endpoints, KeyedRequest, attempts_of, client_view
from tests.chaos.run import ChaosConfig

CYCLE = sum(CLUSTER_WEIGHTS.values())


def test_a_hundred_cluster_rounds_hold_each_kind_as_often_as_its_weight_says() -> None:
    plan = fault_plan(100, random.Random(7), CLUSTER_WEIGHTS)
    counts = Counter(plan)
    assert len(plan) == 100
    assert counts == {kind: weight * 100 // CYCLE for kind, weight in CLUSTER_WEIGHTS.items()}
    assert counts[FaultKind.LEADER_KILL] >= 20
    assert counts[FaultKind.ISR_DROP] >= 10
    assert FaultKind.BROKER_RESTART not in counts  # the whole-broker restart is a single-node fault


@given(st.integers(min_value=1, max_value=130), st.integers(min_value=0, max_value=2**32))
def test_every_prefix_of_the_cluster_plan_holds_each_kind_in_proportion(
    rounds: int, seed: int
) -> None:
    plan = fault_plan(rounds, random.Random(seed), CLUSTER_WEIGHTS)
    assert len(plan) == rounds
    for kind, weight in CLUSTER_WEIGHTS.items():
        if any(kind in pair for pair in PAIRS):
            continue  # adds and removes trade places (the next test)
        assert abs(plan.count(kind) - rounds * weight / CYCLE) < 2, kind


@given(st.integers(min_value=1, max_value=130), st.integers(min_value=0, max_value=2**32))
def test_the_cluster_plan_adds_a_worker_or_an_api_before_it_removes_it(
    rounds: int, seed: int
) -> None:
    plan = fault_plan(rounds, random.Random(seed), CLUSTER_WEIGHTS)
    for add, remove in PAIRS:
        present = 0
        for kind in plan:
            present += {add: 1, remove: -1}.get(kind, 0)
            assert present in (0, 1), (add, plan)


def test_the_single_broker_plan_is_unchanged_by_the_cluster_kinds() -> None:
    plan = fault_plan(70, random.Random(3))
    assert set(plan) == set(SINGLE_BROKER_KINDS)
    assert Counter(plan) == dict.fromkeys(SINGLE_BROKER_KINDS, 10)
    assert ChaosConfig().weights == dict.fromkeys(SINGLE_BROKER_KINDS, 1)
    assert ChaosConfig().minimums == {}


def test_a_cluster_run_must_hold_a_fifth_leader_kills_and_a_tenth_isr_drops() -> None:
    assert minimum_counts(100, CLUSTER_SHARES) == {
        FaultKind.LEADER_KILL: 20,
        FaultKind.ISR_DROP: 10,
    }
    assert minimum_counts(12, CLUSTER_SHARES) == {FaultKind.LEADER_KILL: 2, FaultKind.ISR_DROP: 1}
    config = ChaosConfig(cluster=True, kinds=(FaultKind.LEADER_KILL, FaultKind.WORKER_KILL))
    assert config.weights == {FaultKind.LEADER_KILL: 6, FaultKind.WORKER_KILL: 3}
    assert config.minimums == {FaultKind.LEADER_KILL: 20}  # no ISR drop asked for, none required


def test_an_isr_drop_that_was_never_seen_does_not_count() -> None:
    def record(kind: FaultKind, isr_drop_s: float | None) -> RoundRecord:
        return RoundRecord(1, kind, "", 1.0, 0.5, 10, isr_drop_s=isr_drop_s)

    assert record(FaultKind.ISR_DROP, 7.5).counts
    assert not record(FaultKind.ISR_DROP, None).counts
    assert record(FaultKind.LEADER_KILL, None).counts
    assert record(FaultKind.LEADER_KILL, None).recovered_at == 0.5
    assert RoundRecord(1, FaultKind.API_KILL, "", 1.0, None, 10).recovered_at is None


def test_a_paused_broker_has_left_the_isr_only_when_no_partition_holds_it() -> None:
    states = [
        PartitionState("commands", 0, 1, (1, 2, 3), (1, 3)),
        PartitionState("commands", 1, 3, (1, 2, 3), (3, 1)),
        PartitionState("__consumer_offsets", 0, 2, (1, 2, 3), (1, 2, 3)),
    ]
    assert holding(states, 2) == [states[2]]
    assert holding(states[:2], 2) == []
    assert [s.in_sync for s in states] == [False, False, True]
    assert PartitionState("events", 0, 2, (2, 3, 1), (1, 3, 2)).in_sync


def attempt(status: int | None, sent_at: float, latency_s: float) -> Attempt:
    return Attempt(f"k.{sent_at}", status, None, sent_at, latency_s)


def test_the_client_view_counts_latency_and_the_longest_stretch_without_a_2xx() -> None:
    attempts = [
        attempt(200, 99.0, 0.5),  # answered before the window
        attempt(200, 100.0, 0.1),  # 100.1
        attempt(503, 100.5, 0.05),  # 100.55
        attempt(None, 101.0, 1.0),  # 102.0
        attempt(504, 100.0, 3.0),  # 103.0
        attempt(201, 104.0, 0.2),  # 104.2: 4.1 s after the last 2xx
        attempt(200, 105.0, 0.3),  # 105.3
        attempt(200, 109.0, 2.0),  # 111.0, after the window
    ]
    view = client_view(attempts, [(100.0, 108.0)])
    assert view.answers == {"200": 2, "201": 1, "503": 1, "504": 1, "conn-error": 1}
    assert view.windows == 1
    assert view.window_s == 8.0
    assert round(view.longest_gap_2xx_s, 6) == 4.1  # from the 2xx at 100.1 to the next, at 104.2
    assert view.max_ms == 3000.0
    assert view.p50_ms is not None and view.p95_ms is not None
    assert round(view.p50_ms) == 200  # 50, 100, 200, 300, 1000, 3000: the 3rd
    assert round(view.p95_ms) == 3000


def test_the_client_view_of_several_windows_pools_them() -> None:
    attempts = [attempt(200, 10.0, 0.1), attempt(503, 20.0, 0.1), attempt(200, 24.0, 0.1)]
    view = client_view(attempts, [(10.0, 11.0), (20.0, 25.0)])
    assert view.answers == {"200": 2, "503": 1}
    assert view.windows == 2
    assert view.window_s == 6.0
    assert round(view.longest_gap_2xx_s, 6) == 4.1  # 20.0 to the 2xx at 24.1


def test_a_window_without_answers_is_one_gap() -> None:
    view = client_view([], [(0.0, 12.5)])
    assert view.answers == {}
    assert view.p50_ms is None and view.max_ms is None
    assert view.longest_gap_2xx_s == 12.5


def test_the_client_view_reads_every_attempt_of_every_request() -> None:
    def request(key: str, *attempts: Attempt) -> KeyedRequest:
        keyed = KeyedRequest(key, 0, 0, "o", "change_status", "ready", None, False, False)
        keyed.attempts.extend(attempts)
        return keyed

    first, second, third = attempt(504, 1.0, 3.0), attempt(200, 4.5, 0.1), attempt(200, 2.0, 0.1)
    requests = [request("a", first, second), request("b", third)]
    assert list(attempts_of(requests)) == [first, second, third]
    assert client_view(attempts_of(requests), [(0.0, 5.0)]).answers == {"200": 2, "504": 1}


def test_the_endpoints_spread_attempts_over_the_api_processes_the_fleet_lists() -> None:
    endpoints = Endpoints("http://a")
    rng = random.Random(1)
    assert endpoints.url("/orders", rng) == "http://a/orders"
    endpoints.set(["http://a", "http://b"])
    assert {endpoints.url("/x", rng) for _ in range(50)} == {"http://a/x", "http://b/x"}
