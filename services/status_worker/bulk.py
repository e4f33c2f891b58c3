"""A batch planned for set-based SQL, without I/O: its commands grouped by caller (each group's
statements run as that caller, so row-level security still decides) and each group folded in
memory in arrival order (several commands on one order see each other's effects), so that every
table gets one statement per group instead of one per command."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from services.core.decision import HIDDEN, Decision, Lookup, OrderState, decide
from services.core.messages import Actor, ChangeStatus, CreateOrder, Outcome
from services.status_worker.batch import Incoming

FORBIDDEN_CREATE = Decision(Outcome.FORBIDDEN, detail="caller may not act for this restaurant")

CallerKey = tuple[str, str, tuple[UUID, ...]]


def caller_key(actor: Actor) -> CallerKey:
    """What row-level security reads of a caller (tenancy.claims_of): equal keys, equal rights."""
    return (actor.sub, actor.role.value, actor.restaurant_ids)


@dataclass(frozen=True, slots=True)
class CallerGroup:
    """Commands of one caller, in arrival order, on orders no other caller touches in the batch."""

    actor: Actor
    items: list[Incoming]

    def order_ids(self) -> list[UUID]:
        """Sorted: rows are locked in one order by everyone, so lock waits cannot deadlock."""
        return sorted({item.command.order_id for item in self.items})

    def creating_for(self) -> list[UUID]:
        """The restaurants this caller's creates name."""
        return sorted(
            {i.command.restaurant_id for i in self.items if isinstance(i.command, CreateOrder)}
        )


def first_copies(batch: Sequence[Incoming]) -> list[Incoming]:
    """Each command once: a second copy in the same batch is answered with the first's outcome."""
    seen: set[UUID] = set()
    firsts: list[Incoming] = []
    for item in batch:
        if item.command.command_id not in seen:
            seen.add(item.command.command_id)
            firsts.append(item)
    return firsts


def plan(batch: Sequence[Incoming]) -> tuple[list[CallerGroup], list[Incoming]]:
    """The callers' groups, and the commands left to the per-command path (in arrival order):
    those on an order that several callers touch in this batch, since what one caller sees of it
    after another's change is for the database to say."""
    callers: dict[UUID, set[CallerKey]] = {}
    for item in batch:
        callers.setdefault(item.command.order_id, set()).add(caller_key(item.command.actor))
    groups: dict[CallerKey, CallerGroup] = {}
    mixed: list[Incoming] = []
    for item in batch:
        if len(callers[item.command.order_id]) > 1:
            mixed.append(item)
            continue
        key = caller_key(item.command.actor)
        groups.setdefault(key, CallerGroup(item.command.actor, [])).items.append(item)
    return list(groups.values()), mixed


@dataclass(frozen=True, slots=True)
class Sightings:
    """What one caller's lookups returned: the orders it sees (locked), the ids that exist at
    all, and for each restaurant its creates name whether the insert policy lets it."""

    visible: dict[UUID, OrderState]
    existing: frozenset[UUID]
    may_create: dict[UUID, bool]

    def lookup(self, order_id: UUID) -> Lookup:
        if order_id in self.visible:
            return self.visible[order_id]
        return HIDDEN if order_id in self.existing else None


@dataclass
class Writes:
    """One group's changes, to be written with one statement per table."""

    created: list[OrderState] = field(default_factory=list)
    updated: dict[UUID, tuple[OrderState, int]] = field(default_factory=dict)
    """Each changed order's final state, and the version it had before the batch's update."""
    changes: list[tuple[ChangeStatus, Decision]] = field(default_factory=list)
    """The applied changes, in order: one history row each."""


def fold(
    items: Sequence[Incoming], sightings: Sightings, now: datetime
) -> tuple[list[Decision], Writes]:
    """`decide` for each command in order, each seeing the state the earlier ones left."""
    state: dict[UUID, Lookup] = {}
    writes = Writes()
    decisions: list[Decision] = []
    for item in items:
        command = item.command
        order_id = command.order_id
        lookup = state[order_id] if order_id in state else sightings.lookup(order_id)
        decision = decide(lookup, command, now)
        if decision.applied:
            decision = _record(command, decision, lookup, sightings, writes)
            if decision.order is not None and decision.applied:
                state[order_id] = decision.order
        decisions.append(decision)
    return decisions, writes


def _record(
    command: CreateOrder | ChangeStatus,
    decision: Decision,
    lookup: Lookup,
    sightings: Sightings,
    writes: Writes,
) -> Decision:
    order = decision.order
    assert order is not None
    if isinstance(command, CreateOrder):
        if not sightings.may_create.get(command.restaurant_id, False):
            return FORBIDDEN_CREATE
        writes.created.append(order)
        return decision
    assert isinstance(lookup, OrderState)
    before = writes.updated.get(order.order_id)
    writes.updated[order.order_id] = (order, before[1] if before else lookup.version)
    writes.changes.append((command, decision))
    return decision
