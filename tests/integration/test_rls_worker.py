"""The worker's unit of work against the real database, logged in as orderstatus_app: each command
is looked up and written as its caller, so the policies decide 403/404/applied, and the worker's own
bookkeeping (inbox, analytics) is written for every outcome, forbidden ones included."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from services.adapters.settings import Settings
from services.adapters.tenancy import grant_staff
from services.core.messages import (
    Actor,
    ChangeStatus,
    CreateOrder,
    Outcome,
    Role,
)
from services.core.statuses import OrderStatus
from services.status_worker.batch import Incoming
from services.status_worker.db import UnitOfWork
from services.status_worker.service import apply_batch
from tests.stack import migrated_database

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def urls(base_settings: Settings) -> Iterator[tuple[str, str]]:
    with migrated_database(base_settings) as urls:
        yield urls


@pytest.fixture
def worker_conn(urls: tuple[str, str]) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(urls[0], autocommit=False) as conn:
        yield conn


@pytest.fixture
def admin(urls: tuple[str, str]) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(urls[1], autocommit=True) as conn:
        yield conn


def staff_of(admin: psycopg.Connection[Any], restaurant: uuid.UUID) -> Actor:
    sub = f"staff-{uuid.uuid4().hex[:8]}"
    grant_staff(admin, user_id=sub, restaurant_id=restaurant)
    return Actor(sub=sub, role=Role.AUTHENTICATED)


def create(actor: Actor, restaurant: uuid.UUID, order: uuid.UUID | None = None) -> CreateOrder:
    return CreateOrder(
        command_id=uuid.uuid4(),
        order_id=order or uuid.uuid4(),
        restaurant_id=restaurant,
        actor=actor,
        issued_at=NOW,
    )


def change(actor: Actor, order: uuid.UUID, status: str = "accepted") -> ChangeStatus:
    return ChangeStatus(
        command_id=uuid.uuid4(),
        order_id=order,
        status=OrderStatus(status),
        actor=actor,
        issued_at=NOW,
    )


def apply(
    conn: psycopg.Connection[Any], *commands: CreateOrder | ChangeStatus, isolate: bool = False
) -> list[Outcome]:
    batch = [Incoming(command, 0, offset) for offset, command in enumerate(commands)]
    return [p.result.outcome for p in apply_batch(UnitOfWork(conn), batch, NOW, isolate=isolate)]


def order_row(admin: psycopg.Connection[Any], order: uuid.UUID) -> tuple[Any, ...] | None:
    return admin.execute(
        "SELECT restaurant_id, status, version FROM orders WHERE id = %s", (order,)
    ).fetchone()


def widget_events(admin: psycopg.Connection[Any], command_id: uuid.UUID) -> list[tuple[Any, ...]]:
    return admin.execute(
        """SELECT type, restaurant_id, payload ->> 'actor', payload ->> 'actor_role'
           FROM widget_events WHERE command_id = %s""",
        (command_id,),
    ).fetchall()


def test_staff_change_their_own_restaurants_orders(
    worker_conn: psycopg.Connection[Any], admin: psycopg.Connection[Any]
) -> None:
    restaurant = uuid.uuid4()
    alice = staff_of(admin, restaurant)
    created = create(alice, restaurant)
    assert apply(worker_conn, created, change(alice, created.order_id)) == [
        Outcome.APPLIED,
        Outcome.APPLIED,
    ]
    assert order_row(admin, created.order_id) == (restaurant, "accepted", 2)


def test_a_change_to_another_restaurants_order_is_forbidden_changes_nothing_and_is_recorded(
    worker_conn: psycopg.Connection[Any], admin: psycopg.Connection[Any]
) -> None:
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    alice, bob = staff_of(admin, mine), staff_of(admin, theirs)
    created = create(bob, theirs)
    apply(worker_conn, created)
    intrusion = change(alice, created.order_id)

    [processed] = apply_batch(
        UnitOfWork(worker_conn), [Incoming(intrusion, 0, 7)], NOW, isolate=False
    )

    result = processed.result
    assert (result.outcome, result.order, processed.event) == (Outcome.FORBIDDEN, None, None)
    assert order_row(admin, created.order_id) == (theirs, "pending", 1)
    assert admin.execute(
        "SELECT count(*) FROM order_status_events WHERE order_id = %s", (created.order_id,)
    ).fetchone() == (0,)
    # The analytics event the runbook counts names the caller, never the hidden restaurant.
    assert widget_events(admin, intrusion.command_id) == [
        ("order_status_forbidden", None, alice.sub, "authenticated")
    ]
    assert admin.execute(
        """SELECT outcome, restaurant_id, actor_sub, actor_role, source_offset
           FROM command_outcomes WHERE command_id = %s""",
        (intrusion.command_id,),
    ).fetchone() == ("forbidden", None, alice.sub, "authenticated", 7)


def test_an_order_that_does_not_exist_is_not_found(
    worker_conn: psycopg.Connection[Any], admin: psycopg.Connection[Any]
) -> None:
    alice = staff_of(admin, uuid.uuid4())
    assert apply(worker_conn, change(alice, uuid.uuid4())) == [Outcome.NOT_FOUND]


def test_the_insert_policy_refuses_a_new_order_for_a_restaurant_the_caller_may_not_act_for(
    worker_conn: psycopg.Connection[Any], admin: psycopg.Connection[Any]
) -> None:
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    alice = staff_of(admin, mine)
    pos_of_mine = Actor(sub="pos-1", role=Role.SERVICE_ROLE, restaurant_ids=(mine,))
    refused = [create(alice, theirs), create(pos_of_mine, theirs)]

    assert apply(worker_conn, *refused) == [Outcome.FORBIDDEN, Outcome.FORBIDDEN]

    for command in refused:
        assert order_row(admin, command.order_id) is None
        assert widget_events(admin, command.command_id) == [
            ("order_status_forbidden", theirs, command.actor.sub, command.actor.role.value)
        ]


def test_each_command_of_a_batch_runs_as_its_own_caller(
    worker_conn: psycopg.Connection[Any], admin: psycopg.Connection[Any]
) -> None:
    """A refused command does not leave its role or claims to the next one in the transaction."""
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    alice, bob = staff_of(admin, mine), staff_of(admin, theirs)
    service = Actor(sub="backoffice", role=Role.SERVICE_ROLE)
    ours, other = create(alice, mine), create(bob, theirs)
    outcomes = apply(
        worker_conn,
        ours,
        other,
        change(alice, other.order_id),  # forbidden
        change(bob, other.order_id),  # applied: bob's own
        change(alice, ours.order_id),  # applied: alice's own
        change(service, ours.order_id, "preparing"),  # applied: any restaurant
        create(alice, theirs),  # forbidden by the insert policy
        change(alice, ours.order_id, "ready"),  # applied again after the refusal
    )
    assert outcomes == [
        Outcome.APPLIED,
        Outcome.APPLIED,
        Outcome.FORBIDDEN,
        Outcome.APPLIED,
        Outcome.APPLIED,
        Outcome.APPLIED,
        Outcome.FORBIDDEN,
        Outcome.APPLIED,
    ]
    assert order_row(admin, ours.order_id) == (mine, "ready", 4)
    assert order_row(admin, other.order_id) == (theirs, "accepted", 2)
    # Nothing of the callers is left on the connection once the batch is committed.
    assert worker_conn.execute(
        "SELECT current_user, current_setting('request.jwt.claims', true)"
    ).fetchone() in {("orderstatus_app", ""), ("orderstatus_app", None)}
    worker_conn.rollback()


def test_a_redelivered_forbidden_command_is_answered_from_the_inbox(
    worker_conn: psycopg.Connection[Any], admin: psycopg.Connection[Any]
) -> None:
    theirs = uuid.uuid4()
    bob = staff_of(admin, theirs)
    created = create(bob, theirs)
    apply(worker_conn, created)
    intrusion = change(Actor(sub="mallory", role=Role.AUTHENTICATED), created.order_id)
    first = apply_batch(UnitOfWork(worker_conn), [Incoming(intrusion, 0, 1)], NOW, isolate=False)
    # Meanwhile mallory is made staff of that restaurant: the old command's answer stands.
    grant_staff(admin, user_id="mallory", restaurant_id=theirs)
    again = apply_batch(UnitOfWork(worker_conn), [Incoming(intrusion, 0, 2)], NOW, isolate=True)
    assert again[0].result == first[0].result
    assert again[0].source == (0, 1)
    assert len(widget_events(admin, intrusion.command_id)) == 1
    assert order_row(admin, created.order_id) == (theirs, "pending", 1)


def test_one_callers_commands_on_one_order_are_folded_into_one_write_per_table(
    worker_conn: psycopg.Connection[Any], admin: psycopg.Connection[Any]
) -> None:
    """The set-based batch: each change sees the one before it, every change gets its history
    row, and another caller's command in the same batch is still refused by the policies."""
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    alice, bob = staff_of(admin, mine), staff_of(admin, theirs)
    ours, other = create(alice, mine), create(bob, theirs)
    steps = [change(alice, ours.order_id, s) for s in ("accepted", "preparing", "ready")]
    outcomes = apply(
        worker_conn,
        ours,
        other,
        *steps,
        change(alice, ours.order_id, "ready"),  # ready -> ready: conflict on the folded state
        change(bob, ours.order_id, "completed"),  # bob is no staff of mine: forbidden
    )
    assert outcomes == [Outcome.APPLIED] * 5 + [Outcome.CONFLICT, Outcome.FORBIDDEN]
    assert order_row(admin, ours.order_id) == (mine, "ready", 4)
    history = admin.execute(
        "SELECT from_status, to_status, version FROM order_status_events WHERE order_id = %s"
        " ORDER BY id",
        (ours.order_id,),
    ).fetchall()
    assert history == [
        ("pending", "accepted", 2),
        ("accepted", "preparing", 3),
        ("preparing", "ready", 4),
    ]
    inbox = admin.execute(
        "SELECT count(*) FROM command_outcomes WHERE order_id = ANY(%s)",
        ([ours.order_id, other.order_id],),
    ).fetchone()
    assert inbox == (7,)
