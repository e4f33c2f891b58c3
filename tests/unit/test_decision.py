"""decide(): every status x target x expected_version x lookup x actor against the spec, then
properties over random command sequences."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise, product
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.decision import HIDDEN, Decision, Lookup, OrderState, StatusChange, decide
from services.core.messages import (
    Actor,
    ChangeStatus,
    ConflictType,
    CreateOrder,
    Outcome,
    Role,
)
from services.core.statuses import FINAL_STATUSES, TRANSITIONS, OrderStatus
from tests.unit.strategies import (
    UNIT_SETTINGS,
    actors,
    aware_datetimes,
    change_statuses,
    commands,
    order_states,
    statuses,
)

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(hours=1)
ORDER_ID = UUID("00000000-0000-4000-8000-00000000000a")
COMMAND_ID = UUID("00000000-0000-4000-8000-0000000000cc")
OWN = UUID("00000000-0000-4000-8000-000000000001")
"""The restaurant the staff member works for."""
OTHER = UUID("00000000-0000-4000-8000-000000000002")
CURRENT_VERSION = 3

ACTORS = {
    "staff-of-own": Actor(sub="staff-own", role=Role.AUTHENTICATED, restaurant_ids=(OWN,)),
    "staff-of-none": Actor(sub="staff-none", role=Role.AUTHENTICATED, restaurant_ids=()),
    "service": Actor(sub="pos", role=Role.SERVICE_ROLE, restaurant_ids=()),
}
EXPECTED_VERSIONS = {
    "none": None,
    "equal": CURRENT_VERSION,
    "stale-behind": CURRENT_VERSION - 1,
    "stale-ahead": CURRENT_VERSION + 1,
}
RESTAURANTS = {"own": OWN, "other": OTHER}
LOOKUP_KINDS = ["missing", "hidden", "own", "other"]
"""What the worker's read of the order, made as the caller under row-level security, found:
nothing, a row the policies hide from the caller, or a visible order of some restaurant.

Tenancy is the policies' business, not decide()'s: a visible order is one the caller may act for,
and a create the insert policy refuses is made `forbidden` by the worker (the RLS integration
tests cover both). So every actor must get the same answer for the same lookup; the tables below
check that across actors and restaurants."""


def lookup_of(kind: str, status: OrderStatus | None) -> Lookup:
    if kind == "missing":
        return None
    if kind == "hidden":
        return HIDDEN
    assert status is not None
    return OrderState(ORDER_ID, RESTAURANTS[kind], status, CURRENT_VERSION, EARLIER)


Summary = tuple[Outcome, ConflictType | None, OrderState | None, StatusChange | None]
"""What a decision says: outcome, conflict type, the order it shows, the change it makes."""


def summary(decision: Decision) -> Summary:
    return (decision.outcome, decision.conflict, decision.order, decision.change)


# ---- ChangeStatus ------------------------------------------------------------------------------

CHANGE_CASES = [
    (kind, current, target)
    for kind in LOOKUP_KINDS
    for current in (list(OrderStatus) if kind in RESTAURANTS else [None])
    for target in OrderStatus
]
"""One test per lookup x current status x target; each compares all versions x actors at once."""


def expected_change(lookup: Lookup, target: OrderStatus, version_kind: str) -> Summary:
    """The spec as a flat rule list: existence, then visibility, then version, then the transition.
    403 and 404 show nothing of the order; 409 shows its current state; 200 the new one."""
    if lookup is None:
        return (Outcome.NOT_FOUND, None, None, None)
    if not isinstance(lookup, OrderState):
        return (Outcome.FORBIDDEN, None, None, None)
    if version_kind.startswith("stale"):
        return (Outcome.CONFLICT, ConflictType.STALE_VERSION, lookup, None)
    if target not in TRANSITIONS[lookup.status]:
        return (Outcome.CONFLICT, ConflictType.INVALID_TRANSITION, lookup, None)
    version = lookup.version + 1
    changed = OrderState(ORDER_ID, lookup.restaurant_id, target, version, NOW)
    return (Outcome.APPLIED, None, changed, StatusChange(lookup.status, target, version))


def change_status(target: OrderStatus, expected_version: int | None, actor: Actor) -> ChangeStatus:
    return ChangeStatus(
        command_id=COMMAND_ID,
        order_id=ORDER_ID,
        actor=actor,
        issued_at=EARLIER,
        status=target,
        expected_version=expected_version,
    )


def test_the_change_table_has_every_combination() -> None:
    # 2 invisible lookups x 7 targets + 2 visible lookups x 7 statuses x 7 targets
    assert len(CHANGE_CASES) == 2 * 7 + 2 * 49
    assert len(list(product(CHANGE_CASES, EXPECTED_VERSIONS, ACTORS))) == 112 * 4 * 3


@pytest.mark.parametrize(
    ("kind", "current", "target"),
    CHANGE_CASES,
    ids=[f"{k}-{c}->{t}" if c else f"{k}->{t}" for k, c, t in CHANGE_CASES],
)
def test_change_status(kind: str, current: OrderStatus | None, target: OrderStatus) -> None:
    lookup = lookup_of(kind, current)
    actual: dict[tuple[str, str], Summary] = {}
    expected: dict[tuple[str, str], Summary] = {}
    for version_kind, actor_kind in product(EXPECTED_VERSIONS, ACTORS):
        actor = ACTORS[actor_kind]
        command = change_status(target, EXPECTED_VERSIONS[version_kind], actor)
        decision = decide(lookup, command, NOW)
        assert decision.applied is (decision.outcome is Outcome.APPLIED)
        actual[version_kind, actor_kind] = summary(decision)
        expected[version_kind, actor_kind] = expected_change(lookup, target, version_kind)
    assert actual == expected


@pytest.mark.parametrize("kind", ["own", "other"])
def test_a_conflict_shows_the_very_current_state(kind: str) -> None:
    lookup = lookup_of(kind, OrderStatus.COMPLETED)
    for version in (None, CURRENT_VERSION - 1):
        command = change_status(OrderStatus.PREPARING, version, ACTORS["service"])
        assert decide(lookup, command, NOW).order is lookup


# ---- CreateOrder -------------------------------------------------------------------------------

CREATE_CASES = [
    (kind, current)
    for kind in LOOKUP_KINDS
    for current in (list(OrderStatus) if kind in RESTAURANTS else [None])
]


def expected_create(lookup: Lookup, restaurant_id: UUID) -> Summary:
    """A free id creates a pending order at version 1; a taken id conflicts, showing the order
    only when the caller may see it."""
    if lookup is None:
        created = OrderState(ORDER_ID, restaurant_id, OrderStatus.PENDING, 1, NOW)
        return (Outcome.APPLIED, None, created, StatusChange(None, OrderStatus.PENDING, 1))
    if isinstance(lookup, OrderState):
        return (Outcome.CONFLICT, ConflictType.ORDER_EXISTS, lookup, None)
    return (Outcome.CONFLICT, ConflictType.ORDER_EXISTS, None, None)


def create_order(restaurant_id: UUID, actor: Actor) -> CreateOrder:
    return CreateOrder(
        command_id=COMMAND_ID,
        order_id=ORDER_ID,
        actor=actor,
        issued_at=EARLIER,
        restaurant_id=restaurant_id,
    )


@pytest.mark.parametrize(
    ("kind", "current"), CREATE_CASES, ids=[f"{k}-{c}" if c else k for k, c in CREATE_CASES]
)
def test_create_order(kind: str, current: OrderStatus | None) -> None:
    lookup = lookup_of(kind, current)
    actual: dict[tuple[str, str], Summary] = {}
    expected: dict[tuple[str, str], Summary] = {}
    for for_restaurant, actor_kind in product(RESTAURANTS, ACTORS):
        actor, restaurant_id = ACTORS[actor_kind], RESTAURANTS[for_restaurant]
        decision = decide(lookup, create_order(restaurant_id, actor), NOW)
        actual[for_restaurant, actor_kind] = summary(decision)
        expected[for_restaurant, actor_kind] = expected_create(lookup, restaurant_id)
    assert actual == expected


@pytest.mark.parametrize("command_kind", ["create", "change"])
def test_an_order_the_policies_hide_reveals_nothing(command_kind: str) -> None:
    """A caller-chosen order_id must not read another restaurant's order through a 409 or 403."""
    actor = ACTORS["staff-of-own"]
    command = (
        create_order(OWN, actor)
        if command_kind == "create"
        else change_status(OrderStatus.ACCEPTED, 1, actor)
    )
    decision = decide(HIDDEN, command, NOW)
    assert (decision.order, decision.change) == (None, None)
    assert str(OTHER) not in decision.detail and "version" not in decision.detail


def test_order_state_view_carries_every_field() -> None:
    state = OrderState(ORDER_ID, OWN, OrderStatus.READY, 7, NOW)
    view = state.view()
    assert (view.order_id, view.restaurant_id, view.status, view.version, view.updated_at) == (
        ORDER_ID,
        OWN,
        OrderStatus.READY,
        7,
        NOW,
    )


# ---- properties --------------------------------------------------------------------------------

lookups: st.SearchStrategy[Lookup] = st.none() | st.just(HIDDEN) | order_states


@UNIT_SETTINGS
@given(lookup=lookups, command=commands, now=aware_datetimes)
def test_decide_is_deterministic_and_total(
    lookup: Lookup, command: CreateOrder | ChangeStatus, now: datetime
) -> None:
    if isinstance(lookup, OrderState):  # the worker looks up the command's own order
        lookup = replace(lookup, order_id=command.order_id)
    first = decide(lookup, command, now)
    assert first == decide(lookup, command, now)
    # INVALID and ERROR come from decoding and the database, never from the decision.
    assert first.outcome in {
        Outcome.APPLIED,
        Outcome.CONFLICT,
        Outcome.FORBIDDEN,
        Outcome.NOT_FOUND,
    }
    assert (first.conflict is not None) is (first.outcome is Outcome.CONFLICT)
    assert (first.change is not None) is first.applied
    if first.applied:
        assert first.order is not None and first.change is not None
        assert first.order.updated_at == now
        assert first.order.order_id == command.order_id
        assert (first.change.to_status, first.change.version) == (
            first.order.status,
            first.order.version,
        )


@UNIT_SETTINGS
@given(lookup=lookups, command=commands, other=actors)
def test_decide_leaves_tenancy_to_the_lookup(
    lookup: Lookup, command: CreateOrder | ChangeStatus, other: Actor
) -> None:
    """Row-level security decides who sees what; decide() must not second-guess it by actor."""
    assert decide(lookup, command, NOW) == decide(
        lookup, command.model_copy(update={"actor": other}), NOW
    )


@UNIT_SETTINGS
@given(state=order_states, command=change_statuses, now=aware_datetimes)
def test_a_stale_expected_version_never_applies(
    state: OrderState, command: ChangeStatus, now: datetime
) -> None:
    command = command.model_copy(update={"order_id": state.order_id, "actor": ACTORS["service"]})
    if command.expected_version is None or command.expected_version == state.version:
        command = command.model_copy(update={"expected_version": state.version + 1})
    decision = decide(state, command, now)
    assert not decision.applied
    assert decision.conflict is ConflictType.STALE_VERSION
    assert decision.order is state


@UNIT_SETTINGS
@given(state=order_states, command=change_statuses, now=aware_datetimes)
def test_a_final_order_never_changes(
    state: OrderState, command: ChangeStatus, now: datetime
) -> None:
    state = replace(state, status=sorted(FINAL_STATUSES)[state.version % len(FINAL_STATUSES)])
    assert not decide(state, command, now).applied


@dataclass(frozen=True)
class Step:
    """One command of a random sequence against one order."""

    create: bool
    target: OrderStatus
    expected: str
    """"none", "current", or "stale" (current plus a non-zero offset)."""
    stale_offset: int
    actor: Actor


steps = st.builds(
    Step,
    create=st.booleans(),
    target=statuses,
    expected=st.sampled_from(["none", "current", "stale"]),
    stale_offset=st.integers(-5, 5).filter(bool),
    actor=st.sampled_from(list(ACTORS.values())) | actors,
)


def command_of(step: Step, lookup: Lookup, at: datetime) -> CreateOrder | ChangeStatus:
    if step.create:
        return create_order(OWN, step.actor).model_copy(update={"issued_at": at})
    version = lookup.version if isinstance(lookup, OrderState) else 1
    stale = version + step.stale_offset
    expected_version = {
        "none": None,
        "current": version,
        "stale": stale if stale >= 1 else version + abs(step.stale_offset),
    }[step.expected]
    return change_status(step.target, expected_version, step.actor).model_copy(
        update={"issued_at": at}
    )


@UNIT_SETTINGS
@given(sequence=st.lists(steps, max_size=30))
def test_a_random_command_sequence_walks_the_state_machine(sequence: list[Step]) -> None:
    lookup: Lookup = None
    history: list[OrderStatus] = []
    at = NOW
    for step in sequence:
        at += timedelta(seconds=1)
        command = command_of(step, lookup, at)
        before = lookup
        decision = decide(before, command, at)
        assert decision == decide(before, command, at)
        stale = (
            isinstance(command, ChangeStatus)
            and command.expected_version is not None
            and isinstance(before, OrderState)
            and command.expected_version != before.version
        )
        final = isinstance(before, OrderState) and before.status in FINAL_STATUSES
        if stale or final:
            assert not decision.applied
        if not decision.applied:
            assert decision.order is None or decision.order is before
            continue
        # Applied: exactly one step along the state machine, version up by exactly one.
        assert decision.order is not None and decision.change is not None
        if before is None:
            assert isinstance(command, CreateOrder)
            assert (decision.order.status, decision.order.version) == (OrderStatus.PENDING, 1)
        else:
            assert isinstance(before, OrderState) and isinstance(command, ChangeStatus)
            assert before.status not in FINAL_STATUSES
            assert decision.order.status in TRANSITIONS[before.status]
            assert decision.order.version == before.version + 1
            assert command.expected_version in (None, before.version)
        history.append(decision.order.status)
        lookup = decision.order
    assert isinstance(lookup, OrderState) or not history
    if isinstance(lookup, OrderState):
        assert lookup.version == len(history)
        assert history[0] is OrderStatus.PENDING
        for previous, nxt in pairwise(history):
            assert nxt in TRANSITIONS[previous]
