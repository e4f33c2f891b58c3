"""Each API process reads its own results partition (issue 9): the partitions `auto` hands out,
the header every command carries, and a bus that sees only its partition's results. Real Kafka
and PostgreSQL; the worker's side (producing to the named partition) is tested with the worker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from services.adapters.command_signing import Purpose
from services.adapters.kafka_records import header
from services.adapters.settings import Settings
from services.command_api.app import command_bus
from services.command_api.kafka import CommandBus, OutcomeTimeout
from services.command_api.reply_partition import reply_partition
from services.core.messages import Actor, ChangeStatus, CommandResult, Outcome, Role, encode
from services.core.statuses import OrderStatus
from services.core.topics import HEADER_COMMAND_ID, HEADER_REPLY_PARTITION
from tests.stack import isolated_settings
from tests.topics import produce, read_topic, signed


@pytest.fixture
def settings(base_settings: Settings) -> Iterator[Settings]:
    with isolated_settings(
        base_settings, api_results_partition="auto", api_reply_timeout_s=3.0
    ) as settings:
        yield settings


def test_auto_gives_each_process_a_partition_of_its_own(settings: Settings) -> None:
    async def claims() -> list[int | None]:
        first = await reply_partition(settings, 3)
        second = await reply_partition(settings, 3)
        taken = [first.partition, second.partition]
        await first.release()
        again = await reply_partition(settings, 3)  # the first process is gone: its partition
        taken.append(again.partition)
        for held in (second, again):
            await held.release()
        return taken

    assert asyncio.run(claims()) == [0, 1, 0]


def test_a_fixed_partition_and_all() -> None:
    fixed = asyncio.run(reply_partition(Settings(api_results_partition="2"), 6))
    every = asyncio.run(reply_partition(Settings(api_results_partition="all"), 6))
    assert (fixed.partition, every.partition) == (2, None)
    with pytest.raises(ValueError):
        asyncio.run(reply_partition(Settings(api_results_partition="6"), 6))


def change() -> ChangeStatus:
    return ChangeStatus(
        command_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        status=OrderStatus.ACCEPTED,
        actor=Actor(sub="pos", role=Role.SERVICE_ROLE),
        issued_at=datetime.now(UTC),
    )


def result_record(command: ChangeStatus) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    result = CommandResult(
        command_id=command.command_id,
        order_id=command.order_id,
        command_type="change_status",
        outcome=Outcome.NOT_FOUND,
        processed_at=datetime.now(UTC),
    )
    headers = [(HEADER_COMMAND_ID, str(command.command_id).encode())]
    key, value, signed_headers = signed(
        (str(command.order_id).encode(), encode(result), headers), purpose=Purpose.RESULT
    )
    assert key is not None and value is not None
    return key, value, signed_headers


async def answered(
    bus: CommandBus, settings: Settings, command: ChangeStatus, to_partition: int
) -> CommandResult:
    """Publishes `command`, then plays the worker: its result goes to `to_partition`."""
    with bus.listening(command.command_id) as outcome:
        await bus.publish(command)
        await asyncio.to_thread(
            produce, settings, settings.topics.results, [result_record(command)], to_partition
        )
        return await outcome.wait()


def test_the_bus_names_its_partition_and_reads_only_that_one(settings: Settings) -> None:
    mine, other = change(), change()

    async def scenario() -> tuple[CommandResult, BaseException | None]:
        bus = command_bus(settings)
        await bus.start(reply_partition=2)
        try:
            result = await answered(bus, settings, mine, to_partition=2)
            try:
                await answered(bus, settings, other, to_partition=3)
                missed = None
            except OutcomeTimeout as exc:
                missed = exc
        finally:
            await bus.stop()
        return result, missed

    result, missed = asyncio.run(scenario())
    assert result.command_id == mine.command_id
    assert isinstance(missed, OutcomeTimeout), "read a result of another process's partition"
    named = {
        (header(m, HEADER_COMMAND_ID) or b"").decode(): header(m, HEADER_REPLY_PARTITION)
        for m in read_topic(settings, settings.topics.commands)
    }
    assert named == {str(mine.command_id): b"2", str(other.command_id): b"2"}
