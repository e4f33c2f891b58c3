"""The Kafka client configurations: settings reach the clients, and each client kind is built once."""

from __future__ import annotations

from services.core import kafka_config
from services.core.settings import Settings


def test_api_clients_take_the_latency_settings() -> None:
    settings = Settings(
        api_kafka_retry_backoff_ms=7,
        api_linger_ms=2,
        api_fetch_wait_max_ms=3,
        api_publish_timeout_s=1.5,
    )
    producer = kafka_config.api_producer(settings)
    consumer = kafka_config.api_results_consumer(settings)
    assert producer["linger.ms"] == 2
    assert producer["message.timeout.ms"] == 1500
    assert producer["enable.idempotence"] is True and producer["acks"] == "all"
    assert consumer["fetch.wait.max.ms"] == 3
    assert consumer["isolation.level"] == "read_committed"
    for config in (producer, consumer):
        assert config["retry.backoff.ms"] == 7
        assert config["retry.backoff.max.ms"] >= 7
        assert config["socket.nagle.disable"] is True


def test_backoff_cap_never_below_the_first_backoff() -> None:
    settings = Settings(api_kafka_retry_backoff_ms=500, api_kafka_retry_backoff_max_ms=100)
    assert kafka_config.api_producer(settings)["retry.backoff.max.ms"] == 500


def test_assign_only_readers_never_share_a_group() -> None:
    first = kafka_config.assign_only_reader("b:1", "reader")
    second = kafka_config.assign_only_reader("b:1", "reader", committed_only=False)
    assert first["group.id"] != second["group.id"]
    assert first["enable.auto.commit"] is False
    assert second["isolation.level"] == "read_uncommitted"
