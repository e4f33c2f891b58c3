"""After the load: wait for the system to drain, read back everything it stored and published, and
hold it against what the API answered.

Sources: the load's answers (every attempt, with the command id the API named), the commands topic
(every command the API published, with the request id it came from), the inbox `command_outcomes`,
`order_status_events`, `orders`, and the results and events topics as a read_committed consumer
sees them. `check` is pure, so its rules are tested on their own (tests/unit/test_chaos_checker.py).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from services.adapters import kafka_config
from services.adapters.kafka_records import header
from services.adapters.settings import Settings
from services.command_api.dispatch import outcome_reply
from services.core.messages import CommandResult, Outcome
from services.core.topics import HEADER_COMMAND_ID, HEADER_REQUEST_ID
from tests.chaos.load import KeyedRequest
from tests.exactly_once import (
    Observed,
    OrderRow,
    Sent,
    StatusChangeRow,
    StoredOutcome,
    VisibleEvent,
    VisibleResult,
    problems,
    stored,
    visible_events,
    visible_results,
)
from tests.topics import read_topic

__all__ = [
    "Evidence",
    "OrderRow",
    "PublishedCommand",
    "StatusChangeRow",
    "StoredOutcome",
    "Verdict",
    "VisibleEvent",
    "VisibleResult",
    "check",
    "collect",
    "wait_until_drained",
]

EXAMPLES = 5
"""Examples kept per finding, for the report."""


@dataclass(frozen=True, slots=True)
class PublishedCommand:
    command_id: str
    order_id: str
    rid: str
    partition: int
    offset: int


@dataclass
class Evidence:
    requests: list[KeyedRequest]
    commands: list[PublishedCommand]
    inbox: list[StoredOutcome]
    status_changes: list[StatusChangeRow]
    orders: list[OrderRow]
    results: list[VisibleResult]
    events: list[VisibleEvent]
    dead_letters: int


@dataclass
class Finding:
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(example)


@dataclass
class Verdict:
    accepted: int = 0
    """Distinct command ids the API named in an answer (every answer but 503 / connection error)."""
    published: int = 0
    """Commands in the commands topic."""
    outcomes: Counter[str] = field(default_factory=Counter)
    final_answers: Counter[str] = field(default_factory=Counter)
    unexpected_conflicts: Counter[str] = field(default_factory=Counter)
    unresolved: int = 0
    """Requests whose outcome the client never learned (retries and look-ups used up)."""
    orders: int = 0
    events: int = 0
    dead_letters: int = 0
    lost: Finding = field(default_factory=Finding)
    duplicated: Finding = field(default_factory=Finding)
    out_of_order: Finding = field(default_factory=Finding)
    inconsistent: Finding = field(default_factory=Finding)
    duplicate_orders: Finding = field(default_factory=Finding)
    """Keys under which more than one order was created (a retried POST without order_id)."""
    disagreements: Finding = field(default_factory=Finding)
    """The exactly-once rules (tests/exactly_once.py) over every published command and every order
    the load created: the results topic, the events topic and the database against each other."""

    @property
    def passed(self) -> bool:
        """The suite's verdict: nothing lost, duplicated or reordered, no duplicate order, and
        every client told the truth and given a final answer: a wrong answer (inconsistent), a
        request left without one (unresolved) or a 409 nobody provoked fails the run too."""
        return not (
            self.lost.count
            or self.duplicated.count
            or self.out_of_order.count
            or self.inconsistent.count
            or self.duplicate_orders.count
            or self.disagreements.count
            or self.unresolved
            or sum(self.unexpected_conflicts.values())
        )


def check(evidence: Evidence) -> Verdict:
    verdict = Verdict(dead_letters=evidence.dead_letters, orders=len(evidence.orders))
    verdict.events = len(evidence.events)
    inbox = {o.command_id: o for o in evidence.inbox}
    verdict.outcomes = Counter(o.outcome for o in evidence.inbox)
    published = {c.command_id: c for c in evidence.commands}
    verdict.published = len(published)
    accepted = {cid for r in evidence.requests for cid in r.command_ids}
    verdict.accepted = len(accepted)

    _check_lost(evidence, verdict, accepted | set(published), published, inbox)
    _check_duplicated(evidence, verdict)
    _check_order(evidence, verdict, inbox)
    _check_answers(evidence, verdict, inbox)
    _check_stores_agree(evidence, verdict)
    return verdict


def _check_stores_agree(evidence: Evidence, verdict: Verdict) -> None:
    """What the load sent is what the commands topic holds (the API published it; a command the
    API named but never published is `lost`); the orders it created are the orders of its
    creations, but for a creation the worker refused (which creates nothing, and says so)."""
    creates = {r.key for r in evidence.requests if r.command_type == "create_order"}
    outcome = {o.command_id: o.outcome for o in evidence.inbox}
    sent = Sent(
        {c.command_id: c.order_id for c in evidence.commands},
        frozenset(
            c.order_id
            for c in evidence.commands
            if c.rid.rsplit(".", 1)[0] in creates
            and outcome.get(c.command_id, Outcome.APPLIED) == Outcome.APPLIED
        ),
    )
    seen = Observed(
        evidence.results,
        evidence.events,
        evidence.inbox,
        evidence.status_changes,
        evidence.orders,
    )
    for problem in problems(sent, seen):
        verdict.disagreements.add(problem)


def _check_lost(
    evidence: Evidence,
    verdict: Verdict,
    commands: set[str],
    published: dict[str, PublishedCommand],
    inbox: dict[str, StoredOutcome],
) -> None:
    visible = {r.command_id for r in evidence.results if not r.duplicate}
    events = {e.event_id for e in evidence.events}
    changes = {c.command_id for c in evidence.status_changes}
    for command_id in sorted(commands):
        stored = inbox.get(command_id)
        if command_id not in published:
            verdict.lost.add(f"{command_id}: named by the API, not in the commands topic")
        elif stored is None:
            verdict.lost.add(f"{command_id}: published, no outcome in the inbox")
        elif command_id not in visible:
            verdict.lost.add(
                f"{command_id}: outcome stored ({stored.source}), no result visible (read_committed)"
            )
        elif stored.outcome == Outcome.APPLIED and command_id not in events:
            verdict.lost.add(
                f"{command_id}: applied ({stored.source}), no event visible (read_committed)"
            )
        elif (
            stored.outcome == Outcome.APPLIED
            and stored.command_type == "change_status"
            and command_id not in changes
        ):
            verdict.lost.add(
                f"{command_id}: applied ({stored.source}), no row in order_status_events"
            )


def _check_duplicated(evidence: Evidence, verdict: Verdict) -> None:
    for command_id, n in _repeated(r.command_id for r in evidence.results if not r.duplicate):
        verdict.duplicated.add(f"{command_id}: {n} results not flagged duplicate")
    for event_id, n in _repeated(e.event_id for e in evidence.events):
        verdict.duplicated.add(f"event {event_id}: published {n} times")
    for command_id, n in _repeated(c.command_id for c in evidence.status_changes):
        verdict.duplicated.add(f"{command_id}: {n} rows in order_status_events")
    for (order_id, version), n in _repeated(
        (c.order_id, c.version) for c in evidence.status_changes
    ):
        verdict.duplicated.add(f"order {order_id} v{version}: {n} rows in order_status_events")
    for request in evidence.requests:
        if len(request.command_ids) > 1:
            verdict.duplicated.add(
                f"key {request.key}: {len(request.command_ids)} commands {sorted(request.command_ids)}"
            )
    # Every published command comes from one attempt of one keyed request (rid = key.attempt):
    # two of them applied for one key means a retry did the work twice. A retry may publish the
    # same command again (same id, after an unconfirmed publish): that is one command.
    applied_per_key: Counter[str] = Counter()
    evidence_inbox = {o.command_id: o for o in evidence.inbox}
    inbox = {o.command_id: o.outcome for o in evidence.inbox}
    for command in {c.command_id: c for c in evidence.commands}.values():
        if inbox.get(command.command_id) == Outcome.APPLIED:
            applied_per_key[command.rid.rsplit(".", 1)[0]] += 1
    for key, n in applied_per_key.items():
        if n > 1:
            verdict.duplicated.add(f"key {key}: {n} commands applied")
    # A POST /orders without order_id mints an id per attempt: one key, two orders created.
    created_per_key: dict[str, set[str]] = defaultdict(set)
    for command in evidence.commands:
        stored = evidence_inbox.get(command.command_id)
        if (
            stored is not None
            and stored.outcome == Outcome.APPLIED
            and stored.command_type == "create_order"
        ):
            created_per_key[command.rid.rsplit(".", 1)[0]].add(stored.order_id)
    for key, orders in sorted(created_per_key.items()):
        if len(orders) > 1:
            verdict.duplicate_orders.add(f"key {key}: {len(orders)} orders {sorted(orders)}")


def _check_order(evidence: Evidence, verdict: Verdict, inbox: dict[str, StoredOutcome]) -> None:
    events_of: dict[str, list[VisibleEvent]] = defaultdict(list)
    for event in sorted(evidence.events, key=lambda e: (e.partition, e.offset)):
        events_of[event.order_id].append(event)
    changes_of: dict[str, list[StatusChangeRow]] = defaultdict(list)
    for change in sorted(evidence.status_changes, key=lambda c: c.row_id):
        changes_of[change.order_id].append(change)
    by_event_id = {e.event_id: e for e in evidence.events}

    for order_id, events in events_of.items():
        versions = [e.version for e in events]
        if versions != list(range(1, len(versions) + 1)):
            verdict.out_of_order.add(f"order {order_id}: events topic versions {versions}")
        if len({e.partition for e in events}) > 1:
            verdict.out_of_order.add(f"order {order_id}: events on several partitions")
    for order_id, changes in changes_of.items():
        versions = [c.version for c in changes]
        if versions != list(range(2, len(versions) + 2)):
            verdict.out_of_order.add(f"order {order_id}: order_status_events versions {versions}")
        for change in changes:
            published = by_event_id.get(change.command_id)
            if published is not None and (published.version, published.to_status) != (
                change.version,
                change.to_status,
            ):
                verdict.out_of_order.add(
                    f"order {order_id}: row v{change.version} {change.to_status} but event "
                    f"v{published.version} {published.to_status}"
                )
    for order in evidence.orders:
        events = events_of.get(order.order_id, [])
        last = events[-1] if events else None
        if last is None or (last.version, last.to_status) != (order.version, order.status):
            seen = f"v{last.version} {last.to_status}" if last else "no event"
            verdict.out_of_order.add(
                f"order {order.order_id}: row v{order.version} {order.status}, last event {seen}"
            )
    # A terminal sends an order's next command only after the previous one ended: the versions
    # its applied commands got must rise in the order it sent them.
    applied_of: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for request in evidence.requests:
        stored = inbox.get(request.command_id or "")
        if stored is not None and stored.outcome == Outcome.APPLIED:
            version = int((stored.result.get("order") or {}).get("version", 0))
            applied_of[stored.order_id].append((request.seq, version))
    for order_id, applied in applied_of.items():
        versions = [v for _, v in sorted(applied)]
        if versions != sorted(versions) or len(set(versions)) != len(versions):
            verdict.out_of_order.add(f"order {order_id}: applied in another order {versions}")


def _check_answers(evidence: Evidence, verdict: Verdict, inbox: dict[str, StoredOutcome]) -> None:
    applied_rids = {
        c.rid: c.command_id
        for c in evidence.commands
        if (stored := inbox.get(c.command_id)) is not None and stored.outcome == Outcome.APPLIED
    }
    for request in evidence.requests:
        final = request.final_status
        verdict.final_answers[str(final) if final is not None else "none"] += 1
        # An attempt answered without a command id (503: "nothing was changed", or a connection
        # error) whose command was applied all the same, and is not the one the key stands for.
        for attempt in request.attempts:
            phantom = applied_rids.get(attempt.rid)
            if attempt.command_id is None and phantom and phantom not in request.command_ids:
                verdict.inconsistent.add(
                    f"key {request.key}: attempt {attempt.rid} answered {attempt.status} "
                    f"without a command id, yet its command {phantom} was applied"
                )
        if final is None or final in (500, 503, 504):
            verdict.unresolved += 1
            continue
        if final == 409 and not request.deliberately_stale:
            kind = str((request.answer or {}).get("type", "?")).rsplit("/", 1)[-1]
            verdict.unexpected_conflicts[kind] += 1
        if request.command_id is None:
            continue
        stored = inbox.get(request.command_id)
        if stored is None:
            continue  # reported as lost
        status, body, _ = outcome_reply(
            CommandResult.model_validate(stored.result), f"/commands/{request.command_id}"
        )
        answer = request.answer or {}
        fields = ("version", "status") if status < 300 else ("type", "current_version")
        if status != final or any(answer.get(f) != body.get(f) for f in fields):
            shown = {f: answer.get(f) for f in fields}
            stored_view = {f: body.get(f) for f in fields}
            verdict.inconsistent.add(
                f"key {request.key}: answered {final} {shown}, stored outcome means "
                f"{status} {stored_view}"
            )


def _repeated(items: Iterable[Any]) -> list[tuple[Any, int]]:
    return [(item, n) for item, n in Counter(items).items() if n > 1]


# ---- reading the evidence back ----------------------------------------------------------------


def collect(settings: Settings, requests: list[KeyedRequest]) -> Evidence:
    commands = [
        PublishedCommand(
            command_id=(header(m, HEADER_COMMAND_ID) or b"").decode(),
            order_id=(m.key() or b"").decode(),
            rid=(header(m, HEADER_REQUEST_ID) or b"").decode(),
            partition=m.partition() or 0,
            offset=m.offset() or 0,
        )
        for m in read_topic(settings, settings.topics.commands)
    ]
    dead_letters = len(read_topic(settings, settings.topics.dead_letters))
    inbox, changes, orders = stored(settings)
    return Evidence(
        requests,
        commands,
        inbox,
        changes,
        orders,
        visible_results(settings),
        visible_events(settings),
        dead_letters,
    )


def wait_until_drained(settings: Settings, timeout_s: float = 180) -> float:
    """Waits until the worker group has committed every command offset (so each outcome is
    published too); returns the seconds waited. Raises TimeoutError when it never gets there."""
    started = time.monotonic()
    topic = settings.topics.commands
    consumer = Consumer(kafka_config.worker_offsets_reader(settings))  # reads the commits only
    try:
        partitions = list(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        while time.monotonic() - started < timeout_s:
            ends = {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions
            }
            committed = {
                tp.partition: tp.offset
                for tp in consumer.committed([TopicPartition(topic, p) for p in partitions], 10)
            }
            if all(ends[p] == 0 or committed.get(p, -1) >= ends[p] for p in partitions):
                return time.monotonic() - started
            time.sleep(0.5)
    finally:
        consumer.close()
    raise TimeoutError(f"the worker group did not catch up within {timeout_s}s")
