"""Topic creation through the Admin API: the project creates its topics, never broker auto-create."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from services.adapters import kafka_config
from services.adapters.settings import Settings

log = logging.getLogger(__name__)


def replication_config(settings: Settings) -> dict[str, str]:
    """Every project topic's own min.insync.replicas (a topic setting wins over the broker's, so
    the topics keep their guarantee on a broker configured otherwise)."""
    return {"min.insync.replicas": str(settings.kafka_min_insync_replicas)}


def topic_specs(settings: Settings) -> list[NewTopic]:
    topics = settings.topics
    partitions = settings.kafka_command_partitions
    rf = settings.kafka_replication_factor
    replication = replication_config(settings)
    return [
        NewTopic(topics.commands, partitions, rf, config=replication),
        NewTopic(topics.results, partitions, rf, config=replication),
        NewTopic(topics.events, partitions, rf, config=replication),
        NewTopic(
            topics.dead_letters,
            num_partitions=1,
            replication_factor=rf,
            config={**replication, "retention.ms": str(30 * 24 * 3600 * 1000)},
        ),
    ]


def ensure_topics(
    settings: Settings, timeout: float = 30.0, only: frozenset[str] | None = None
) -> list[str]:
    """Creates missing topics (of `only`, when given: the ones a process uses); returns the names
    created by this call. Under ACLs a principal sees only the topics it may use and creates none
    (the operator's `orderstatus topics` does), so a refusal names what to run."""
    admin = AdminClient(kafka_config.admin(settings))
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [
        spec
        for spec in topic_specs(settings)
        if spec.topic not in existing and (only is None or spec.topic in only)
    ]
    created: list[str] = []
    if not missing:
        return created
    for name, future in admin.create_topics(missing, request_timeout=timeout).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            code = exc.args[0].name()
            if code == "TOPIC_AUTHORIZATION_FAILED":
                raise RuntimeError(
                    f"topic {name} is missing or not visible to {settings.kafka_sasl_username!r}: "
                    "create the topics and ACLs as the operator (orderstatus topics; orderstatus "
                    "kafka-acls apply)"
                ) from exc
            if code != "TOPIC_ALREADY_EXISTS":
                raise
    log.info("topics created", extra={"evt": "topics_created", "topics": created})
    return created
