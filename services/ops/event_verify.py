"""`orderstatus verify`: do the orders, their change history and the events topic tell one story?

For every order: its status and version equal its last `order_status_events` row (version 1 and
no rows for an order never changed), the rows' versions run 2, 3, … with no gaps and each starts
where the previous ended; and the events topic holds each change exactly once, in version order,
with the change's command id as event id. The comparison is pure (`find_damage`); `verify` reads
the evidence and, since a live worker commits PostgreSQL a moment before Kafka, looks again after
`settle_s` and reports only the orders that are still wrong."""

from __future__ import annotations

import itertools
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import TextIO
from uuid import UUID

import psycopg

from services.adapters.kafka_records import position, read_to_end
from services.adapters.settings import Settings
from services.core.events import decode_cloud_event
from services.ops import event_queries


@dataclass(frozen=True, slots=True)
class OrderRow:
    order_id: UUID
    restaurant_id: UUID
    status: str
    version: int


@dataclass(frozen=True, slots=True)
class ChangeRow:
    order_id: UUID
    version: int
    from_status: str
    to_status: str
    command_id: UUID


@dataclass(frozen=True, slots=True)
class PublishedEvent:
    """One record of the events topic (in offset order); `order_id` None when it did not decode."""

    order_id: UUID | None
    version: int
    to_status: str
    event_id: str
    where: str


@dataclass(frozen=True, slots=True)
class Evidence:
    orders: list[OrderRow]
    changes: list[ChangeRow]
    events: list[PublishedEvent]


Damage = dict[str, list[str]]
"""Order id (or TOPIC for records that name no order) -> what is wrong with it."""
TOPIC = "topic"


def find_damage(evidence: Evidence) -> Damage:
    damage: Damage = defaultdict(list)
    changes_of: dict[UUID, list[ChangeRow]] = defaultdict(list)
    for change in sorted(evidence.changes, key=lambda c: (c.order_id, c.version)):
        changes_of[change.order_id].append(change)
    events_of: dict[UUID, list[PublishedEvent]] = defaultdict(list)
    for event in evidence.events:
        if event.order_id is None:
            damage[TOPIC].append(f"{event.where}: not an order event")
        else:
            events_of[event.order_id].append(event)
    orders = {o.order_id: o for o in evidence.orders}

    for order_id in sorted((set(changes_of) | set(events_of)) - set(orders)):
        damage[str(order_id)].append("changes or events for an order that does not exist")
    for order in evidence.orders:
        problems = _history_problems(order, changes_of.get(order.order_id, []))
        problems += _topic_problems(
            order, changes_of.get(order.order_id, []), events_of[order.order_id]
        )
        if problems:
            damage[str(order.order_id)] += problems
    return dict(damage)


def _history_problems(order: OrderRow, changes: list[ChangeRow]) -> list[str]:
    problems = []
    versions = [c.version for c in changes]
    if versions != list(range(2, len(versions) + 2)):
        problems.append(f"order_status_events versions {versions}, expected 2..{len(versions) + 1}")
    last_version = changes[-1].version if changes else 1
    if order.version != last_version:
        problems.append(f"orders.version {order.version}, last change has version {last_version}")
    if changes and order.status != changes[-1].to_status:
        problems.append(f"orders.status {order.status}, last change is to {changes[-1].to_status}")
    for before, after in itertools.pairwise(changes):
        if after.from_status != before.to_status:
            problems.append(
                f"v{after.version} starts from {after.from_status}, v{before.version} ended at "
                f"{before.to_status}"
            )
    return problems


def _topic_problems(
    order: OrderRow, changes: list[ChangeRow], events: list[PublishedEvent]
) -> list[str]:
    problems = []
    versions = [e.version for e in events]
    expected = list(range(1, order.version + 1))
    if versions != expected:
        problems.append(f"events topic versions {versions}, expected {expected}")
    for event_id, n in Counter(e.event_id for e in events).items():
        if n > 1:
            problems.append(f"event {event_id} published {n} times")
    published = {e.version: e for e in events}
    for change in changes:
        event = published.get(change.version)
        if event is not None and (event.event_id, event.to_status) != (
            str(change.command_id),
            change.to_status,
        ):
            problems.append(
                f"v{change.version}: event {event.event_id} to {event.to_status}, change "
                f"{change.command_id} to {change.to_status}"
            )
    return problems


def collect(settings: Settings, deadline_s: float = 120.0) -> Evidence:
    """The database first, then the topic to its end: a change committed in PostgreSQL before
    the read has its event in Kafka by then, unless the worker is mid-batch (hence the settle)."""
    with psycopg.connect(settings.admin_url) as conn:
        orders = [OrderRow(*row) for row in conn.execute(event_queries.ORDERS)]
        changes = [ChangeRow(*row) for row in conn.execute(event_queries.STATUS_CHANGES)]
    events = []
    topic = settings.topics.events
    for message in read_to_end(settings, topic, deadline_s=deadline_s):
        where = "{}:{}:{}".format(*position(message))
        try:
            event = decode_cloud_event(message.value() or b"")
        except ValueError:
            events.append(PublishedEvent(None, 0, "", "", where))
            continue
        events.append(
            PublishedEvent(
                event.data.order_id, event.data.version, event.data.to_status, event.id, where
            )
        )
    return Evidence(orders, changes, events)


def verify(settings: Settings, out: TextIO, *, settle_s: float = 5.0, limit: int = 50) -> int:
    """0 when everything agrees; 1 with the offending orders (still wrong after `settle_s`)."""
    evidence = collect(settings)
    damage = find_damage(evidence)
    if damage and settle_s > 0:
        time.sleep(settle_s)
        evidence = collect(settings)
        again = find_damage(evidence)
        damage = {order: problems for order, problems in again.items() if order in damage}
    summary = (
        f"{len(evidence.orders)} orders, {len(evidence.changes)} status changes, "
        f"{len(evidence.events)} events"
    )
    if not damage:
        print(f"ok: {summary}: orders, order_status_events and the events topic agree", file=out)
        return 0
    orders = sum(1 for key in damage if key != TOPIC)
    junk = ", and records that are not order events" if TOPIC in damage else ""
    print(f"MISMATCH: {orders} orders of {summary}{junk}", file=out)
    for order, problems in sorted(damage.items())[:limit]:
        for problem in problems:
            print(f"{order}: {problem}", file=out)
    if len(damage) > limit:
        print(f"... and {len(damage) - limit} more orders", file=out)
    return 1
