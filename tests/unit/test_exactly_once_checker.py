"""The exactly-once rules (tests/exactly_once.py) on hand-made observations: a consistent run has no
problem, a copy flagged duplicate is no problem, and each kind of damage in any of the three
places (results topic, events topic, database) is reported."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace

import pytest

from tests.exactly_once import (
    Observed,
    OrderRow,
    Sent,
    StatusChangeRow,
    StoredOutcome,
    VisibleEvent,
    VisibleResult,
    problems,
)
from tests.topics import change_command, create_command

WALK = ["pending", "accepted", "preparing", "ready", "completed"]


def walked(orders: int = 2) -> tuple[Sent, Observed]:
    """`orders` orders sent and walked to completed, all three places consistent; order n's
    events are on partition n, so events[n * 5 + v - 1] is order n's version v."""
    commands: dict[str, str] = {}
    seen = Observed([], [], [], [], [])
    for n in range(orders):
        order_id = str(uuid.uuid4())
        for version, status in enumerate(WALK, start=1):
            command_id = str(uuid.uuid4())
            commands[command_id] = order_id
            kind = "create_order" if version == 1 else "change_status"
            seen.inbox.append(StoredOutcome(command_id, order_id, kind, "applied", {}, {}))
            seen.results.append(VisibleResult(command_id, duplicate=False, outcome="applied"))
            seen.events.append(VisibleEvent(command_id, order_id, version, status, n, version))
            if version > 1:
                row_id = len(seen.status_changes)
                seen.status_changes.append(
                    StatusChangeRow(row_id, order_id, version, command_id, status)
                )
        seen.orders.append(OrderRow(order_id, "completed", len(WALK)))
    return Sent(commands, frozenset(o.order_id for o in seen.orders)), seen


def test_a_consistent_run_has_no_problem() -> None:
    assert problems(*walked()) == []


def test_copies_flagged_duplicate_are_no_problem() -> None:
    sent, seen = walked()
    seen.results.append(replace(seen.results[3], duplicate=True))
    assert problems(sent, seen) == []


def test_sent_counts_a_command_sent_twice_once_and_names_the_orders_it_created() -> None:
    create = create_command(uuid.uuid4())
    accept = change_command(create.order_id, "accepted")
    stray = change_command(uuid.uuid4(), "accepted")
    sent = Sent.of([create, accept, accept, stray])
    assert dict(sent.commands) == {
        str(create.command_id): str(create.order_id),
        str(accept.command_id): str(create.order_id),
        str(stray.command_id): str(stray.order_id),
    }
    assert sent.orders == {str(create.order_id)}


Damage = Callable[[Sent, Observed], Sent | None]
"""Damages the observation in place (or returns a different `Sent`)."""


def _order_missing_everywhere(sent: Sent, seen: Observed) -> None:
    """The second order was sent, and not one of its commands left a trace."""
    gone = seen.orders.pop().order_id
    seen.results[:] = [r for r in seen.results if sent.commands[r.command_id] != gone]
    seen.events[:] = [e for e in seen.events if e.order_id != gone]
    seen.inbox[:] = [o for o in seen.inbox if o.order_id != gone]
    seen.status_changes[:] = [c for c in seen.status_changes if c.order_id != gone]


def _order_row_missing(sent: Sent, seen: Observed) -> None:
    seen.orders.pop(0)


def _extra_order_row(sent: Sent, seen: Observed) -> None:
    seen.orders.append(OrderRow(str(uuid.uuid4()), "pending", 1))


def _order_row_behind_its_events(sent: Sent, seen: Observed) -> None:
    seen.orders[0] = replace(seen.orders[0], status="ready", version=4)


def _event_published_twice(sent: Sent, seen: Observed) -> None:
    seen.events.append(replace(seen.events[2], offset=99))


def _event_missing(sent: Sent, seen: Observed) -> None:
    seen.events.pop(2)


def _version_gap(sent: Sent, seen: Observed) -> None:
    """Version 3 of the first order is numbered 4: the log reads 1, 2, 4, 4, 5."""
    seen.events[2] = replace(seen.events[2], version=4)


def _events_out_of_order(sent: Sent, seen: Observed) -> None:
    first, second = seen.events[1], seen.events[2]
    seen.events[1], seen.events[2] = (
        replace(second, offset=first.offset),
        replace(first, offset=second.offset),
    )


def _events_on_two_partitions(sent: Sent, seen: Observed) -> None:
    seen.events[4] = replace(seen.events[4], partition=7)


def _event_for_an_order_never_created(sent: Sent, seen: Observed) -> None:
    seen.events.append(VisibleEvent(str(uuid.uuid4()), str(uuid.uuid4()), 1, "pending", 9, 0))


def _event_of_a_refused_command(sent: Sent, seen: Observed) -> None:
    seen.inbox[3] = replace(seen.inbox[3], outcome="conflict")
    seen.results[3] = replace(seen.results[3], outcome="conflict")


def _status_row_missing(sent: Sent, seen: Observed) -> None:
    seen.status_changes.pop(1)


def _status_row_twice(sent: Sent, seen: Observed) -> None:
    seen.status_changes.append(replace(seen.status_changes[1], row_id=99))


def _status_row_says_another_status(sent: Sent, seen: Observed) -> None:
    seen.status_changes[1] = replace(seen.status_changes[1], to_status="cancelled")


def _status_row_of_another_version(sent: Sent, seen: Observed) -> None:
    seen.status_changes[1] = replace(seen.status_changes[1], version=9)


def _result_missing(sent: Sent, seen: Observed) -> None:
    seen.results.pop(3)


def _result_twice_unflagged(sent: Sent, seen: Observed) -> None:
    seen.results.append(seen.results[3])


def _result_of_a_command_never_sent(sent: Sent, seen: Observed) -> None:
    seen.results.append(VisibleResult(str(uuid.uuid4()), duplicate=True, outcome="applied"))


def _result_says_another_outcome(sent: Sent, seen: Observed) -> None:
    seen.results[3] = replace(seen.results[3], outcome="conflict")


def _inbox_row_missing(sent: Sent, seen: Observed) -> None:
    seen.inbox.pop(3)


def _inbox_row_of_a_command_never_sent(sent: Sent, seen: Observed) -> None:
    seen.inbox.append(StoredOutcome(str(uuid.uuid4()), str(uuid.uuid4()), "x", "conflict", {}, {}))


def _inbox_row_twice(sent: Sent, seen: Observed) -> None:
    seen.inbox.append(seen.inbox[3])


def _inbox_row_for_another_order(sent: Sent, seen: Observed) -> None:
    seen.inbox[3] = replace(seen.inbox[3], order_id=str(uuid.uuid4()))


def _a_sent_command_nobody_saw(sent: Sent, seen: Observed) -> Sent:
    return Sent({**sent.commands, str(uuid.uuid4()): seen.orders[0].order_id}, sent.orders)


@pytest.mark.parametrize(
    ("damage", "reported"),
    [
        (_order_missing_everywhere, "created, no row in orders"),
        (_order_missing_everywhere, "created, no event visible"),
        (_order_missing_everywhere, "sent, no outcome in the inbox"),
        (_order_missing_everywhere, "sent, no result visible"),
        (_order_row_missing, "created, no row in orders"),
        (_extra_order_row, "a row in orders, never created"),
        (_order_row_behind_its_events, "row v4 ready, last event v5 completed"),
        (_event_published_twice, "published 2 times"),
        (_event_missing, "applied, no event visible"),
        (_event_missing, "events topic versions [1, 2, 4, 5]"),
        (_version_gap, "events topic versions [1, 2, 4, 4, 5]"),
        (_events_out_of_order, "events topic versions [1, 3, 2, 4, 5]"),
        (_events_on_two_partitions, "events on several partitions"),
        (_event_for_an_order_never_created, "events visible, never created"),
        (_event_of_a_refused_command, "no applied command of that id in the inbox"),
        (_status_row_missing, "order_status_events ['v2 accepted', 'v4 ready', 'v5 completed']"),
        (_status_row_twice, "order_status_events ['v2 accepted', 'v3 preparing', 'v4 ready', "),
        (_status_row_says_another_status, "'v3 cancelled'"),
        (_status_row_of_another_version, "'v9 preparing'"),
        (_result_missing, "sent, no result visible"),
        (_result_twice_unflagged, "2 results not flagged duplicate"),
        (_result_of_a_command_never_sent, "a result on the results topic, never sent"),
        (_result_says_another_outcome, "result says conflict, inbox says applied"),
        (_inbox_row_missing, "sent, no outcome in the inbox"),
        (_inbox_row_of_a_command_never_sent, "an outcome in the inbox, never sent"),
        (_inbox_row_twice, "2 outcomes in the inbox"),
        (_inbox_row_for_another_order, "inbox says order"),
        (_a_sent_command_nobody_saw, "sent, no outcome in the inbox"),
        (_a_sent_command_nobody_saw, "sent, no result visible"),
    ],
)
def test_each_kind_of_damage_is_reported(damage: Damage, reported: str) -> None:
    sent, seen = walked()
    sent = damage(sent, seen) or sent
    found = problems(sent, seen)
    assert any(reported in problem for problem in found), found
