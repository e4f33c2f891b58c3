"""The figures' arithmetic: idempotent absorption, percentiles against the exact rank, spans,
expiry of recovered windows, the decoders and the metrics' cardinality rule."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.messages import CommandResult, OrderView, Outcome, encode
from services.core.statuses import OrderStatus
from services.figures import aggregates as agg
from services.figures.aggregates import RestaurantFigures
from services.figures.changes import decode_change, decode_refusal
from services.figures.metrics import OTHER, FiguresCollector

S = OrderStatus


def test_a_count_absorbs_each_offset_once() -> None:
    value = agg.count_in({}, 5, "accepted")
    value = agg.count_in(value, 6, "accepted")
    assert agg.count_in(value, 6, "accepted") is value  # redelivered: nothing changes
    assert agg.count_in(value, 3, "ready") is value  # older than the last absorbed
    assert agg.count_in(value, 7, "ready") == {"o": 7, "c": {"accepted": 2, "ready": 1}}


def test_open_orders_move_with_each_change_and_forget_final_ones() -> None:
    value = agg.move_open({}, 1, None, S.PENDING)
    value = agg.move_open(value, 2, None, S.PENDING)
    value = agg.move_open(value, 3, S.PENDING, S.ACCEPTED)
    assert value["c"] == {"pending": 1, "accepted": 1}
    assert agg.move_open(value, 3, S.ACCEPTED, S.PREPARING) is value
    value = agg.move_open(value, 4, S.ACCEPTED, S.CANCELLED)
    assert value["c"] == {"pending": 1}


def test_a_copy_at_a_later_offset_is_not_a_replay() -> None:
    record = agg.OrderRecord("r", "accepted", 2, 10, 1.0)
    assert agg.is_copy(record, 2, 11)  # the same version again, further on: a copy
    assert not agg.is_copy(record, 2, 10)  # the same record again: a replay
    assert not agg.is_copy(record, 3, 12)  # the next change
    assert not agg.is_copy(None, 1, 0)
    assert agg.OrderRecord.from_json(record.to_json()) == record


def exact_percentile(values: list[float], q: float) -> float:
    """SQL's percentile_disc: the first value whose cumulative share reaches q."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@given(st.lists(st.floats(min_value=0, max_value=5000, allow_nan=False), min_size=1, max_size=300))
def test_percentiles_from_buckets_are_within_the_bucket_width_of_sql(values: list[float]) -> None:
    value: agg.Value = {}
    for offset, seconds in enumerate(values):
        value = agg.observe_in(value, offset, seconds)
    assert sum(value["b"]) == len(values)
    for q in (0.5, 0.95):
        estimate = agg.percentile(value["b"], q)
        exact = exact_percentile(values, q)
        assert estimate is not None
        assert abs(estimate - exact) <= agg.bucket_width(exact) + 1e-9


def test_no_observations_no_percentile() -> None:
    assert agg.percentile([0] * len(agg.PREP_BOUNDS_S), 0.5) is None


def test_the_last_hour_ends_with_the_current_minute() -> None:
    spans = agg.Spans.at(3600 * 10 + 125.5)
    assert spans.minute_start == 3600 * 10 + 120
    assert spans.end == 3600 * 10 + 180
    assert spans.end - spans.hour_start == 3600
    minutes = spans.minutes(60)
    assert minutes[0] == spans.hour_start and minutes[-1] == spans.minute_start


def test_stale_windows_are_those_ended_past_the_expiry() -> None:
    now = 100_000.0
    fresh = ("r/0", (now - 60, now - 0.1))
    stale = ("r/0", (now - agg.WINDOW_EXPIRES_S - 120, now - agg.WINDOW_EXPIRES_S - 60.1))
    assert agg.stale_windows([fresh, stale], now) == [stale]


def cloud_event(**data: object) -> bytes:
    order = str(uuid.uuid4())
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "/order-status/status-worker",
            "type": "com.orderstatus.order.status_changed.v1",
            "subject": order,
            "time": "2026-12-01T20:00:00.123456Z",
            "datacontenttype": "application/json",
            "data": {
                "order_id": order,
                "restaurant_id": str(uuid.uuid4()),
                "from_status": "pending",
                "to_status": "accepted",
                "version": 2,
                "command_id": str(uuid.uuid4()),
                "actor": "pos",
                "reason": None,
                "rid": "r1",
                **data,
            },
        }
    )


def test_a_cloud_event_becomes_a_change_at_its_own_time() -> None:
    change = decode_change(cloud_event())
    assert change.from_status is S.PENDING and change.to_status is S.ACCEPTED
    assert change.version == 2
    assert change.at == datetime(2026, 12, 1, 20, 0, 0, 123456, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[]", b'{"specversion": "1.0", "type": "x"}', cloud_event(to_status="gone")],
)
def test_anything_else_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_change(raw)


def result(outcome: Outcome, with_order: bool) -> bytes:
    order_id = uuid.uuid4()
    now = datetime.now(UTC)
    order = OrderView(
        order_id=order_id,
        restaurant_id=uuid.uuid4(),
        status=S.ACCEPTED,
        version=2,
        updated_at=now,
    )
    return encode(
        CommandResult(
            command_id=uuid.uuid4(),
            order_id=order_id,
            command_type="change_status",
            outcome=outcome,
            order=order if with_order else None,
            processed_at=now,
        )
    )


def test_refusals_are_conflicts_and_forbidden_only() -> None:
    conflict = decode_refusal(result(Outcome.CONFLICT, with_order=True))
    assert conflict is not None and conflict.restaurant_id is not None
    forbidden = decode_refusal(result(Outcome.FORBIDDEN, with_order=False))
    assert forbidden is not None and forbidden.restaurant_id is None
    assert decode_refusal(result(Outcome.APPLIED, with_order=True)) is None


def figures_of(restaurant: str, changes: int) -> RestaurantFigures:
    return RestaurantFigures(
        restaurant_id=restaurant,
        as_of=0.0,
        spans=agg.Spans.at(0.0),
        changes_last_minute=changes,
        changes_last_hour=changes,
        conflicts_last_minute=0,
        conflicts_last_hour=1,
        forbidden_last_minute=0,
        forbidden_last_hour=0,
        by_status_last_hour={"accepted": changes},
        prep_buckets=[1] + [0] * (len(agg.PREP_BOUNDS_S) - 1),
        open_orders={"pending": 2},
    )


def test_metrics_name_the_busiest_restaurants_and_sum_the_rest_as_other() -> None:
    every = [figures_of(f"r{i:02}", changes=i) for i in range(30)]
    families = {f.name: f for f in FiguresCollector(lambda: every, max_restaurants=5).collect()}
    hour = families["orderstatus_figures_changes_last_hour"].samples
    labels = {s.labels["restaurant"]: s.value for s in hour}
    assert set(labels) == {"r29", "r28", "r27", "r26", "r25", OTHER}
    assert labels[OTHER] == sum(range(25))
    open_orders = families["orderstatus_figures_open_orders"].samples
    assert {s.labels["restaurant"] for s in open_orders} == set(labels)
    prep = families["orderstatus_figures_prep_time_seconds"].samples
    assert OTHER not in {s.labels["restaurant"] for s in prep}
