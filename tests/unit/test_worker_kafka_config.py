"""The worker's Kafka client configurations, value for value as they were before the builders moved
into services/adapters/kafka_config.py (issue 8): the move changes no setting of the worker."""

from __future__ import annotations

from typing import Any

from services.adapters.kafka_config import worker_consumer as consumer_config
from services.adapters.kafka_config import worker_producer as producer_config
from services.adapters.settings import Settings

PLAIN: dict[str, Any] = {
    "kafka_bootstrap_servers": "127.0.0.1:19092",
    "kafka_security_protocol": "PLAINTEXT",
}


def test_consumer_config_at_the_defaults() -> None:
    assert consumer_config(Settings(**PLAIN)) == {
        "bootstrap.servers": "127.0.0.1:19092",
        "group.id": "order-status-worker",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 3333,
        "fetch.wait.max.ms": 100,
        "client.id": "status-worker-1",
        "retry.backoff.ms": 1,  # WORKER_KAFKA_RETRY_BACKOFF_MS: 5 until issue 9's trace
        "retry.backoff.max.ms": 100,
        "group.instance.id": "order-status-worker.1",
    }


def test_consumer_config_without_static_membership() -> None:
    settings = Settings(
        **PLAIN,
        worker_static_membership=False,
        worker_id="7",
        worker_group_id="g",
        worker_session_timeout_ms=2000,
        worker_fetch_wait_max_ms=50,
        worker_kafka_retry_backoff_ms=300,
        worker_kafka_retry_backoff_max_ms=100,
    )
    assert consumer_config(settings) == {
        "bootstrap.servers": "127.0.0.1:19092",
        "group.id": "g",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": 2000,
        "heartbeat.interval.ms": 1000,
        "fetch.wait.max.ms": 50,
        "client.id": "status-worker-7",
        "retry.backoff.ms": 300,
        "retry.backoff.max.ms": 300,
    }


def test_producer_config_at_the_defaults() -> None:
    assert producer_config(Settings(**PLAIN)) == {
        "bootstrap.servers": "127.0.0.1:19092",
        "transactional.id": "order-status-worker.1",
        "transaction.timeout.ms": 10000,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 1,
        "client.id": "status-worker-1",
        "retry.backoff.ms": 1,  # WORKER_KAFKA_RETRY_BACKOFF_MS: 5 until issue 9's trace
        "retry.backoff.max.ms": 100,
    }


def test_producer_config_follows_its_settings() -> None:
    settings = Settings(
        **PLAIN,
        worker_id="7",
        worker_group_id="g",
        worker_transaction_timeout_ms=3000,
        worker_kafka_retry_backoff_ms=20,
        worker_kafka_retry_backoff_max_ms=400,
    )
    assert producer_config(settings) == {
        "bootstrap.servers": "127.0.0.1:19092",
        "transactional.id": "g.7",
        "transaction.timeout.ms": 3000,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 1,
        "client.id": "status-worker-7",
        "retry.backoff.ms": 20,
        "retry.backoff.max.ms": 400,
    }
