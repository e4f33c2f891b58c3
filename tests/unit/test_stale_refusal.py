"""Settled conflicts refused before publishing (dispatch._settled_refusal, early_refusals.py) and
the memory of seen orders behind it, against the in-memory neighbours of test_dispatch.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.command_api.answers import COMMAND_ID_HEADER
from services.command_api.db import StoreUnavailable
from services.command_api.dispatch import CommandDispatch, IdempotencyKey, Mode
from services.command_api.early_refusals import KnownOrders, settled_refusal
from services.command_api.problems import Problem
from services.core.messages import Actor, ChangeStatus, OrderView, Role
from services.core.statuses import OrderStatus, can_transition
from tests.unit.test_dispatch import ACTOR, RESTAURANT, System, run


def view(order_id: UUID, version: int, status: OrderStatus = OrderStatus.PREPARING) -> OrderView:
    return OrderView(
        order_id=order_id,
        restaurant_id=RESTAURANT,
        status=status,
        version=version,
        updated_at=datetime.now(UTC),
    )


class MemoryOrders:
    """Committed orders, visible to ACTOR only (as row-level security would show them)."""

    def __init__(self) -> None:
        self.rows: dict[UUID, OrderView] = {}
        self.reads = 0
        self.unavailable = False

    async def order(self, order_id: UUID, actor: Actor) -> OrderView | None:
        self.reads += 1
        if self.unavailable:
            raise StoreUnavailable("OperationalError")
        return self.rows.get(order_id) if actor == ACTOR else None


class Refusing(System):
    def __init__(self) -> None:
        super().__init__()
        self.orders = MemoryOrders()
        self.known = KnownOrders()
        self.dispatch = CommandDispatch(
            self.bus, self.dispatch.outcomes, self.claims, orders=self.orders, known=self.known
        )

    def at(self, order_id: UUID, version: int, status: OrderStatus = OrderStatus.PREPARING) -> None:
        """The order is committed at `version`, and this process has seen it there."""
        self.orders.rows[order_id] = view(order_id, version, status)
        self.known.observe(self.orders.rows[order_id])


def expecting(
    order_id: UUID,
    version: int | None,
    actor: Actor = ACTOR,
    status: OrderStatus = OrderStatus.READY,
) -> ChangeStatus:
    return ChangeStatus(
        command_id=uuid.uuid4(),
        order_id=order_id,
        status=status,
        expected_version=version,
        actor=actor,
        issued_at=datetime.now(UTC),
    )


def test_an_expectation_below_the_committed_version_is_409_without_publishing() -> None:
    system, order = Refusing(), uuid.uuid4()
    system.at(order, 3)
    answer = run(system.dispatch.submit(expecting(order, 2), None, Mode.WAIT))
    assert answer.status == 409 and system.bus.published == []
    assert isinstance(answer.body, Problem)
    body = answer.body.body(f"/orders/{order}/status")
    assert body["type"] == "/problems/stale-version"
    assert (body["current_status"], body["current_version"]) == ("preparing", 3)
    assert body["detail"] == "expected version 2, order is at 3"
    # No command was accepted, so the answer names none.
    assert "command_id" not in body and COMMAND_ID_HEADER not in answer.headers
    assert answer.context.evt == "order_status_conflict"


def test_the_committed_row_decides_not_the_remembered_version() -> None:
    system, order = Refusing(), uuid.uuid4()
    system.known.observe(view(order, 5))
    system.orders.rows[order] = view(order, 2)  # e.g. a database restored to an older state
    answer = run(system.dispatch.submit(expecting(order, 2), None, Mode.WAIT))
    assert answer.status == 200 and len(system.bus.published) == 1


def test_an_order_never_seen_here_goes_to_the_worker_without_a_read() -> None:
    system, order = Refusing(), uuid.uuid4()
    system.orders.rows[order] = view(order, 3)
    run(system.dispatch.submit(expecting(order, 2), None, Mode.WAIT))
    assert system.orders.reads == 0 and len(system.bus.published) == 1


def test_the_outcomes_answered_teach_the_versions() -> None:
    system, order = Refusing(), uuid.uuid4()
    system.orders.rows[order] = view(order, 2)
    first = run(system.dispatch.submit(expecting(order, 1), None, Mode.WAIT))
    assert first.status == 200  # the worker answers (the fake applies it at version 2)
    second = run(system.dispatch.submit(expecting(order, 1), None, Mode.WAIT))
    assert second.status == 409 and len(system.bus.published) == 1


def test_current_or_future_expectations_and_none_go_to_the_worker() -> None:
    system, order = Refusing(), uuid.uuid4()
    system.at(order, 3)
    for version in (3, 4, None):
        run(system.dispatch.submit(expecting(order, version), None, Mode.WAIT))
    assert len(system.bus.published) == 3


def test_an_order_the_caller_may_not_see_goes_to_the_worker() -> None:
    system, order = Refusing(), uuid.uuid4()
    system.at(order, 3)
    stranger = Actor(sub="staff-elsewhere", role=Role.AUTHENTICATED)
    run(system.dispatch.submit(expecting(order, 1, stranger), None, Mode.WAIT))
    assert len(system.bus.published) == 1  # its 403 (or 404) is the worker's to give


def test_keyed_and_asynchronous_requests_are_never_refused_early() -> None:
    system, order = Refusing(), uuid.uuid4()
    system.at(order, 3)
    run(system.dispatch.submit(expecting(order, 1), IdempotencyKey("k", "fp"), Mode.WAIT))
    run(system.dispatch.submit(expecting(order, 1), None, Mode.RESPOND_ASYNC))
    assert len(system.bus.published) == 2 and system.orders.reads == 0


def test_postgresql_away_sends_the_command_to_the_worker() -> None:
    system, order = Refusing(), uuid.uuid4()
    system.at(order, 3)
    system.orders.unavailable = True
    run(system.dispatch.submit(expecting(order, 1), None, Mode.WAIT))
    assert len(system.bus.published) == 1


def test_a_final_order_answers_the_workers_conflict_whatever_the_expectation() -> None:
    system, order = Refusing(), uuid.uuid4()
    system.at(order, 5, OrderStatus.COMPLETED)
    for version, kind in (
        (5, "invalid-transition"),
        (None, "invalid-transition"),
        (9, "stale-version"),
    ):
        answer = run(system.dispatch.submit(expecting(order, version), None, Mode.WAIT))
        assert answer.status == 409 and isinstance(answer.body, Problem)
        assert answer.body.kind == kind
    assert system.bus.published == []


@pytest.mark.parametrize(
    ("status", "version", "expected", "kind"),
    [
        (OrderStatus.PREPARING, 3, 2, "stale-version"),
        (OrderStatus.PREPARING, 3, 3, None),
        (OrderStatus.PREPARING, 3, 4, None),  # a change in flight may make it valid
        (OrderStatus.PREPARING, 3, None, None),
        (OrderStatus.CANCELLED, 3, 3, "invalid-transition"),
        (OrderStatus.REJECTED, 2, 1, "stale-version"),
        (OrderStatus.COMPLETED, 5, 6, "stale-version"),
    ],
)
def test_only_a_conflict_no_later_state_can_change_is_settled(
    status: OrderStatus, version: int, expected: int | None, kind: str | None
) -> None:
    order = uuid.uuid4()
    decision = settled_refusal(view(order, version, status), expecting(order, expected))
    assert (decision.conflict.value if decision and decision.conflict else None) == kind


def test_known_orders_keep_the_newest_and_forget_the_oldest_order_first() -> None:
    known = KnownOrders(capacity=2)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    known.observe(view(first, 4))
    known.observe(view(first, 2, OrderStatus.COMPLETED))  # an older state arriving late: no change
    known.observe(None)
    assert known.worth_checking(first, 3) and not known.worth_checking(first, 4)
    assert not known.worth_checking(first, None)
    known.observe(view(second, 1))
    known.observe(view(third, 7, OrderStatus.CANCELLED))
    assert len(known) == 2 and not known.worth_checking(first, 1)
    assert known.worth_checking(third, None) and not known.worth_checking(uuid.uuid4(), 0)


@given(
    path=st.lists(st.sampled_from(list(OrderStatus)), max_size=8),
    lag=st.integers(min_value=0, max_value=8),
    target=st.sampled_from(list(OrderStatus)),
    expected=st.one_of(st.none(), st.integers(min_value=1, max_value=10)),
)
def test_a_refusal_read_from_a_lagging_replica_is_the_primarys_answer_too(
    path: list[OrderStatus], lag: int, target: OrderStatus, expected: int | None
) -> None:
    """The replica (DATABASE_READ_URL) shows a state the order had `lag` changes ago: whatever it
    refuses, the primary's newer state refuses the same way (versions only grow, final stays
    final), so the 409 answered early is the one the worker would give."""
    order_id = uuid.uuid4()
    states = [view(order_id, 1, OrderStatus.PENDING)]
    for status in path:  # the legal changes among `path`, applied in turn on the primary
        current = states[-1]
        if can_transition(current.status, status):
            states.append(view(order_id, current.version + 1, status))
    replica, primary = states[max(0, len(states) - 1 - lag)], states[-1]
    command = ChangeStatus(
        command_id=uuid.uuid4(),
        order_id=order_id,
        status=target,
        expected_version=expected,
        actor=ACTOR,
        issued_at=datetime.now(UTC),
    )
    refused = settled_refusal(replica, command)
    if refused is not None:
        now = settled_refusal(primary, command)
        assert now is not None and now.outcome is refused.outcome
