"""Which worker slots a worker fences on a partition assignment (pure logic of kafka.SlotFencer)."""

from __future__ import annotations

from services.adapters.kafka_config import worker_consumer, worker_producer
from services.adapters.settings import Settings
from services.status_worker.kafka import departed_slots


def test_a_slot_seen_before_and_gone_now_is_fenced() -> None:
    assert departed_slots({"g.1", "g.2", "g.3"}, {"g.1", "g.3"}, own="g.1") == ["g.2"]


def test_live_members_and_the_worker_itself_are_never_fenced() -> None:
    assert departed_slots({"g.1", "g.2"}, {"g.2"}, own="g.1") == []
    assert departed_slots({"g.1", "g.2"}, {"g.1", "g.2", "g.3"}, own="g.1") == []


def test_nothing_is_fenced_before_the_group_was_first_seen() -> None:
    # A slot this worker never saw as a member is unknown to it (docs/instances.md: the limit).
    assert departed_slots(set(), {"g.1"}, own="g.1") == []


def test_a_slot_is_named_alike_as_group_member_and_as_transactional_id() -> None:
    """The fencer finds departed slots by group.instance.id and fences them by transactional.id."""
    settings = Settings(kafka_security_protocol="PLAINTEXT", worker_id="7", worker_group_id="g")
    assert worker_consumer(settings)["group.instance.id"] == "g.7"
    assert worker_producer(settings)["transactional.id"] == "g.7"
