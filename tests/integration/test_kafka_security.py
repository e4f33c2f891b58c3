"""Kafka as a security boundary (issue 11), against a broker of the test's own with SASL/SCRAM and
ACLs (tests/local_broker.py, deploy/local/kafka.sh KAFKA_SECURITY=sasl): a client without
credentials, or with a principal the ACLs do not allow, is refused by the broker; a command from
the API's principal without a valid signature is dead-lettered by a worker running as its own
principal, and changes nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, Producer

from services.adapters.kafka_principals import Role, as_principal, local_password, principal_name
from services.adapters.kafka_records import command_record
from services.adapters.settings import Settings
from tests.e2e.test_signed_records import FORGER, dead_letter_reasons, outcome_of, unsigned
from tests.local_broker import LocalBroker
from tests.stack import ServiceProcess, isolated_settings
from tests.topics import TEST_KEYS, change_command, create_command, high_watermarks, produce

SASL = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512"}


def config(broker: LocalBroker, role: Role | None, password: str | None = None) -> dict[str, Any]:
    """What a client hand-configured as `role` sends (None: no credentials at all, like kcat -b)."""
    base: dict[str, Any] = {"bootstrap.servers": broker.bootstrap, "log_level": 0}
    if role is None:
        return base
    return {
        **base,
        **SASL,
        "sasl.username": principal_name(role),
        "sasl.password": password or local_password(role),
    }


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    with LocalBroker.started(tmp_path_factory.mktemp("sasl-broker")) as broker:
        yield broker


@pytest.fixture(scope="module")
def secured(broker: LocalBroker, base_settings: Settings) -> Iterator[Settings]:
    """A database of its own and the project's topics on the broker, with their ACLs, created as
    the operator (tests/stack.py does the same on the shared broker when it authenticates)."""
    with isolated_settings(broker.settings(base_settings)) as settings:
        yield settings


def produce_one(client: dict[str, Any], topic: str, *, timeout_s: float = 8) -> KafkaError | None:
    """One record; the broker's answer: None when written, else the delivery error."""
    errors: list[KafkaError | None] = []
    producer = Producer({**client, "message.timeout.ms": int(timeout_s * 1000), "acks": "all"})
    producer.produce(topic, b"x", key=b"k", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(timeout_s + 5)
    assert len(errors) == 1, "no delivery report"
    return errors[0]


def records_in(settings: Settings, topic: str) -> int:
    return high_watermarks(settings, topic)  # as the operator: every record, refused ones none


def test_a_command_without_credentials_or_with_a_wrong_password_is_refused(
    broker: LocalBroker, secured: Settings
) -> None:
    commands = secured.topics.commands
    anonymous = produce_one(config(broker, None), commands, timeout_s=5)
    wrong = produce_one(
        config(broker, Role.API, password="not-the-password"), commands, timeout_s=5
    )
    assert anonymous is not None and wrong is not None
    assert records_in(secured, commands) == 0
    # The same record from the API's principal is written: the refusals were the credentials.
    assert produce_one(config(broker, Role.API), commands) is None
    assert records_in(secured, commands) == 1


@pytest.mark.parametrize("role", [Role.NOTIFIER, Role.FIGURES, Role.WORKER])
def test_a_principal_that_may_not_write_commands_is_refused(
    broker: LocalBroker, secured: Settings, role: Role
) -> None:
    before = records_in(secured, secured.topics.commands)
    refused = produce_one(config(broker, role), secured.topics.commands)
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert records_in(secured, secured.topics.commands) == before


@pytest.mark.parametrize("role", [Role.API, Role.NOTIFIER, Role.FIGURES])
def test_only_workers_write_results_so_no_other_principal_can_forge_one(
    broker: LocalBroker, secured: Settings, role: Role
) -> None:
    refused = produce_one(config(broker, role), secured.topics.results)
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert records_in(secured, secured.topics.results) == 0


def first_answer(consumer: Consumer, deadline_s: float = 20) -> Any:
    """The first message or error the consumer gets (None: nothing within the deadline)."""
    stop_at = time.monotonic() + deadline_s
    while time.monotonic() < stop_at:
        message = consumer.poll(0.5)
        if message is not None:
            return message.error() or message.value()
    return None


def test_the_notifier_cannot_read_commands_but_reads_events(
    broker: LocalBroker, secured: Settings
) -> None:
    group = {"group.id": secured.notifier_group_id, "auto.offset.reset": "earliest"}
    spy = Consumer({**config(broker, Role.NOTIFIER), **group})
    try:
        spy.subscribe([secured.topics.commands])
        refused = first_answer(spy)
        assert isinstance(refused, KafkaError), refused
        assert refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    finally:
        spy.close()
    # Events are its to read (written here by the workers' principal).
    assert produce_one(config(broker, Role.WORKER), secured.topics.events) is None
    reader = Consumer({**config(broker, Role.NOTIFIER), **group})
    try:
        reader.subscribe([secured.topics.events])
        assert first_answer(reader, deadline_s=30) == b"x"
    finally:
        reader.close()


def order_status(settings: Settings, order_id: uuid.UUID) -> tuple[str, int] | None:
    with psycopg.connect(settings.admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT status::text, version FROM orders WHERE id = %s", (order_id,)
        ).fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


def test_valid_api_credentials_without_a_valid_signature_are_dead_lettered_unauthenticated(
    secured: Settings, log_dir: Path
) -> None:
    """The broker lets the API's principal write commands; the worker (its own principal, under
    the ACLs: its group, transactional id, outputs) still checks each command's signature."""
    worker = ServiceProcess("worker", secured, log_dir, worker_metrics_port=0).start()
    api = as_principal(secured, Role.API)
    try:
        created = create_command(uuid.uuid4())
        produce(api, secured.topics.commands, [command_record(created, TEST_KEYS)])
        assert outcome_of(secured, created.command_id) == "applied"
        assert order_status(secured, created.order_id) == ("pending", 1)

        none, forged = (change_command(created.order_id, "cancelled") for _ in range(2))
        records = [unsigned(command_record(none, TEST_KEYS)), command_record(forged, FORGER)]
        produce(api, secured.topics.commands, records)
        reasons = dead_letter_reasons(secured, {str(none.command_id), str(forged.command_id)})
        assert reasons == {
            str(none.command_id): "unauthenticated: no signature",
            str(forged.command_id): "unauthenticated: bad signature",
        }
        assert outcome_of(secured, none.command_id, timeout=0) is None
        assert outcome_of(secured, forged.command_id, timeout=0) is None
        assert order_status(secured, created.order_id) == ("pending", 1)
    finally:
        worker.terminate()
