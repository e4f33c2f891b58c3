"""A command that names its reply partition (HEADER_REPLY_PARTITION) gets its result on exactly that
partition of the results topic, so an API process reads only its own replies; one that names none,
or one the topic does not have, is answered as before (partitioned by order id)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.adapters.kafka_records import header
from services.adapters.settings import Settings
from services.core.messages import decode_result
from services.core.topics import HEADER_COMMAND_ID, HEADER_REPLY_PARTITION
from tests.integration.test_dead_letters import wait_for_outcome
from tests.stack import ServiceProcess, isolated_settings
from tests.topics import command_record, create_command, produce, read_topic, signed


@pytest.fixture
def fresh(base_settings: Settings) -> Iterator[Settings]:
    with isolated_settings(base_settings) as settings:
        yield settings


def test_results_go_to_the_reply_partition_their_command_names(
    fresh: Settings, log_dir: Path
) -> None:
    named = {p: create_command(uuid.uuid4()) for p in (0, 3, 5)}
    unnamed, beyond = create_command(uuid.uuid4()), create_command(uuid.uuid4())
    undecodable_id = uuid.uuid4()
    records = []
    for partition, command in named.items():
        key, value, headers = command_record(command)
        records.append((key, value, [*headers, (HEADER_REPLY_PARTITION, str(partition).encode())]))
    records.append(command_record(unnamed))
    key, value, headers = command_record(beyond)
    records.append((key, value, [*headers, (HEADER_REPLY_PARTITION, b"999")]))
    records.append(
        signed(
            (
                str(uuid.uuid4()).encode(),
                b"not a command",
                [(HEADER_COMMAND_ID, str(undecodable_id).encode()), (HEADER_REPLY_PARTITION, b"4")],
            )
        )
    )
    produce(fresh, fresh.topics.commands, records)
    worker = ServiceProcess("worker", fresh, log_dir, worker_metrics_port=0).start()
    try:
        for command in [*named.values(), unnamed, beyond]:
            assert wait_for_outcome(fresh, command.command_id) == "applied"
        assert wait_for_outcome(fresh, undecodable_id) == "invalid"
    finally:
        worker.terminate()

    where = {
        decode_result(m.value() or b"").command_id: m.partition()
        for m in read_topic(fresh, fresh.topics.results)
    }
    assert {where[c.command_id] for c in named.values()} == set(named)
    assert all(where[c.command_id] == p for p, c in named.items())
    assert where[undecodable_id] == 4
    # Unnamed and out-of-range: partitioned by order id, as the events are.
    events = {
        header(m, HEADER_COMMAND_ID): m.partition() for m in read_topic(fresh, fresh.topics.events)
    }
    for command in (unnamed, beyond):
        assert where[command.command_id] == events[str(command.command_id).encode()]
