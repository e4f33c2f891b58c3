"""The state machine against the spec, pair by pair: all 49 (from, to) combinations."""

from __future__ import annotations

from collections import deque
from itertools import product

import pytest

from services.core.statuses import FINAL_STATUSES, TRANSITIONS, OrderStatus, can_transition

# The spec, written out independently of the code under test.
SPEC_ALLOWED = {
    ("pending", "accepted"),
    ("pending", "rejected"),
    ("pending", "cancelled"),
    ("accepted", "preparing"),
    ("accepted", "cancelled"),
    ("preparing", "ready"),
    ("preparing", "cancelled"),
    ("ready", "completed"),
    ("ready", "cancelled"),
}
SPEC_FINAL = {"completed", "cancelled", "rejected"}
SPEC_STATUSES = ["pending", "accepted", "rejected", "preparing", "ready", "completed", "cancelled"]

ALL_PAIRS = list(product(SPEC_STATUSES, SPEC_STATUSES))


def test_the_statuses_are_exactly_the_seven_of_the_spec() -> None:
    assert sorted(s.value for s in OrderStatus) == sorted(SPEC_STATUSES)
    assert set(TRANSITIONS) == set(OrderStatus)


def test_the_table_covers_all_49_pairs() -> None:
    assert len(ALL_PAIRS) == 49


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_transition_is_allowed_exactly_when_the_spec_allows_it(current: str, target: str) -> None:
    allowed = (current, target) in SPEC_ALLOWED
    assert can_transition(OrderStatus(current), OrderStatus(target)) is allowed
    assert (OrderStatus(target) in TRANSITIONS[OrderStatus(current)]) is allowed


def test_final_statuses_are_completed_cancelled_rejected() -> None:
    assert {s.value for s in FINAL_STATUSES} == SPEC_FINAL


@pytest.mark.parametrize("status", list(OrderStatus), ids=str)
def test_a_status_is_final_exactly_when_it_has_no_way_out(status: OrderStatus) -> None:
    assert (status in FINAL_STATUSES) is (not TRANSITIONS[status])


@pytest.mark.parametrize("status", list(OrderStatus), ids=str)
def test_no_status_transitions_to_itself(status: OrderStatus) -> None:
    assert not can_transition(status, status)


def test_every_status_is_reachable_from_pending() -> None:
    reached = {OrderStatus.PENDING}
    frontier = deque(reached)
    while frontier:
        for nxt in TRANSITIONS[frontier.popleft()]:
            if nxt not in reached:
                reached.add(nxt)
                frontier.append(nxt)
    assert reached == set(OrderStatus)


def test_nothing_leads_back_to_pending() -> None:
    assert all(OrderStatus.PENDING not in targets for targets in TRANSITIONS.values())


@pytest.mark.parametrize("status", sorted(set(OrderStatus) - FINAL_STATUSES), ids=str)
def test_every_open_status_can_be_cancelled(status: OrderStatus) -> None:
    assert can_transition(status, OrderStatus.CANCELLED)
