"""The faust app: two agents (events, results) and the tables they keep, and the reads the web
views make of those tables. Wiring only; the arithmetic is in `aggregates`.

Tables (all keyed by `<restaurant>/<source partition>` unless said otherwise, docs/figures.md):
- `changes`: tumbling 1-minute windows, status changes by new status (events topic);
- `refusals`: tumbling 1-minute windows, conflicts and forbidden attempts (results topic);
- `prep`: hopping 1-hour windows every minute, accepted -> ready seconds as histogram buckets;
- `open`: orders open per status now;
- `orders` (keyed by order id): restaurant, status, version, offset and accepted time of each order.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust

from services.core.settings import Settings
from services.core.statuses import OrderStatus
from services.figures import aggregates as agg
from services.figures.changes import Change, decode_change, decode_refusal
from services.figures.kafka import Changelog, app_id, brokers, ensure_changelogs

log = logging.getLogger(__name__)

DUPLICATE_HEADER = "duplicate"
"""The worker's mark on a result it republished for a redelivered command: counted once already."""

Handled = Callable[[str, str], None]
"""Called with (topic kind, what happened to the record), for the app's own metrics."""


@dataclass
class RestaurantFigures:
    restaurant_id: str
    as_of: float
    spans: agg.Spans
    changes_last_minute: int
    changes_last_hour: int
    conflicts_last_minute: int
    conflicts_last_hour: int
    forbidden_last_minute: int
    forbidden_last_hour: int
    by_status_last_hour: dict[str, int]
    prep_buckets: list[int]
    open_orders: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "restaurant_id": self.restaurant_id,
            "as_of": agg.iso(self.as_of),
            "minute": {"start": agg.iso(self.spans.minute_start), "end": agg.iso(self.spans.end)},
            "hour": {"start": agg.iso(self.spans.hour_start), "end": agg.iso(self.spans.end)},
            "changes_last_minute": self.changes_last_minute,
            "changes_last_hour": self.changes_last_hour,
            "conflicts_last_minute": self.conflicts_last_minute,
            "conflicts_last_hour": self.conflicts_last_hour,
            "forbidden_last_minute": self.forbidden_last_minute,
            "forbidden_last_hour": self.forbidden_last_hour,
            "by_status_last_hour": dict(sorted(self.by_status_last_hour.items())),
            "prep_time_s": {
                "count": sum(self.prep_buckets),
                "p50": agg.percentile(self.prep_buckets, 0.50),
                "p95": agg.percentile(self.prep_buckets, 0.95),
                "buckets": [
                    {"le": "+Inf" if bound == float("inf") else bound, "count": count}
                    for bound, count in zip(agg.PREP_BOUNDS_S, self.prep_buckets, strict=True)
                ],
            },
            "open_orders": dict(sorted(self.open_orders.items())),
        }


class EventClock:
    """The windows' notion of time: the change's own time (when the worker applied it), not the
    Kafka record's timestamp, so the windows cut where SQL's `created_at` cuts."""

    def __init__(self) -> None:
        self.at = 0.0

    def __call__(self, _event: Any = None) -> float:
        return self.at


class FiguresApp:
    def __init__(self, settings: Settings, on_handled: Handled | None = None) -> None:
        self.settings = settings
        self.partitions = settings.kafka_command_partitions
        self.on_handled = on_handled or (lambda _kind, _what: None)
        self.clock = EventClock()
        self.app = faust.App(
            app_id(settings),
            broker=brokers(settings),
            # Changelog writes and offset commits in one Kafka transaction, and read_committed
            # consumption: faust's at-least-once reads uncommitted records, which would count the
            # worker's aborted transactions. The aggregates are idempotent on top (aggregates.py).
            processing_guarantee="exactly_once",
            topic_partitions=self.partitions,
            topic_disable_leader=True,  # no leader topic: one more topic auto-create would need
            consumer_auto_offset_reset="earliest",
            store="memory://",  # recovered from the changelogs at every start
            web_enabled=False,  # the web views are FastAPI (http.py), served in this loop
            datadir=Path(tempfile.gettempdir()) / f"{app_id(settings)}-data",
            table_cleanup_interval=30.0,
            # A killed instance leaves the group after this; its successor waits that long.
            broker_session_timeout=10.0,
            broker_heartbeat_interval=2.0,
            autodiscover=False,
        )
        tumbling = dict(size=agg.MINUTE_S, expires=agg.WINDOW_EXPIRES_S)
        self.changes_table = self._table("changes")
        self.changes = self.changes_table.tumbling(**tumbling).relative_to(self.clock)
        self.refusals_table = self._table("refusals")
        self.refusals = self.refusals_table.tumbling(**tumbling).relative_to(self.clock)
        self.prep_table = self._table("prep")
        self.prep = self.prep_table.hopping(
            agg.HOUR_S, agg.MINUTE_S, expires=agg.WINDOW_EXPIRES_S
        ).relative_to(self.clock)
        self.open = self._table("open")
        self.orders = self._table("orders")
        events = self.app.topic(
            settings.topics.events, key_serializer="raw", value_serializer="raw"
        )
        results = self.app.topic(
            settings.topics.results, key_serializer="raw", value_serializer="raw"
        )
        self.app.agent(events, name="figures.events")(self._absorb_events)
        self.app.agent(results, name="figures.results")(self._absorb_results)
        self.app.timer(agg.MINUTE_S)(self._expire_recovered_windows)

    def _table(self, name: str) -> Any:
        return self.app.Table(
            name,
            default=dict,
            partitions=self.partitions,
            # No key/value types: faust (de)serialises both as JSON (windowed keys as lists).
        )

    def changelogs(self) -> list[Changelog]:
        retention = int(agg.WINDOW_EXPIRES_S * 1000)
        windowed = (self.changes_table, self.refusals_table, self.prep_table)
        return [Changelog(t.changelog_topic.get_topic_name(), retention) for t in windowed] + [
            Changelog(t.changelog_topic.get_topic_name(), None) for t in (self.open, self.orders)
        ]

    def prepare(self) -> None:
        """Creates the changelog topics before faust starts (the broker auto-creates nothing)."""
        ensure_changelogs(self.settings, self.changelogs())

    @property
    def ready(self) -> bool:
        """Recovered from the changelogs and consuming."""
        recovery: Any = getattr(self.app.tables, "recovery")  # noqa: B009 (not in TableManagerT)
        return bool(recovery.completed.is_set() and not self.app.rebalancing)

    # --- the agents -------------------------------------------------------------------------

    async def _absorb_events(self, stream: Any) -> None:
        async for event in stream.events():
            self.absorb_change(event)

    async def _absorb_results(self, stream: Any) -> None:
        async for event in stream.events():
            self.absorb_result(event)

    def absorb_change(self, event: Any) -> None:
        message = event.message
        try:
            change = decode_change(event.value)
        except ValueError:
            log.warning(
                "event skipped: not an order event",
                extra={"evt": "figures_record_skipped", "offset": message.offset},
            )
            self.on_handled("events", "undecodable")
            return
        offset, partition = message.offset, message.partition
        stored = self.orders.get(change.order_id)
        record = agg.OrderRecord.from_json(stored) if stored else None
        if agg.is_copy(record, change.version, offset):
            self.on_handled("events", "copy")
            return
        key = agg.key_of(change.restaurant_id, partition)
        self.clock.at = change.at
        if change.from_status is not None:
            self.changes[key].apply(
                lambda current, label: agg.count_in(current, offset, label),
                change.to_status.value,
                event,
            )
        prep = self._prep_seconds(change, record)
        if prep is not None:
            self.prep[key].apply(
                lambda current, seconds: agg.observe_in(current, offset, seconds), prep, event
            )
        self.open[key] = agg.move_open(
            self.open.get(key), offset, change.from_status, change.to_status
        )
        if record is not None and record.offset >= offset:
            # Redelivered (a replay after a crash): the aggregates above skipped what they had.
            self.on_handled("events", "replayed")
            return
        accepted_at = record.accepted_at if record else None
        if change.to_status is OrderStatus.ACCEPTED:
            accepted_at = change.at
        self.orders[change.order_id] = agg.OrderRecord(
            change.restaurant_id, change.to_status.value, change.version, offset, accepted_at
        ).to_json()
        self.on_handled("events", "counted")

    @staticmethod
    def _prep_seconds(change: Change, record: agg.OrderRecord | None) -> float | None:
        if change.to_status is not OrderStatus.READY or record is None:
            return None
        if record.accepted_at is None:
            return None
        return max(0.0, change.at - record.accepted_at)

    def absorb_result(self, event: Any) -> None:
        message = event.message
        headers = dict(message.headers or [])
        if headers.get(DUPLICATE_HEADER) == b"1":
            self.on_handled("results", "copy")
            return
        try:
            refusal = decode_refusal(event.value)
        except ValueError:
            self.on_handled("results", "undecodable")
            return
        if refusal is None:
            self.on_handled("results", "not_a_refusal")
            return
        restaurant = refusal.restaurant_id
        if restaurant is None:
            # A hidden order: its restaurant is the one the events showed for it.
            stored = self.orders.get(refusal.order_id)
            restaurant = stored["r"] if stored else agg.UNATTRIBUTED
        key = agg.key_of(restaurant, message.partition)
        offset = message.offset
        self.clock.at = refusal.at
        self.refusals[key].apply(
            lambda current, label: agg.count_in(current, offset, label),
            refusal.outcome.value,
            event,
        )
        self.on_handled("results", "counted")

    async def _expire_recovered_windows(self) -> None:
        """faust #385: windows recovered from a changelog never expire (only windows written by
        this process are in faust's expiry heap). Drop them from memory once stale; the changelog
        forgets them by its retention."""
        now = time.time()
        for table in (self.changes_table, self.refusals_table, self.prep_table):
            for key in agg.stale_windows(list(table.data.keys()), now):
                table.data.pop(key, None)

    # --- reads ------------------------------------------------------------------------------

    def _keys(self, restaurant_id: str) -> list[str]:
        return [agg.key_of(restaurant_id, p) for p in range(self.partitions)]

    def _minute_counts(self, table: Any, keys: list[str], minute_start: float) -> Counter[str]:
        window = (minute_start, minute_start + agg.MINUTE_S - 0.1)
        return agg.total(table.data.get((key, window), {}).get("c", {}) for key in keys)

    def figures(self, restaurant_id: str, now: float | None = None) -> RestaurantFigures:
        now = time.time() if now is None else now
        spans = agg.Spans.at(now)
        keys = self._keys(restaurant_id)
        minutes = spans.minutes(int(agg.HOUR_S // agg.MINUTE_S))
        minute_changes = self._minute_counts(self.changes_table, keys, spans.minute_start)
        hour_changes = agg.total(self._minute_counts(self.changes_table, keys, m) for m in minutes)
        minute_refusals = self._minute_counts(self.refusals_table, keys, spans.minute_start)
        hour_refusals = agg.total(
            self._minute_counts(self.refusals_table, keys, m) for m in minutes
        )
        hour_window = (spans.hour_start, spans.hour_start + agg.HOUR_S - 0.1)
        buckets = [0] * len(agg.PREP_BOUNDS_S)
        for key in keys:
            for index, count in enumerate(
                self.prep_table.data.get((key, hour_window), {}).get("b", [])
            ):
                buckets[index] += count
        open_orders = agg.total(self.open.data.get(key, {}).get("c", {}) for key in keys)
        return RestaurantFigures(
            restaurant_id=restaurant_id,
            as_of=now,
            spans=spans,
            changes_last_minute=sum(minute_changes.values()),
            changes_last_hour=sum(hour_changes.values()),
            conflicts_last_minute=minute_refusals["conflict"],
            conflicts_last_hour=hour_refusals["conflict"],
            forbidden_last_minute=minute_refusals["forbidden"],
            forbidden_last_hour=hour_refusals["forbidden"],
            by_status_last_hour=dict(hour_changes),
            prep_buckets=buckets,
            open_orders={status: n for status, n in open_orders.items() if n},
        )

    def restaurants(self) -> list[str]:
        """Every restaurant the figures hold state of."""
        names = {agg.restaurant_of_key(key) for key in self.open.data}
        for table in (self.changes_table, self.refusals_table):
            names.update(agg.restaurant_of_key(key[0]) for key in table.data)
        return sorted(names)

    def throughput(self, now: float | None = None) -> list[tuple[float, int]]:
        """Status changes per minute over the last 15 minutes, all restaurants: (minute, count)."""
        spans = agg.Spans.at(time.time() if now is None else now)
        per_minute = dict.fromkeys(spans.minutes(agg.THROUGHPUT_MINUTES), 0)
        for (_key, (start, _end)), value in list(self.changes_table.data.items()):
            if start in per_minute:
                per_minute[start] += sum(value.get("c", {}).values())
        return sorted(per_minute.items())
