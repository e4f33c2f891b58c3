"""The ACL table (services/adapters/kafka_acls.py) read as the issue states it: who may write and read
each topic. The broker's enforcement of it is tests/integration/test_kafka_security.py."""

from __future__ import annotations

from confluent_kafka.admin._acl import AclOperation
from confluent_kafka.admin._resource import ResourcePatternType, ResourceType

from services.adapters.kafka_acls import bindings, grants
from services.adapters.kafka_principals import Role, principal_name
from services.adapters.settings import Settings

SETTINGS = Settings(kafka_topic_prefix="p", worker_group_id="p-worker")
TOPICS = SETTINGS.topics


def who_may(operation: AclOperation, topic: str) -> set[str]:
    return {
        b.principal
        for b in bindings(grants(SETTINGS))
        if b.restype is ResourceType.TOPIC
        and b.resource_pattern_type is ResourcePatternType.LITERAL
        and b.name == topic
        and b.operation in (operation, AclOperation.ALL)
    }


def user(role: Role) -> str:
    return f"User:{principal_name(role)}"


def test_only_the_api_writes_commands_and_only_workers_read_them() -> None:
    assert who_may(AclOperation.WRITE, TOPICS.commands) == {user(Role.API)}
    assert who_may(AclOperation.READ, TOPICS.commands) == {user(Role.WORKER)}


def test_only_workers_write_results_events_and_dead_letters() -> None:
    for topic in (TOPICS.results, TOPICS.events, TOPICS.dead_letters):
        assert who_may(AclOperation.WRITE, topic) == {user(Role.WORKER)}


def test_readers_of_results_and_events() -> None:
    assert who_may(AclOperation.READ, TOPICS.results) == {user(Role.API), user(Role.FIGURES)}
    assert who_may(AclOperation.READ, TOPICS.events) == {
        user(Role.API),
        user(Role.NOTIFIER),
        user(Role.FIGURES),
    }
    assert who_may(AclOperation.READ, TOPICS.dead_letters) == set()  # the operator's (super user)


def test_prefixed_grants_never_reach_the_project_topics() -> None:
    """A PREFIXED topic grant (faust's changelogs) must not match commands, results or events."""
    prefixed = [
        b
        for b in bindings(grants(SETTINGS))
        if b.restype is ResourceType.TOPIC
        and b.resource_pattern_type is ResourcePatternType.PREFIXED
    ]
    assert prefixed, "figures needs its changelog topics"
    for binding in prefixed:
        for topic in (TOPICS.commands, TOPICS.results, TOPICS.events, TOPICS.dead_letters):
            assert not topic.startswith(binding.name), (binding.name, topic)


def test_transactional_ids_are_the_workers_and_figures_own() -> None:
    transactional = {
        (b.principal, b.name)
        for b in bindings(grants(SETTINGS))
        if b.restype is ResourceType.TRANSACTIONAL_ID
    }
    assert transactional == {(user(Role.WORKER), "p-worker."), (user(Role.FIGURES), "p.figures")}


def test_the_operator_needs_no_acl() -> None:
    """The super user of the broker (super.users): listing it would hide a missing super.users."""
    assert user(Role.OPERATOR) not in {b.principal for b in bindings(grants(SETTINGS))}
