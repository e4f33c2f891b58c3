"""Every topic the project creates carries the replication it is configured for: the replication
factor and its own min.insync.replicas (a topic setting, so it holds whatever the broker's default)."""

from __future__ import annotations

from services.adapters.kafka_admin import topic_specs
from services.adapters.settings import Settings
from services.figures.kafka import Changelog


def test_project_topics_get_the_replication_factor_and_min_insync_replicas() -> None:
    settings = Settings(kafka_replication_factor=3, kafka_min_insync_replicas=2)
    specs = topic_specs(settings)
    assert {s.replication_factor for s in specs} == {3}
    assert {s.config["min.insync.replicas"] for s in specs} == {"2"}
    assert {s.topic for s in specs} == {
        settings.topics.commands,
        settings.topics.results,
        settings.topics.events,
        settings.topics.dead_letters,
    }


def test_the_defaults_are_one_brokers() -> None:
    """(Settings() would read KAFKA_REPLICATION_FACTOR from `make test KAFKA_BROKERS=3`.)"""
    fields = Settings.model_fields
    assert fields["kafka_replication_factor"].default == 1
    assert fields["kafka_min_insync_replicas"].default == 1


def test_figures_changelogs_are_replicated_like_the_project_topics() -> None:
    settings = Settings(kafka_replication_factor=3, kafka_min_insync_replicas=2)
    for changelog in (Changelog("c", None), Changelog("w", 3_600_000)):
        spec = changelog.spec(settings)
        assert spec.replication_factor == 3
        assert spec.config["min.insync.replicas"] == "2"
    assert Changelog("w", 3_600_000).spec(settings).config["cleanup.policy"] == "compact,delete"
