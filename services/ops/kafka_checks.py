"""What doctor and watch ask Kafka: reachability, the worker group's lag and members, how many
messages wait in the dead-letter topic, and how the broker authenticates and authorizes."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType

from services.adapters import kafka_config
from services.adapters.kafka_records import NotReadToEnd, messages_to_end
from services.adapters.settings import Settings
from services.observability.kafka_lag import (
    PartitionLag,
    command_partitions,
    group_lag,
    offsets_reader,
)
from services.ops.verdicts import BrokerSecurity


def admin(settings: Settings) -> AdminClient:
    return AdminClient(kafka_config.doctor_admin(settings))


def broker_count(settings: Settings, timeout: float = 5.0) -> int:
    """Raises KafkaException when no broker answers within `timeout`."""
    return len(admin(settings).list_topics(timeout=timeout).brokers)


def broker_security(settings: Settings, timeout: float = 5.0) -> BrokerSecurity:
    """The first broker's listener protocols and authorizer (DESCRIBE_CONFIGS on the cluster: the
    operator may; another principal gets an authorization error, which doctor reports)."""
    client = admin(settings)
    broker_id = min(client.list_topics(timeout=timeout).brokers)
    resource = ConfigResource(ResourceType.BROKER, str(broker_id))
    configs = client.describe_configs([resource], request_timeout=timeout)[resource].result(
        timeout=timeout + 1
    )

    def value(name: str) -> str:
        entry = configs.get(name)
        return (entry.value or "") if entry is not None else ""

    pairs = (pair.split(":", 1) for pair in value("listener.security.protocol.map").split(","))
    return BrokerSecurity(
        listener_protocols={name: protocol for name, protocol in pairs},
        authorizer=value("authorizer.class.name"),
    )


def worker_lag(settings: Settings) -> list[PartitionLag]:
    reader = offsets_reader(settings)
    try:
        topic = settings.topics.commands
        return group_lag(reader, topic, command_partitions(reader, topic))
    finally:
        reader.close()


def group_members(settings: Settings, timeout: float = 5.0) -> tuple[str, int]:
    """The worker group's state and number of members."""
    client = admin(settings)  # must outlive the future: a collected client never resolves it
    futures = client.describe_consumer_groups([settings.worker_group_id], request_timeout=timeout)
    description = futures[settings.worker_group_id].result(timeout=timeout + 1)
    state = getattr(description.state, "name", str(description.state))
    return state.lower(), len(description.members)


def count_messages(settings: Settings, topic: str, deadline_s: float = 10.0) -> tuple[int, bool]:
    """Messages in `topic` as a read_committed reader sees them (transaction markers take offsets
    too, so high - low overcounts). Returns (count, exact): past the deadline the count so far plus
    the offsets not yet read, an upper bound."""
    counted = 0
    try:
        for _ in messages_to_end(
            settings,
            topic,
            deadline_s=deadline_s,
            client_id="orderstatus-doctor",
        ):
            counted += 1
    except NotReadToEnd as late:
        return counted + late.unread, False
    return counted, True
