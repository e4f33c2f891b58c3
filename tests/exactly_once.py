"""Exactly once in all three places: for every command a test sent, one result on the results
topic, one event per applied change on the events topic (versions 1..n per order, in order, on one
partition), and a database that says the same (the inbox, `orders`, `order_status_events`), with
no command or order missing from, or added to, any of them.

`problems` is pure, so each rule is fed damage on its own (tests/unit/test_exactly_once_checker.py);
`observe` reads a run's topics (read_committed) and tables back; `assert_exactly_once` is what the
end-to-end tests call. The chaos checker (tests/chaos/checker.py) reads its evidence with the same
readers and applies the same rules to what its load published.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from services.adapters.kafka_records import header
from services.adapters.settings import Settings
from services.core.events import decode_cloud_event
from services.core.messages import ChangeStatus, CreateOrder, Outcome, decode_result
from services.core.topics import HEADER_COMMAND_ID
from tests.chaos import queries
from tests.topics import read_topic


@dataclass(frozen=True, slots=True)
class Sent:
    """What a test sent: each command id with the order it is for, and the orders it created."""

    commands: Mapping[str, str]
    orders: frozenset[str]

    @classmethod
    def of(cls, commands: Iterable[CreateOrder | ChangeStatus]) -> Sent:
        """Copies of one command (the same id sent again) count once."""
        listed = list(commands)
        return cls(
            {str(c.command_id): str(c.order_id) for c in listed},
            frozenset(str(c.order_id) for c in listed if isinstance(c, CreateOrder)),
        )


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    """A row of the inbox, `command_outcomes`."""

    command_id: str
    order_id: str
    command_type: str
    outcome: str
    result: dict[str, Any]
    event: dict[str, Any] | None
    source_partition: int | None = None
    source_offset: int | None = None

    @property
    def source(self) -> str:
        return f"commands {self.source_partition}:{self.source_offset}"


@dataclass(frozen=True, slots=True)
class StatusChangeRow:
    """A row of `order_status_events` (changes only: a creation has none)."""

    row_id: int
    order_id: str
    version: int
    command_id: str
    to_status: str


@dataclass(frozen=True, slots=True)
class OrderRow:
    order_id: str
    status: str
    version: int


@dataclass(frozen=True, slots=True)
class VisibleResult:
    command_id: str
    duplicate: bool
    outcome: str | None = None
    """The outcome the record carries (None: not read)."""


@dataclass(frozen=True, slots=True)
class VisibleEvent:
    event_id: str
    """The id of the command that made the change."""
    order_id: str
    version: int
    to_status: str
    partition: int
    offset: int


@dataclass
class Observed:
    """Everything a run left behind, as a read_committed consumer and the owner role see it."""

    results: list[VisibleResult]
    events: list[VisibleEvent]
    inbox: list[StoredOutcome]
    status_changes: list[StatusChangeRow]
    orders: list[OrderRow]


def problems(sent: Sent, seen: Observed) -> list[str]:
    """Every way `seen` departs from exactly once for what was `sent`; empty when it doesn't."""
    found: list[str] = []
    inbox = _inbox(sent, seen, found)
    _results(sent, seen, inbox, found)
    events_of = _events(sent, seen, inbox, found)
    _orders(sent, seen, events_of, found)
    _status_changes(seen, events_of, found)
    return found


def _inbox(sent: Sent, seen: Observed, found: list[str]) -> dict[str, StoredOutcome]:
    for command_id, n in _repeated(o.command_id for o in seen.inbox):
        found.append(f"command {command_id}: {n} outcomes in the inbox")
    inbox = {o.command_id: o for o in seen.inbox}
    for command_id, order_id in sorted(sent.commands.items()):
        stored = inbox.get(command_id)
        if stored is None:
            found.append(f"command {command_id}: sent, no outcome in the inbox")
        elif stored.order_id != order_id:
            found.append(
                f"command {command_id}: inbox says order {stored.order_id}, sent {order_id}"
            )
    for command_id in sorted(set(inbox) - set(sent.commands)):
        found.append(f"command {command_id}: an outcome in the inbox, never sent")
    return inbox


def _results(
    sent: Sent, seen: Observed, inbox: Mapping[str, StoredOutcome], found: list[str]
) -> None:
    unflagged = Counter(r.command_id for r in seen.results if not r.duplicate)
    for command_id in sorted(sent.commands):
        n = unflagged[command_id]
        if n == 0:
            found.append(f"command {command_id}: sent, no result visible")
        elif n > 1:
            found.append(f"command {command_id}: {n} results not flagged duplicate")
    for command_id in sorted({r.command_id for r in seen.results} - set(sent.commands)):
        found.append(f"command {command_id}: a result on the results topic, never sent")
    for result in seen.results:
        stored = inbox.get(result.command_id)
        if result.outcome is not None and stored is not None and result.outcome != stored.outcome:
            found.append(
                f"command {result.command_id}: result says {result.outcome}, "
                f"inbox says {stored.outcome}"
            )


def _events(
    sent: Sent, seen: Observed, inbox: Mapping[str, StoredOutcome], found: list[str]
) -> dict[str, list[VisibleEvent]]:
    """Checks the events topic; returns each order's events in log order."""
    for event_id, n in _repeated(e.event_id for e in seen.events):
        found.append(f"event {event_id}: published {n} times")
    applied = {cid for cid, o in inbox.items() if o.outcome == Outcome.APPLIED}
    published = {e.event_id for e in seen.events}
    for command_id in sorted(applied - published):
        found.append(f"command {command_id}: applied, no event visible")
    for event_id in sorted(published - applied):
        found.append(f"event {event_id}: no applied command of that id in the inbox")
    events_of: dict[str, list[VisibleEvent]] = defaultdict(list)
    for event in sorted(seen.events, key=lambda e: (e.partition, e.offset)):
        events_of[event.order_id].append(event)
        sent_for = sent.commands.get(event.event_id)
        if sent_for is not None and sent_for != event.order_id:
            found.append(f"event {event.event_id}: for order {event.order_id}, sent for {sent_for}")
    for order_id, events in sorted(events_of.items()):
        versions = [e.version for e in events]
        if versions != list(range(1, len(versions) + 1)):
            found.append(f"order {order_id}: events topic versions {versions}")
        if len({e.partition for e in events}) > 1:
            found.append(f"order {order_id}: events on several partitions")
    return events_of


def _orders(
    sent: Sent, seen: Observed, events_of: Mapping[str, list[VisibleEvent]], found: list[str]
) -> None:
    for order_id, n in _repeated(o.order_id for o in seen.orders):
        found.append(f"order {order_id}: {n} rows in orders")
    rows = {o.order_id: o for o in seen.orders}
    for order_id in sorted(sent.orders - set(rows)):
        found.append(f"order {order_id}: created, no row in orders")
    for order_id in sorted(set(rows) - sent.orders):
        found.append(f"order {order_id}: a row in orders, never created")
    for order_id in sorted(sent.orders - set(events_of)):
        found.append(f"order {order_id}: created, no event visible")
    for order_id in sorted(set(events_of) - sent.orders):
        found.append(f"order {order_id}: events visible, never created")
    for order_id, row in sorted(rows.items()):
        events = events_of.get(order_id)
        if events and (row.version, row.status) != (events[-1].version, events[-1].to_status):
            last = events[-1]
            found.append(
                f"order {order_id}: row v{row.version} {row.status}, "
                f"last event v{last.version} {last.to_status}"
            )


def _status_changes(
    seen: Observed, events_of: Mapping[str, list[VisibleEvent]], found: list[str]
) -> None:
    """order_status_events holds a row per change, the creation excepted: per order, the same
    (version, status, command) as the events topic's changes, in the same order."""
    rows_of: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for row in sorted(seen.status_changes, key=lambda r: r.row_id):
        rows_of[row.order_id].append((row.version, row.to_status, row.command_id))
    for order_id in sorted(set(rows_of) | set(events_of)):
        rows = rows_of.get(order_id, [])
        changes = [
            (e.version, e.to_status, e.event_id)
            for e in events_of.get(order_id, [])
            if e.version > 1
        ]
        if rows != changes:
            found.append(
                f"order {order_id}: order_status_events {_versions(rows)}, "
                f"events topic {_versions(changes)}"
            )


def _versions(changes: list[tuple[int, str, str]]) -> list[str]:
    return [f"v{version} {status}" for version, status, _ in changes]


def _repeated(items: Iterable[Any]) -> list[tuple[Any, int]]:
    return [(item, n) for item, n in Counter(items).items() if n > 1]


# ---- reading a run back -----------------------------------------------------------------------


def visible_results(settings: Settings) -> list[VisibleResult]:
    return [
        VisibleResult(
            (header(m, HEADER_COMMAND_ID) or b"").decode(),
            header(m, "duplicate") is not None,
            decode_result(m.value() or b"").outcome.value,
        )
        for m in read_topic(settings, settings.topics.results)
    ]


def visible_events(settings: Settings) -> list[VisibleEvent]:
    events = []
    for message in read_topic(settings, settings.topics.events):
        event = decode_cloud_event(message.value() or b"")
        events.append(
            VisibleEvent(
                event.id,
                event.subject,
                event.data.version,
                event.data.to_status.value,
                message.partition() or 0,
                message.offset() or 0,
            )
        )
    return events


def stored(
    settings: Settings,
) -> tuple[list[StoredOutcome], list[StatusChangeRow], list[OrderRow]]:
    """The inbox, the status history and the orders, as the owner role (which sees every row)."""
    with psycopg.connect(settings.admin_url) as conn:
        inbox = [StoredOutcome(*row) for row in conn.execute(queries.INBOX)]
        changes = [StatusChangeRow(*row) for row in conn.execute(queries.STATUS_CHANGES)]
        orders = [OrderRow(*row) for row in conn.execute(queries.ORDERS)]
    return inbox, changes, orders


def observe(settings: Settings) -> Observed:
    return Observed(visible_results(settings), visible_events(settings), *stored(settings))


def assert_exactly_once(settings: Settings, sent: Sent) -> Observed:
    """Fails with every problem found; returns what was seen, for a test's own further checks."""
    seen = observe(settings)
    found = problems(sent, seen)
    assert not found, f"{len(found)} departures from exactly once:\n" + "\n".join(found[:40])
    return seen
