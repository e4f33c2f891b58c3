"""What a published batch tells operators: one log line per command (evt, rid, duration_ms) and per
dead letter, the outcome counters and end-to-end latency, and the Sentry traces."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from confluent_kafka import Message

from services.core.messages import Outcome
from services.core.outcomes import OUTCOME_NAMES
from services.status_worker import metrics
from services.status_worker.batch import DeadLetter, Finished, Settled

log = logging.getLogger(__name__)


def report_batch(
    messages: Sequence[Message], settled: Sequence[Settled], started: datetime, now: datetime
) -> None:
    finished = [item for item in settled if isinstance(item, Finished)]
    for item in settled:
        letter = item if isinstance(item, DeadLetter) else item.dead_letter
        if letter is not None:
            report_dead_letter(letter)
    for done in finished:
        report_command(done, now)
    metrics.BATCH_SIZE.observe(len(messages))
    metrics.trace_batch(messages, finished, started)


def report_dead_letter(letter: DeadLetter) -> None:
    metrics.DEAD_LETTERS.labels(letter.reason.split(":", 1)[0]).inc()
    log.warning(
        "command dead-lettered",
        extra={
            "evt": "command_dead_lettered",
            "reason": letter.reason,
            "partition": letter.message.partition(),
            "offset": letter.message.offset(),
        },
    )


def report_command(done: Finished, now: datetime) -> None:
    if done.duplicate:
        metrics.DUPLICATES.inc()
        return
    item, result = done.incoming, done.processed.result
    command = item.command
    e2e = (now - command.issued_at).total_seconds()
    names = OUTCOME_NAMES[result.outcome]
    metrics.COMMANDS.labels(names.metric).inc()
    metrics.COMMAND_E2E_SECONDS.observe(max(e2e, 0.0))
    log.log(
        logging.ERROR if result.outcome is Outcome.ERROR else logging.INFO,
        "command processed",
        extra={
            "evt": names.evt,
            "rid": command.rid,
            "duration_ms": round(e2e * 1000, 2),
            "command_id": str(command.command_id),
            "order_id": str(command.order_id),
            "restaurant_id": str(result.order.restaurant_id) if result.order else None,
            "status": result.order.status.value if result.order else None,
            "outcome": result.outcome.value,
            "conflict": result.conflict.value if result.conflict else None,
            "partition": item.partition,
            "offset": item.offset,
        },
    )
