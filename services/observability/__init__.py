"""What the runbook observes: Prometheus metrics of the API, the SLIs as PromQL, Sentry wiring and
the Kafka consumer lag. The worker's own metrics live in services/status_worker/metrics.py."""
