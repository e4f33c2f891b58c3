"""`orderstatus dlq list|replay`: what is parked in the dead-letter topic, and sending it again.

The worker parks two kinds of message there (headers `dlq.reason`, `dlq.source.*`):
- `unauthenticated: ...`: a record without a valid signature (docs/security.md). Never replayed:
  the replay would sign it with the operator's key.
- `undecodable: ...` / `oversize: ...`: bytes that are no command. They cannot be replayed as they
  are; they are evidence for fixing the producer, which then sends its commands again.
- `error: ...`: a valid command the database refused (its outcome `error` is in the inbox). Once the
  cause is fixed it can be replayed.

A replay is a new command: the inbox answers a command id only once, so re-sending the same id
would change nothing. The new id is derived from the dead letter's position (uuid5), so replaying
the same dead letter twice sends the same command twice and the inbox applies it once. The copy
keeps the original's order, actor and payload, carries the original id in a `replay_of` header, and
is decided against the order as it is now (an `expected_version` that is out of date gets a 409)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message, Producer
from pydantic import ValidationError

from services.adapters import kafka_config
from services.adapters.command_signing import signing_keys, signing_refusal
from services.adapters.kafka_records import command_record, header, position, read_to_end
from services.adapters.settings import Settings
from services.core.messages import ChangeStatus, CreateOrder, decode_command
from services.core.topics import (
    HEADER_COMMAND_ID,
    HEADER_DLQ_OFFSET,
    HEADER_DLQ_PARTITION,
    HEADER_DLQ_REASON,
)

REPLAY_NAMESPACE = uuid.UUID("5b0d2a52-8f1e-4a8e-9a57-2d1f0c9e6f3a")
HEADER_REPLAY_OF = "replay_of"
HEADER_REPLAYED_FROM = "dlq.replayed_from"
UNAUTHENTICATED = "unauthenticated"


@dataclass(frozen=True, slots=True)
class ParkedMessage:
    """One message of the dead-letter topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    source: str
    """Where the worker read it: `partition:offset` of the commands topic."""
    command_id: str | None
    parked_at: datetime | None = None
    """The dead letter's record timestamp: a replay is issued as of then (see replay_of)."""

    @property
    def where(self) -> str:
        return f"{self.partition}:{self.offset}"


def parked(message: Message) -> ParkedMessage:
    at = position(message)
    return ParkedMessage(
        partition=at.partition,
        offset=at.offset,
        key=message.key(),
        value=message.value(),
        reason=_text(message, HEADER_DLQ_REASON),
        source=f"{_text(message, HEADER_DLQ_PARTITION)}:{_text(message, HEADER_DLQ_OFFSET)}",
        command_id=_text(message, HEADER_COMMAND_ID) or None,
        parked_at=_timestamp(message),
    )


def _timestamp(message: Message) -> datetime | None:
    kind, millis = message.timestamp()
    return datetime.fromtimestamp(millis / 1000, UTC) if kind != TIMESTAMP_NOT_AVAILABLE else None


def _text(message: Message, name: str) -> str:
    return (header(message, name) or b"").decode(errors="replace")


def read_parked(settings: Settings) -> list[ParkedMessage]:
    """Every message now in the dead-letter topic (read_committed), partition by partition."""
    topic = settings.topics.dead_letters
    return [parked(m) for m in read_to_end(settings, topic)]


def replay_of(message: ParkedMessage, now: datetime) -> CreateOrder | ChangeStatus | None:
    """The command to send again for `message`, under its derived id; None when the bytes are no
    command, or no signed one (`unauthenticated`: a replay would sign a forgery with the operator's
    key), which cannot be replayed."""
    if message.reason.startswith(UNAUTHENTICATED):
        return None
    try:
        original = decode_command(message.value)
    except (ValidationError, ValueError):
        return None
    replay_id = uuid.uuid5(REPLAY_NAMESPACE, f"{original.command_id}@{message.where}")
    # Issued as of the dead letter's parking, not of this run: a second run of the same replay
    # must be the same command to the inbox, whose key is (command_id, issued_at) (migration 0015).
    return original.model_copy(
        update={
            "command_id": replay_id,
            "rid": f"replay-{original.rid}"[:200],
            "issued_at": message.parked_at or now,
        }
    )


@dataclass(frozen=True, slots=True)
class Replayed:
    message: ParkedMessage
    command: CreateOrder | ChangeStatus | None
    """None: not replayable (not a command)."""


def replay(
    settings: Settings, messages: Sequence[ParkedMessage], *, dry_run: bool = False
) -> list[Replayed]:
    """Sends each replayable message to the commands topic as a new command (see the module doc)."""
    now = datetime.now(UTC)
    plan = [Replayed(m, replay_of(m, now)) for m in messages]
    if dry_run:
        return plan
    keys = signing_keys(settings)  # the operator's configured key signs the replays
    producer = Producer(kafka_config.replay_producer(settings))
    for item in plan:
        command = item.command
        if command is None:
            continue
        record = command_record(command, keys)
        producer.produce(
            settings.topics.commands,
            key=record.key,
            value=record.value,
            headers=[
                *record.headers,
                (HEADER_REPLAY_OF, (item.message.command_id or "").encode()),
                (HEADER_REPLAYED_FROM, item.message.where.encode()),
            ],
        )
    if producer.flush(30) != 0:
        raise RuntimeError("Kafka did not confirm every replayed command; run the replay again")
    return plan


def select(
    messages: Sequence[ParkedMessage], positions: Sequence[str], reason_prefix: str | None
) -> list[ParkedMessage]:
    """The messages at `positions` (`partition:offset` in the dead-letter topic), or all of them
    when none are given; narrowed to those whose reason starts with `reason_prefix`."""
    chosen = [m for m in messages if not positions or m.where in positions]
    missing = set(positions) - {m.where for m in chosen}
    if missing:
        raise ValueError(f"no dead letter at {', '.join(sorted(missing))}")
    return [m for m in chosen if reason_prefix is None or m.reason.startswith(reason_prefix)]


def run_dlq(
    settings: Settings,
    action: str,
    positions: Sequence[str] = (),
    reason_prefix: str | None = None,
    *,
    every: bool = False,
    dry_run: bool = False,
) -> int:
    messages = read_parked(settings)
    if action == "list":
        print(f"{len(messages)} dead letter(s) in {settings.topics.dead_letters}")
        for m in select(messages, positions, reason_prefix):
            print(
                f"{m.where:>10}  from {m.source:<10} command {m.command_id or '-':<36}  {m.reason}"
            )
        return 0
    if not positions and not every:
        print("name the dead letters to replay (--at PARTITION:OFFSET ...) or pass --all")
        return 2
    refusal = None if dry_run else signing_refusal(settings)
    if refusal is not None:
        print(f"orderstatus dlq replay: refusing: {refusal}")
        return 2
    done = replay(settings, select(messages, positions, reason_prefix), dry_run=dry_run)
    verb = "would replay" if dry_run else "replayed"
    for item in done:
        if item.command is None:
            print(f"{item.message.where:>10}  skipped: not replayable ({item.message.reason})")
        else:
            print(
                f"{item.message.where:>10}  {verb} {item.message.command_id} "
                f"as {item.command.command_id}"
            )
    return 0
