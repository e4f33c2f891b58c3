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
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import faust

from services.adapters import kafka_config
from services.adapters.settings import Settings
from services.core.statuses import OrderStatus
from services.figures import aggregates as agg
from services.figures.changes import Change, decode_change, decode_refusal
from services.figures.kafka import Changelog, app_id, data_dir, ensure_changelogs

log = logging.getLogger(__name__)

DUPLICATE_HEADER = "duplicate"
"""The worker's mark on a result it republished for a redelivered command: counted once already."""

Handled = Callable[[str, str], None]
"""Called with (topic kind, what happened to the record), for the app's own metrics."""


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
            broker=kafka_config.faust_brokers(settings),
            broker_credentials=kafka_config.faust_credentials(settings),
            # Changelog writes and offset commits in one Kafka transaction, and read_committed
            # consumption: faust's at-least-once reads uncommitted records, which would count the
            # worker's aborted transactions. The aggregates are idempotent on top (aggregates.py).
            processing_guarantee="exactly_once",
            topic_partitions=self.partitions,
            topic_disable_leader=True,  # no leader topic: one more topic auto-create would need
            consumer_auto_offset_reset="earliest",
            store="memory://",  # recovered from the changelogs at every start
            web_enabled=False,  # the web views are FastAPI (http.py), served in this loop
            datadir=data_dir(settings),
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

    def _windows(
        self, table: Any, restaurant_id: str | None, starts: list[float], size: float
    ) -> Iterator[tuple[str, float, agg.Value]]:
        """(key, window start, value) of a windowed table: of one restaurant by lookups, or of
        all by one pass over what the table holds."""
        if restaurant_id is None:
            for (key, (start, _end)), value in list(table.data.items()):
                yield key, start, value
            return
        for key in self._keys(restaurant_id):
            for start in starts:
                value = table.data.get((key, (start, start + size - 0.1)))
                if value:
                    yield key, start, value

    def _tallies(self, spans: agg.Spans, restaurant_id: str | None) -> dict[str, agg.Tally]:
        tallies: defaultdict[str, agg.Tally] = defaultdict(agg.Tally)
        minutes = spans.minutes(int(agg.HOUR_S // agg.MINUTE_S))
        hour = set(minutes)
        for table, add in (
            (self.changes_table, agg.Tally.add_changes),
            (self.refusals_table, agg.Tally.add_refusals),
        ):
            for key, start, value in self._windows(table, restaurant_id, minutes, agg.MINUTE_S):
                if start in hour:
                    add(tallies[agg.restaurant_of_key(key)], value, start == spans.minute_start)
        for key, start, value in self._windows(
            self.prep_table, restaurant_id, [spans.hour_start], agg.HOUR_S
        ):
            if start == spans.hour_start:
                tallies[agg.restaurant_of_key(key)].add_prep(value)
        keys = self.open.data if restaurant_id is None else self._keys(restaurant_id)
        for key in list(keys):
            value = self.open.data.get(key)
            if value is not None:
                tallies[agg.restaurant_of_key(key)].add_open(value)
        return tallies

    def figures(self, restaurant_id: str, now: float | None = None) -> agg.RestaurantFigures:
        now = time.time() if now is None else now
        spans = agg.Spans.at(now)
        tally = self._tallies(spans, restaurant_id).get(restaurant_id, agg.Tally())
        return tally.figures(restaurant_id, now, spans)

    def all_figures(self, now: float | None = None) -> list[agg.RestaurantFigures]:
        """Every restaurant the tables hold, in one pass over each table."""
        now = time.time() if now is None else now
        spans = agg.Spans.at(now)
        return [
            tally.figures(restaurant, now, spans)
            for restaurant, tally in sorted(self._tallies(spans, None).items())
        ]

    def throughput(self, now: float | None = None) -> list[tuple[float, int]]:
        """Status changes per minute over the last 15 minutes, all restaurants: (minute, count)."""
        spans = agg.Spans.at(time.time() if now is None else now)
        per_minute = dict.fromkeys(spans.minutes(agg.THROUGHPUT_MINUTES), 0)
        for (_key, (start, _end)), value in list(self.changes_table.data.items()):
            if start in per_minute:
                per_minute[start] += sum(value.get("c", {}).values())
        return sorted(per_minute.items())
