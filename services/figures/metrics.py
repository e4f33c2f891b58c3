"""Prometheus metrics of the figures app.

Cardinality rule: a restaurant gets its own `restaurant` label only while it is among the
`FIGURES_METRICS_MAX_RESTAURANTS` (default 20) busiest by status changes in the last hour; all the
others are summed into `restaurant="other"`. So the series count is bounded by that number (plus
one) times the statuses, whatever the number of restaurants. Percentiles are not summable, so
"other" has none."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.figures.aggregates import RestaurantFigures

OTHER = "other"
PREFIX = "orderstatus_figures"


class FiguresCollector(Collector):
    """Reads the tables at scrape time: the metrics are the JSON view's figures."""

    def __init__(
        self, snapshot: Callable[[], list[RestaurantFigures]], max_restaurants: int
    ) -> None:
        self.snapshot = snapshot
        self.max_restaurants = max_restaurants

    def collect(self) -> Iterator[GaugeMetricFamily]:
        figures = sorted(self.snapshot(), key=lambda f: (-f.changes_last_hour, f.restaurant_id))
        named, rest = figures[: self.max_restaurants], figures[self.max_restaurants :]
        sums = {
            "changes_last_minute": "Status changes in the current minute",
            "changes_last_hour": "Status changes in the last hour",
            "conflicts_last_hour": "Conflict outcomes in the last hour",
            "forbidden_last_hour": "Forbidden outcomes in the last hour",
        }
        for field, help_text in sums.items():
            gauge = GaugeMetricFamily(f"{PREFIX}_{field}", help_text, labels=["restaurant"])
            for one in named:
                gauge.add_metric([one.restaurant_id], getattr(one, field))
            if rest:
                gauge.add_metric([OTHER], sum(getattr(one, field) for one in rest))
            yield gauge
        open_orders = GaugeMetricFamily(
            f"{PREFIX}_open_orders", "Orders open now, by status", labels=["restaurant", "status"]
        )
        for one in named:
            for status, count in one.open_orders.items():
                open_orders.add_metric([one.restaurant_id, status], count)
        other: Counter[str] = Counter()
        for one in rest:
            other.update(one.open_orders)
        for status, count in other.items():
            open_orders.add_metric([OTHER, status], count)
        yield open_orders
        prep = GaugeMetricFamily(
            f"{PREFIX}_prep_time_seconds",
            "Accepted to ready over the last hour, by quantile",
            labels=["restaurant", "quantile"],
        )
        for one in named:
            summary = one.to_json()["prep_time_s"]
            for quantile in ("p50", "p95"):
                if summary[quantile] is not None:
                    prep.add_metric([one.restaurant_id, quantile], summary[quantile])
        yield prep


class FiguresMetrics:
    """The app's registry: the figures plus counters of what the agents did with each record."""

    def __init__(self, snapshot: Callable[[], list[RestaurantFigures]], max_restaurants: int):
        self.registry = CollectorRegistry()
        self.records = PromCounter(
            f"{PREFIX}_records_total",
            "Records the figures app read, by topic and what it did with them "
            "(counted, replayed, copy, not_a_refusal, undecodable)",
            ["topic", "handling"],
            registry=self.registry,
        )
        self.registry.register(FiguresCollector(snapshot, max_restaurants))

    def handled(self, topic: str, handling: str) -> None:
        self.records.labels(topic, handling).inc()
