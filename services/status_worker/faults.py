"""Test-only faults (WORKER_FAULT at batch WORKER_FAULT_BATCH), to prove that each loses and repeats
nothing. Wrappers around the steps, wired by main.py only when WORKER_FAULT is set: production
runs the plain steps."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import datetime

from confluent_kafka import Message

from services.adapters.settings import Settings
from services.status_worker.batch import Decoded, Processed
from services.status_worker.kafka import OutRecord, TransactionalPublisher
from services.status_worker.steps import Apply, Publish

log = logging.getLogger(__name__)

CRASH_EXIT_CODE = 70
FAULTS = ("crash_after_db_commit", "crash_before_kafka_commit", "silent_abort", "false_abort")


class FaultPlan:
    """Which fault, at which batch (counted as batches get through the apply step)."""

    def __init__(self, settings: Settings) -> None:
        if settings.worker_fault not in FAULTS:
            raise ValueError(f"WORKER_FAULT must be one of {', '.join(FAULTS)}")
        self.point = settings.worker_fault
        self.batch = settings.worker_fault_batch
        self.batches = 0

    def due(self, point: str) -> bool:
        due = self.point == point and self.batches == self.batch
        if due:
            log.warning("injected fault", extra={"evt": "fault_injected", "point": point})
        return due


def crash() -> None:
    logging.shutdown()
    os._exit(CRASH_EXIT_CODE)


class FaultyApply:
    """Counts batches; `crash_after_db_commit` kills the process once the batch is in PostgreSQL."""

    def __init__(self, inner: Apply, plan: FaultPlan) -> None:
        self.inner = inner
        self.plan = plan

    def __call__(self, decoded: Sequence[Decoded], now: datetime) -> list[Processed] | None:
        processed = self.inner(decoded, now)
        if processed is not None:
            self.plan.batches += 1
            if self.plan.due("crash_after_db_commit"):
                crash()
        return processed


class FaultyPublish:
    """`false_abort`: the client reports a failure though the commit went through."""

    def __init__(self, inner: Publish, plan: FaultPlan) -> None:
        self.inner = inner
        self.plan = plan

    def __call__(self, records: Sequence[OutRecord], messages: Sequence[Message]) -> bool:
        published = self.inner(records, messages)
        return published and not self.plan.due("false_abort")


class FaultyPublisher(TransactionalPublisher):
    """`crash_before_kafka_commit` kills the process with the transaction's records in the log;
    `silent_abort` does what a coordinator restart can: the transaction is gone, the commit
    "succeeds"."""

    plan: FaultPlan

    def _before_commit(self) -> None:
        if self.plan.due("crash_before_kafka_commit"):
            self.producer.flush(5)  # make the open transaction's records hit the log
            crash()
        if self.plan.due("silent_abort"):
            self.producer.abort_transaction(10)
            self.producer.begin_transaction()
