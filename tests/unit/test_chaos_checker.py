"""The chaos checker's rules on hand-made evidence: a consistent run passes, and each kind of damage
(a lost outcome, a second visible result, a reordered event, a wrong answer...) is reported under
the right heading. Also the load's order plans and the fault plan."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.messages import CommandResult, OrderView, Outcome
from services.core.statuses import FINAL_STATUSES, OrderStatus, can_transition
from tests.chaos.actions import SINGLE_BROKER_KINDS, FaultKind, fault_plan
from tests.chaos.checker import (
    Evidence,
    OrderRow,
    PublishedCommand,
    StatusChangeRow,
    StoredOutcome,
    Verdict,
    VisibleEvent,
    VisibleResult,
    check,
)
from tests.chaos.load import Attempt, KeyedRequest, order_plan

WALK = ["pending", "accepted", "preparing", "ready", "completed"]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def walked_orders(orders: int = 2) -> Evidence:
    """Evidence of `orders` orders walked to completed, every part of it consistent."""
    evidence = Evidence([], [], [], [], [], [], [], 0)
    restaurant = uuid.uuid4()
    for n in range(orders):
        order_id = uuid.uuid4()
        for version, status in enumerate(WALK, start=1):
            command_id, key = str(uuid.uuid4()), f"k{n}-{version}"
            created = version == 1
            result = CommandResult(
                command_id=uuid.UUID(command_id),
                order_id=order_id,
                command_type="create_order" if created else "change_status",
                outcome=Outcome.APPLIED,
                order=OrderView(
                    order_id=order_id,
                    restaurant_id=restaurant,
                    status=OrderStatus(status),
                    version=version,
                    updated_at=NOW,
                ),
                processed_at=NOW,
            )
            evidence.requests.append(
                KeyedRequest(
                    key=key,
                    terminal=n,
                    seq=len(evidence.requests),
                    order_id=str(order_id),
                    command_type=result.command_type,
                    status=None if created else status,
                    expected_version=None if created else version - 1,
                    deliberately_stale=False,
                    respond_async=False,
                    attempts=[Attempt(f"{key}.0", 201 if created else 200, command_id)],
                    command_ids={command_id},
                    final_status=201 if created else 200,
                    answer={"order_id": str(order_id), "status": status, "version": version},
                )
            )
            offset = len(evidence.commands)
            evidence.commands.append(
                PublishedCommand(command_id, str(order_id), f"{key}.0", n % 2, offset)
            )
            evidence.inbox.append(
                StoredOutcome(
                    command_id,
                    str(order_id),
                    result.command_type,
                    "applied",
                    result.model_dump(mode="json"),
                    {},
                )
            )
            if not created:
                evidence.status_changes.append(
                    StatusChangeRow(offset, str(order_id), version, command_id, status)
                )
            evidence.results.append(VisibleResult(command_id, duplicate=False))
            evidence.events.append(
                VisibleEvent(command_id, str(order_id), version, status, n % 2, offset)
            )
        evidence.orders.append(OrderRow(str(order_id), "completed", len(WALK)))
    return evidence


def test_a_consistent_run_passes() -> None:
    verdict = check(walked_orders())
    assert verdict.passed
    assert (verdict.accepted, verdict.published, verdict.outcomes["applied"]) == (10, 10, 10)


def _drop_inbox_row(e: Evidence) -> None:
    e.inbox.pop(3)


def _drop_result(e: Evidence) -> None:
    e.results.pop(3)


def _drop_event(e: Evidence) -> None:
    e.events.pop(4)
    e.events[3:] = [replace(ev, offset=ev.offset - 1) for ev in e.events[3:]]


def _drop_published_command(e: Evidence) -> None:
    e.commands.pop(2)


def _second_visible_result(e: Evidence) -> None:
    e.results.append(e.results[2])


def _flagged_duplicate_result(e: Evidence) -> None:
    e.results.append(replace(e.results[2], duplicate=True))


def _event_published_twice(e: Evidence) -> None:
    e.events.append(replace(e.events[1], offset=99))


def _one_key_two_commands(e: Evidence) -> None:
    e.requests[1].command_ids.add(str(uuid.uuid4()))


def _phantom_after_503(e: Evidence) -> None:
    """A 503 attempt ("nothing changed") whose command was applied all the same, and a retry
    under the same key that became another command."""
    request = e.requests[1]
    retry = str(uuid.uuid4())
    request.attempts = [
        Attempt(f"{request.key}.0", 503, None),
        Attempt(f"{request.key}.1", 200, retry),
    ]
    request.command_ids = {retry}


def _events_swapped(e: Evidence) -> None:
    e.events[1], e.events[2] = (
        replace(e.events[2], offset=e.events[1].offset),
        replace(e.events[1], offset=e.events[2].offset),
    )


def _wrong_answer_version(e: Evidence) -> None:
    e.requests[2].answer = {**(e.requests[2].answer or {}), "version": 7}


def _wrong_answer_status(e: Evidence) -> None:
    e.requests[2].final_status = 409


def _row_version_gap(e: Evidence) -> None:
    e.status_changes[1] = replace(e.status_changes[1], version=9)


def _order_row_behind(e: Evidence) -> None:
    e.orders[0] = replace(e.orders[0], status="ready", version=4)


def _order_row_missing(e: Evidence) -> None:
    """An order created and walked, its events all there, and no row in orders."""
    e.orders.pop(0)


def _event_of_an_order_never_created(e: Evidence) -> None:
    e.events.append(VisibleEvent(str(uuid.uuid4()), str(uuid.uuid4()), 1, "pending", 0, 900))


def _inbox_outcome_of_a_command_never_published(e: Evidence) -> None:
    e.inbox.append(replace(e.inbox[1], command_id=str(uuid.uuid4()), outcome="conflict"))


@pytest.mark.parametrize(
    ("damage", "heading"),
    [
        (_order_row_missing, "disagreements"),
        (_event_of_an_order_never_created, "disagreements"),
        (_inbox_outcome_of_a_command_never_published, "disagreements"),
        (_drop_inbox_row, "lost"),
        (_drop_result, "lost"),
        (_drop_event, "lost"),
        (_drop_published_command, "lost"),
        (_second_visible_result, "duplicated"),
        (_event_published_twice, "duplicated"),
        (_one_key_two_commands, "duplicated"),
        (_events_swapped, "out_of_order"),
        (_row_version_gap, "out_of_order"),
        (_order_row_behind, "out_of_order"),
        (_wrong_answer_version, "inconsistent"),
        (_wrong_answer_status, "inconsistent"),
        (_phantom_after_503, "inconsistent"),
    ],
)
def test_each_kind_of_damage_is_reported_under_its_heading(
    damage: Callable[[Evidence], None], heading: str
) -> None:
    evidence = walked_orders()
    damage(evidence)
    verdict = check(evidence)
    assert getattr(verdict, heading).count >= 1, getattr(verdict, heading)
    assert not verdict.passed


def _duplicate_status_row(e: Evidence) -> None:
    """The same change written twice to order_status_events (another row id)."""
    e.status_changes.append(replace(e.status_changes[0], row_id=1000))


def _two_commands_applied_for_one_key(e: Evidence) -> None:
    """A retry of request 2 (its attempt .1) became a second command, and it was applied."""
    first = e.commands[2]
    second = PublishedCommand(str(uuid.uuid4()), first.order_id, first.rid[:-1] + "1", 0, 500)
    e.commands.append(second)
    stored = next(o for o in e.inbox if o.command_id == first.command_id)
    e.inbox.append(replace(stored, command_id=second.command_id))


def _applied_without_status_row(e: Evidence) -> None:
    e.status_changes.pop()  # the last change of the last order: no version gap follows


def _events_on_two_partitions(e: Evidence) -> None:
    e.events[2] = replace(e.events[2], partition=e.events[2].partition + 1)


def _applied_in_another_order(e: Evidence) -> None:
    """A terminal's requests 2 and 3 of one order: sent in one order, applied in the other."""
    e.requests[2].seq, e.requests[3].seq = e.requests[3].seq, e.requests[2].seq


def _second_order_for_one_key(e: Evidence) -> None:
    """The create of request 0 retried (attempt .1) after a 503: a second order was created."""
    first = e.commands[0]
    other_order = str(uuid.uuid4())
    second = PublishedCommand(str(uuid.uuid4()), other_order, first.rid[:-1] + "1", 0, 501)
    e.commands.append(second)
    stored = next(o for o in e.inbox if o.command_id == first.command_id)
    e.inbox.append(replace(stored, command_id=second.command_id, order_id=other_order))


@pytest.mark.parametrize(
    ("damage", "heading", "says"),
    [
        (_duplicate_status_row, "duplicated", "2 rows in order_status_events"),
        (_two_commands_applied_for_one_key, "duplicated", "2 commands applied"),
        (_applied_without_status_row, "lost", "no row in order_status_events"),
        (_events_on_two_partitions, "out_of_order", "events on several partitions"),
        (_applied_in_another_order, "out_of_order", "applied in another order"),
        (_second_order_for_one_key, "duplicate_orders", "2 orders"),
    ],
)
def test_each_rule_reports_its_damage(
    damage: Callable[[Evidence], None], heading: str, says: str
) -> None:
    """Each of these rules, fed the damage it exists for, names it (not only some other rule)."""
    evidence = walked_orders()
    damage(evidence)
    verdict = check(evidence)
    finding = getattr(verdict, heading)
    assert any(says in example for example in finding.examples), finding
    assert not verdict.passed


@pytest.mark.parametrize(
    "damage",
    [
        lambda v: v.inconsistent.add("answered 200, stored as a conflict"),
        lambda v: setattr(v, "unresolved", 1),
        lambda v: v.unexpected_conflicts.update({"stale-version": 1}),
        lambda v: v.duplicate_orders.add("key k: 2 orders"),
    ],
)
def test_every_wrong_answer_fails_the_verdict(damage: Callable[[Verdict], None]) -> None:
    verdict = check(walked_orders())
    assert verdict.passed
    damage(verdict)
    assert not verdict.passed


def test_a_second_copy_flagged_duplicate_is_not_a_duplicate() -> None:
    evidence = walked_orders()
    _flagged_duplicate_result(evidence)
    assert check(evidence).passed


@given(st.integers(min_value=0, max_value=2**32))
def test_every_order_plan_is_a_legal_walk_to_a_final_status(seed: int) -> None:
    plan = order_plan(random.Random(seed))
    current = OrderStatus.PENDING
    for step in plan.steps:
        assert can_transition(current, step.status)
        current = step.status
    assert current in FINAL_STATUSES


@given(st.integers(min_value=1, max_value=60), st.integers(min_value=0, max_value=2**32))
def test_the_fault_plan_covers_every_kind_and_adds_before_it_removes(
    rounds: int, seed: int
) -> None:
    plan = fault_plan(rounds, random.Random(seed))
    assert len(plan) == rounds
    cycle = len(SINGLE_BROKER_KINDS)
    for start in range(0, rounds - cycle + 1, cycle):
        assert set(plan[start : start + cycle]) == set(SINGLE_BROKER_KINDS)
    added = 0
    for kind in plan:
        added += {FaultKind.WORKER_ADD: 1, FaultKind.WORKER_REMOVE: -1}.get(kind, 0)
        assert added in (0, 1)
