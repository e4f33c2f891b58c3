"""The worker's loop, a chain of small steps: poll a batch (source) -> decode -> apply in PostgreSQL
-> settle and build the outputs (pure) -> guard -> publish outcomes and commit offsets in one Kafka
transaction -> report. Any failure rewinds the batch; the inbox makes the redo change nothing
twice. The steps are built and wired in main.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from confluent_kafka import Message

from services.status_worker import metrics
from services.status_worker.decode import decode
from services.status_worker.guards import DeadLetterRatioExceeded
from services.status_worker.outputs import Destinations, outputs_for, settle
from services.status_worker.report import report_batch
from services.status_worker.source import CommandSource
from services.status_worker.steps import Apply, ApplyStep, GuardStep, Publish


class StatusWorker:
    def __init__(
        self,
        source: CommandSource,
        apply: Apply,
        database: ApplyStep,
        guard: GuardStep,
        publish: Publish,
        destinations: Destinations,
        stop: threading.Event,
    ) -> None:
        self.source = source
        self.apply = apply
        self.database = database
        """The apply step's database side: its back-off and whether PostgreSQL answers again."""
        self.guard = guard
        self.publish = publish
        self.destinations = destinations
        self.stop = stop

    def run(self) -> None:
        self.guard.ensure_not_tripped(self.stop)
        self.source.subscribe()
        while not self.stop.is_set():
            messages = self.source.poll()
            if messages:
                self.process(messages)

    def process(self, messages: Sequence[Message]) -> None:
        now = datetime.now(UTC)
        decoded = [decode(m, now) for m in messages]
        started = time.perf_counter()
        processed = self.apply(decoded, now)
        if processed is None:
            self.source.rewind(messages)
            self.source.paused(self.database.backoff, self.database.database_ready, self.stop)
            return
        applied_at = time.perf_counter()
        metrics.DB_SECONDS.observe(applied_at - started)
        settled = settle(messages, decoded, processed)
        try:
            self.guard.check(settled)
        except DeadLetterRatioExceeded:
            # Divert nothing more: leave this batch uncommitted and stop for a person to look.
            self.source.rewind(messages)
            raise
        if not self.publish(outputs_for(settled, self.destinations), messages):
            metrics.TRANSACTION_ABORTS.inc()
            self.source.rewind(messages)
            return
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - applied_at)
        report_batch(messages, settled, now, datetime.now(UTC))
