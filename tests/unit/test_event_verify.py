"""`orderstatus verify`'s comparison (services/ops/event_verify.find_damage): a consistent story
passes, and each kind of damage names the order it hit and only that one."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace

import pytest

from services.ops.event_verify import ChangeRow, Evidence, OrderRow, PublishedEvent, find_damage

WALK = ["pending", "accepted", "preparing", "ready", "completed"]


def walked(orders: int = 3) -> Evidence:
    evidence = Evidence([], [], [])
    for n in range(orders):
        order_id, restaurant = uuid.uuid4(), uuid.uuid4()
        evidence.orders.append(OrderRow(order_id, restaurant, WALK[-1], len(WALK)))
        created = uuid.uuid4()
        evidence.events.append(PublishedEvent(order_id, 1, WALK[0], str(created), f"e:{n}:0"))
        for version in range(2, len(WALK) + 1):
            command_id = uuid.uuid4()
            evidence.changes.append(
                ChangeRow(order_id, version, WALK[version - 2], WALK[version - 1], command_id)
            )
            evidence.events.append(
                PublishedEvent(
                    order_id, version, WALK[version - 1], str(command_id), f"e:{n}:{version}"
                )
            )
    return evidence


def test_a_consistent_story_passes() -> None:
    assert find_damage(walked()) == {}


def test_a_new_order_without_changes_passes() -> None:
    order_id = uuid.uuid4()
    evidence = Evidence(
        [OrderRow(order_id, uuid.uuid4(), "pending", 1)],
        [],
        [PublishedEvent(order_id, 1, "pending", str(uuid.uuid4()), "e:0:0")],
    )
    assert find_damage(evidence) == {}


def _bump_version(e: Evidence) -> None:
    e.orders[1] = replace(e.orders[1], version=6)


def _change_status(e: Evidence) -> None:
    e.orders[1] = replace(e.orders[1], status="cancelled")


def _drop_change(e: Evidence) -> None:
    e.changes.pop(5)  # order 1, version 3


def _break_the_chain(e: Evidence) -> None:
    e.changes[5] = replace(e.changes[5], from_status="pending")


def _drop_event(e: Evidence) -> None:
    e.events.pop(7)  # order 1, version 3


def _repeat_event(e: Evidence) -> None:
    e.events.append(replace(e.events[7], where="e:1:99"))


def _swap_events(e: Evidence) -> None:
    e.events[7], e.events[8] = e.events[8], e.events[7]


def _wrong_event_id(e: Evidence) -> None:
    e.events[7] = replace(e.events[7], event_id=str(uuid.uuid4()))


def _wrong_event_status(e: Evidence) -> None:
    e.events[7] = replace(e.events[7], to_status="cancelled")


DAMAGE: dict[str, Callable[[Evidence], None]] = {
    "orders.version": _bump_version,
    "orders.status": _change_status,
    "order_status_events versions": _drop_change,
    "starts from": _break_the_chain,
    "events topic versions [1, 2, 4, 5]": _drop_event,
    "published 2 times": _repeat_event,
    "events topic versions [1, 2, 4, 3, 5]": _swap_events,
    "v3: event": _wrong_event_id,
    "to cancelled, change": _wrong_event_status,
}


@pytest.mark.parametrize("damage", list(DAMAGE.values()), ids=list(DAMAGE))
def test_damage_names_the_order_it_hit(damage: Callable[[Evidence], None]) -> None:
    evidence = walked()
    damage(evidence)
    found = find_damage(evidence)
    assert list(found) == [str(evidence.orders[1].order_id)]
    expected = next(k for k, v in DAMAGE.items() if v is damage)
    assert any(expected in problem for problem in found[str(evidence.orders[1].order_id)]), found


def test_events_of_an_order_that_does_not_exist_are_damage() -> None:
    evidence = walked()
    ghost = uuid.uuid4()
    evidence.events.append(PublishedEvent(ghost, 1, "pending", str(uuid.uuid4()), "e:0:50"))
    assert list(find_damage(evidence)) == [str(ghost)]


def test_a_record_that_is_not_an_event_is_reported_by_position() -> None:
    evidence = walked()
    evidence.events.append(PublishedEvent(None, 0, "", "", "order-status.events:2:17"))
    assert find_damage(evidence) == {"topic": ["order-status.events:2:17: not an order event"]}
