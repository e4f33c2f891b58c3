"""Prometheus metrics of the notifier (NOTIFIER_METRICS_PORT); the alert rules read them
(deploy/prometheus/rules/notifier.yml)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.notifier.schedule import AttemptResult, Verdict

ATTEMPTS = Counter("orderstatus_webhook_attempts_total", "Delivery attempts, by result", ["result"])
DELIVERIES = Counter(
    "orderstatus_webhook_deliveries_total",
    "Deliveries finished, by result: delivered, failed (retries used up), disabled (410)",
    ["result"],
)
RECORDED = Counter(
    "orderstatus_webhook_deliveries_recorded_total",
    "Deliveries recorded from events (one per matching endpoint and event)",
)
UNDECODABLE = Counter(
    "orderstatus_notifier_undecodable_events_total", "Events-topic records that are no CloudEvent"
)
ENDPOINTS_DISABLED = Counter(
    "orderstatus_webhook_endpoints_disabled_total", "Endpoints the notifier disabled"
)
IN_FLIGHT = Gauge("orderstatus_webhook_in_flight", "Attempts in flight")
PENDING = Gauge("orderstatus_webhook_pending", "Deliveries not yet delivered nor given up")
RETRY_BACKLOG = Gauge(
    "orderstatus_webhook_retry_backlog", "Pending deliveries that failed at least once"
)
OLDEST_UNDELIVERED = Gauge(
    "orderstatus_webhook_oldest_undelivered_seconds",
    "Age of the oldest pending delivery's event (0: none pending)",
)
FIRST_ATTEMPT_SECONDS = Histogram(
    "orderstatus_webhook_first_attempt_seconds",
    "From the change being applied (the event's time) to its first delivery attempt",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ATTEMPT_SECONDS = Histogram(
    "orderstatus_webhook_attempt_seconds",
    "One attempt, from resolving the host to the response read",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

for result in AttemptResult:
    ATTEMPTS.labels(result.value)
for verdict in (Verdict.DELIVERED, Verdict.FAILED, Verdict.DISABLE):
    DELIVERIES.labels(verdict.value)
