"""Kafka topic names, derived from one prefix so tests and tenants can run side by side."""

from __future__ import annotations

from dataclasses import dataclass

HEADER_COMMAND_ID = "command_id"
HEADER_REQUEST_ID = "rid"
HEADER_SCHEMA = "schema"
HEADER_DLQ_REASON = "dlq.reason"
HEADER_DLQ_TOPIC = "dlq.source.topic"
HEADER_DLQ_PARTITION = "dlq.source.partition"
HEADER_DLQ_OFFSET = "dlq.source.offset"
HEADER_REPLY_PARTITION = "reply_partition"
"""On a command: the partition of the results topic its issuing API process reads. The worker
produces the command's result there, so each API process reads only its own replies."""


@dataclass(frozen=True)
class Topics:
    """commands: keyed by order id, applied serially per partition.
    results: one CommandResult per command (request-reply and metrics).
    events: one CloudEvent per applied change (services/core/events.py, downstream consumers).
    dead_letters: commands the worker could not decode or apply, with the reason in headers."""

    commands: str
    results: str
    events: str
    dead_letters: str

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        return cls(
            commands=f"{prefix}.commands",
            results=f"{prefix}.results",
            events=f"{prefix}.events",
            dead_letters=f"{prefix}.commands.dlq",
        )
