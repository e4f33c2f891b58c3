"""The decode step: a consumed message becomes a command to apply, or a dead letter with the reason
(and an `invalid` outcome for its caller when the message says who that is). Pure: never raises.

A message without a valid signature (services/adapters/command_signing.py) is dead-lettered as
`unauthenticated: ...` before its value is read, with no outcome at all: not applied, no result, no
inbox row, so a forger can neither act nor claim a command id a real command may later carry."""

from __future__ import annotations

import json
from datetime import datetime
from uuid import UUID

from confluent_kafka import Message
from pydantic import ValidationError

from services.adapters.command_signing import Purpose, SigningKeys
from services.adapters.kafka_records import header, position, signature_failure
from services.core.messages import Actor, CommandResult, Outcome, decode_command
from services.core.topics import HEADER_COMMAND_ID, HEADER_REPLY_PARTITION, HEADER_REQUEST_ID
from services.status_worker.batch import DeadLetter, Decoded, Incoming

MAX_COMMAND_BYTES = 64 * 1024


def verify_and_decode(message: Message, now: datetime, keys: SigningKeys) -> Decoded:
    """The decode step of the pipeline: the signature first, then `decode`."""
    unauthenticated = signature_failure(message, keys, Purpose.COMMAND)
    if unauthenticated is not None:
        return DeadLetter(message, f"unauthenticated: {unauthenticated}", None)
    return decode(message, now)


def decode(message: Message, now: datetime) -> Decoded:
    """A message whose signature was checked (verify_and_decode) as a command or a dead letter."""
    value = message.value()
    if value is not None and len(value) > MAX_COMMAND_BYTES:
        return _dead_letter(message, f"oversize: {len(value)} bytes", now)
    try:
        command = decode_command(value)
    except ValidationError as exc:
        return _dead_letter(message, f"undecodable: {_validation_summary(exc)}", now)
    except ValueError as exc:
        return _dead_letter(message, f"undecodable: {first_line(exc)}", now)
    where = position(message)
    return Incoming(command, where.partition, where.offset, reply_partition(message))


def reply_partition(message: Message) -> int | None:
    """The results partition named by the command's reply-partition header: a decimal number."""
    raw = header(message, HEADER_REPLY_PARTITION)
    if raw is None or not raw.isdigit() or len(raw) > 6:
        return None
    return int(raw)


def _dead_letter(message: Message, reason: str, now: datetime) -> DeadLetter:
    command_id = _uuid(header(message, HEADER_COMMAND_ID))
    order_id = _uuid(message.key())
    result = None
    if command_id is not None and order_id is not None:
        result = CommandResult(
            command_id=command_id,
            order_id=order_id,
            command_type="unknown",
            outcome=Outcome.INVALID,
            detail=reason,
            rid=_clean_text(header(message, HEADER_REQUEST_ID))[:200],
            processed_at=now,
        )
    actor = _actor_of(message.value()) if result is not None else None
    return DeadLetter(message, reason, result, actor)


def _actor_of(value: bytes | None) -> Actor | None:
    """The `actor` of a value that is JSON but not a valid command, when it is a valid actor."""
    if value is None or len(value) > MAX_COMMAND_BYTES:
        return None
    try:
        document = json.loads(value)
        return Actor.model_validate(document["actor"]) if isinstance(document, dict) else None
    except (ValueError, KeyError, TypeError, RecursionError, ValidationError):
        return None


def _clean_text(raw: bytes | None) -> str:
    """Header bytes as text PostgreSQL can store (no NUL), whatever they were."""
    return (raw or b"").decode(errors="replace").replace("\x00", "\ufffd")


def _uuid(raw: bytes | str | None) -> UUID | None:
    if raw is None:
        return None
    try:
        return UUID(raw.decode() if isinstance(raw, bytes) else raw)
    except (ValueError, UnicodeDecodeError):
        return None


def _validation_summary(exc: ValidationError) -> str:
    """Which fields were wrong and why, e.g. `create_order.schema_version: Input should be 1`."""
    parts = [
        f"{'.'.join(str(part) for part in error['loc']) or 'message'}: {error['msg']}"
        for error in exc.errors(include_url=False)[:3]
    ]
    return "; ".join(parts)[:500]


def first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
