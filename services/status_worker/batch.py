"""What flows between the worker's steps (source -> decode -> apply -> outputs -> publish): plain
values, so each step can be built and tested on its own and metrics need no database module."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import Message

from services.core.messages import Actor, ChangeStatus, CommandResult, CreateOrder, OrderEvent


@dataclass(frozen=True, slots=True)
class Incoming:
    """A decoded command and where in the commands topic it came from."""

    command: CreateOrder | ChangeStatus
    partition: int
    offset: int
    reply_partition: int | None = None
    """The results partition its issuing API process reads (HEADER_REPLY_PARTITION), if named."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message set aside on the dead-letter topic, with why."""

    message: Message
    reason: str
    result: CommandResult | None
    """An `invalid` outcome for the caller, when the message names its command id and order."""
    actor: Actor | None = None
    """Who issued it, when the undecodable value still says so: the inbox row is theirs to read."""


Decoded = Incoming | DeadLetter


@dataclass(frozen=True, slots=True)
class Processed:
    result: CommandResult
    event: OrderEvent | None
    source: tuple[int, int]
    """Partition and offset of the message that first produced this outcome. When it differs from
    the message at hand, this message is a second copy of an already applied command."""
    failure: str | None = None
    """Why the command could not be applied (outcome `error`): it is also dead-lettered."""


@dataclass(frozen=True, slots=True)
class Finished:
    """A decoded command with its outcome, as the batch will publish it."""

    incoming: Incoming
    processed: Processed
    duplicate: bool
    """A second copy of an already answered command: answered again, its event not repeated."""
    dead_letter: DeadLetter | None = None
    """Refused by the database (outcome `error`): kept aside to be replayed once the cause is
    fixed. Set on every attempt of its batch, so a redone batch dead-letters it again."""


Settled = Finished | DeadLetter
"""One message of a batch once its outcome is known."""


def diverted(item: Settled) -> bool:
    """Whether the message went to the dead-letter topic (what the guard counts)."""
    return isinstance(item, DeadLetter) or item.dead_letter is not None
