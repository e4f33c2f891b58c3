"""The figures' arithmetic, free of faust and Kafka: how one record changes one aggregate, and how
aggregates become the figures of a restaurant.

Every aggregate value remembers the source offset of the last record it absorbed (`o`). Each
aggregate key carries its source partition (`<restaurant>/<partition>`), so offsets of one key are
comparable, and a record at or below that offset was absorbed already: a redelivered record (a
replay after a crash, at-least-once) changes nothing. The per-order record keeps (version, offset),
so a second copy of a change at a new offset is dropped too (docs/figures.md)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.core.statuses import FINAL_STATUSES, OrderStatus

MINUTE_S = 60.0
HOUR_S = 3600.0
THROUGHPUT_MINUTES = 15
WINDOW_EXPIRES_S = 2 * HOUR_S
"""Windows are kept two hours: the last hour is read, the second is slack for late records."""

PREP_BOUNDS_S: tuple[float, ...] = (
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    900.0,
    1200.0,
    1800.0,
    2700.0,
    3600.0,
    math.inf,
)
"""Upper bounds (inclusive) of the prep-time histogram buckets, from a rushed test run (tenths of a
second) to a slow kitchen (an hour). A percentile read off them is exact to its bucket's width."""

UNATTRIBUTED = "-"
"""The restaurant of a refusal whose order the figures never saw (e.g. a refused create)."""

Value = dict[str, Any]


def key_of(restaurant_id: str, partition: int) -> str:
    return f"{restaurant_id}/{partition}"


def restaurant_of_key(key: str) -> str:
    return key.rsplit("/", 1)[0]


def seen(value: Value | None, offset: int) -> bool:
    """Whether the aggregate absorbed the record at `offset` already (a redelivery)."""
    return bool(value) and int(value["o"]) >= offset  # type: ignore[index]


def count_in(value: Value | None, offset: int, label: str) -> Value:
    """`value` with one more `label`, unless it absorbed this offset already."""
    if value and seen(value, offset):
        return value
    counts = dict(value["c"]) if value else {}
    counts[label] = counts.get(label, 0) + 1
    return {"o": offset, "c": counts}


def bucket_index(seconds: float) -> int:
    for index, bound in enumerate(PREP_BOUNDS_S):
        if seconds <= bound:
            return index
    return len(PREP_BOUNDS_S) - 1


def observe_in(value: Value | None, offset: int, seconds: float) -> Value:
    """`value` (histogram buckets) with one more observation, unless absorbed already."""
    if value and seen(value, offset):
        return value
    buckets = list(value["b"]) if value else [0] * len(PREP_BOUNDS_S)
    buckets[bucket_index(seconds)] += 1
    return {"o": offset, "b": buckets}


def move_open(
    value: Value | None, offset: int, from_status: OrderStatus | None, to_status: OrderStatus
) -> Value:
    """Open orders per status after one change; final statuses are not open."""
    if value and seen(value, offset):
        return value
    counts = dict(value["c"]) if value else {}
    if from_status is not None and from_status not in FINAL_STATUSES:
        counts[from_status.value] = counts.get(from_status.value, 0) - 1
    if to_status not in FINAL_STATUSES:
        counts[to_status.value] = counts.get(to_status.value, 0) + 1
    return {"o": offset, "c": {status: n for status, n in counts.items() if n}}


@dataclass(frozen=True)
class OrderRecord:
    """What the figures remember of one order: its restaurant, where it is, when it was accepted."""

    restaurant_id: str
    status: str
    version: int
    offset: int
    accepted_at: float | None

    def to_json(self) -> Value:
        return {
            "r": self.restaurant_id,
            "s": self.status,
            "v": self.version,
            "o": self.offset,
            "a": self.accepted_at,
        }

    @classmethod
    def from_json(cls, value: Value) -> OrderRecord:
        return cls(value["r"], value["s"], int(value["v"]), int(value["o"]), value["a"])


def is_copy(record: OrderRecord | None, version: int, offset: int) -> bool:
    """A change the order is already past, at a later offset than the one that moved it: a second
    copy of the same change (not a replay, whose offset is at or below the record's)."""
    return record is not None and record.version >= version and offset > record.offset


def percentile(buckets: list[int], q: float) -> float | None:
    """The q-quantile with the rank SQL's percentile_disc uses (ceil(q*n)), placed linearly inside
    its bucket: within that bucket's width of the exact value."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    before = 0
    for index, count in enumerate(buckets):
        if count and before + count >= rank:
            lower = PREP_BOUNDS_S[index - 1] if index else 0.0
            upper = PREP_BOUNDS_S[index]
            if math.isinf(upper):
                return lower
            return min(upper, lower + (upper - lower) * (rank - before) / count)
        before += count
    raise AssertionError("unreachable: rank <= total")


def bucket_width(seconds: float) -> float:
    index = bucket_index(seconds)
    lower = PREP_BOUNDS_S[index - 1] if index else 0.0
    upper = PREP_BOUNDS_S[index]
    return math.inf if math.isinf(upper) else upper - lower


@dataclass(frozen=True)
class Spans:
    """The last minute is the current 1-minute window; the last hour is it and the 59 before it
    (the hopping window that ends with the current minute). SQL compares over the same spans."""

    minute_start: float

    @classmethod
    def at(cls, now: float) -> Spans:
        return cls(math.floor(now / MINUTE_S) * MINUTE_S)

    @property
    def end(self) -> float:
        return self.minute_start + MINUTE_S

    @property
    def hour_start(self) -> float:
        return self.end - HOUR_S

    def minutes(self, count: int) -> list[float]:
        """Starts of the last `count` minutes, oldest first."""
        return [self.minute_start - MINUTE_S * i for i in range(count - 1, -1, -1)]


@dataclass
class RestaurantFigures:
    restaurant_id: str
    as_of: float
    spans: Spans
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
            "as_of": iso(self.as_of),
            "minute": {"start": iso(self.spans.minute_start), "end": iso(self.spans.end)},
            "hour": {"start": iso(self.spans.hour_start), "end": iso(self.spans.end)},
            "changes_last_minute": self.changes_last_minute,
            "changes_last_hour": self.changes_last_hour,
            "conflicts_last_minute": self.conflicts_last_minute,
            "conflicts_last_hour": self.conflicts_last_hour,
            "forbidden_last_minute": self.forbidden_last_minute,
            "forbidden_last_hour": self.forbidden_last_hour,
            "by_status_last_hour": dict(sorted(self.by_status_last_hour.items())),
            "prep_time_s": {
                "count": sum(self.prep_buckets),
                "p50": percentile(self.prep_buckets, 0.50),
                "p95": percentile(self.prep_buckets, 0.95),
                "buckets": [
                    {"le": "+Inf" if bound == float("inf") else bound, "count": count}
                    for bound, count in zip(PREP_BOUNDS_S, self.prep_buckets, strict=True)
                ],
            },
            "open_orders": dict(sorted(self.open_orders.items())),
        }


@dataclass
class Tally:
    """One restaurant's windows and open orders, summed over its partitions."""

    minute_changes: Counter[str] = field(default_factory=Counter)
    hour_changes: Counter[str] = field(default_factory=Counter)
    minute_refusals: Counter[str] = field(default_factory=Counter)
    hour_refusals: Counter[str] = field(default_factory=Counter)
    prep_buckets: list[int] = field(default_factory=lambda: [0] * len(PREP_BOUNDS_S))
    open_orders: Counter[str] = field(default_factory=Counter)

    def add_changes(self, value: Value, this_minute: bool) -> None:
        self.hour_changes.update(value["c"])
        if this_minute:
            self.minute_changes.update(value["c"])

    def add_refusals(self, value: Value, this_minute: bool) -> None:
        self.hour_refusals.update(value["c"])
        if this_minute:
            self.minute_refusals.update(value["c"])

    def add_prep(self, value: Value) -> None:
        for index, count in enumerate(value["b"]):
            self.prep_buckets[index] += count

    def add_open(self, value: Value) -> None:
        self.open_orders.update(value.get("c", {}))

    def figures(self, restaurant_id: str, now: float, spans: Spans) -> RestaurantFigures:
        return RestaurantFigures(
            restaurant_id=restaurant_id,
            as_of=now,
            spans=spans,
            changes_last_minute=sum(self.minute_changes.values()),
            changes_last_hour=sum(self.hour_changes.values()),
            conflicts_last_minute=self.minute_refusals["conflict"],
            conflicts_last_hour=self.hour_refusals["conflict"],
            forbidden_last_minute=self.minute_refusals["forbidden"],
            forbidden_last_hour=self.hour_refusals["forbidden"],
            by_status_last_hour=dict(self.hour_changes),
            prep_buckets=list(self.prep_buckets),
            open_orders={status: n for status, n in self.open_orders.items() if n},
        )


def total(counts: Iterable[Mapping[str, int]]) -> Counter[str]:
    summed: Counter[str] = Counter()
    for one in counts:
        summed.update(one)
    return summed


def stale_windows(keys: Iterable[Any], now: float, expires: float = WINDOW_EXPIRES_S) -> list[Any]:
    """Windowed keys `(key, (start, end))` whose window ended more than `expires` ago. faust expires
    only windows it wrote itself; the ones it recovered from a changelog stay (faust #385)."""
    return [key for key in keys if key[1][1] < now - expires]


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()
