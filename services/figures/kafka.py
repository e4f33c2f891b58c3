"""The figures app's Kafka side that faust does not decide: its consumer group and client ids,
and its changelog topics, created here through the Admin API (the broker's auto-create is off)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from services.adapters import kafka_config
from services.adapters.kafka_admin import replication_config
from services.adapters.settings import Settings

log = logging.getLogger(__name__)


def app_id(settings: Settings) -> str:
    """faust's app id: its consumer group, its transactional ids and its changelog names."""
    return f"{settings.kafka_topic_prefix}.figures"


def data_dir(settings: Settings) -> Path:
    """faust's data directory; tables live in memory, so it holds only faust's own bookkeeping."""
    return Path(tempfile.gettempdir()) / f"{app_id(settings)}-data"


@dataclass(frozen=True)
class Changelog:
    """One table's changelog topic: windowed ones are compacted and deleted past the windows'
    life, the others compacted only."""

    name: str
    windowed_retention_ms: int | None

    def spec(self, settings: Settings) -> NewTopic:
        config = {**replication_config(settings), "cleanup.policy": "compact"}
        if self.windowed_retention_ms is not None:
            config |= {
                "cleanup.policy": "compact,delete",
                "retention.ms": str(self.windowed_retention_ms),
            }
        return NewTopic(
            self.name,
            # A changelog partition per source partition: faust writes a table change to the
            # partition of the record that caused it, and checks the counts match.
            num_partitions=settings.kafka_command_partitions,
            replication_factor=settings.kafka_replication_factor,
            config=config,
        )


def ensure_changelogs(settings: Settings, changelogs: list[Changelog], timeout: float = 30) -> None:
    admin = AdminClient(kafka_config.admin(settings))
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [c.spec(settings) for c in changelogs if c.name not in existing]
    if not missing:
        return
    for _name, future in admin.create_topics(missing, request_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    log.info(
        "changelog topics created",
        extra={"evt": "figures_changelogs_created", "topics": [t.topic for t in missing]},
    )


def delete_app_topics(settings: Settings, timeout: float = 30) -> None:
    """Removes the app's changelogs and data directory (tests clean up after themselves)."""
    shutil.rmtree(data_dir(settings), ignore_errors=True)
    admin = AdminClient(kafka_config.admin(settings))
    prefix = app_id(settings) + "-"
    names = [t for t in admin.list_topics(timeout=timeout).topics if t.startswith(prefix)]
    if names:
        for future in admin.delete_topics(names, request_timeout=timeout).values():
            try:
                future.result()
            except KafkaException:
                log.warning("could not delete a figures topic", exc_info=True)
