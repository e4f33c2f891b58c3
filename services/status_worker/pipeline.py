"""The worker's loop, a chain of small steps: poll a batch (source) -> check signatures and decode
-> apply in PostgreSQL -> settle and build the outputs (pure) -> guard -> publish outcomes and
commit offsets in one Kafka transaction -> report. Pipelined: batch N's Kafka transaction runs on the publisher's thread while
batch N+1 is applied in PostgreSQL; N+1's transaction starts only once N's has committed, so
per-partition order holds and no offset is committed before an earlier batch's. Any failure
rewinds the batches not yet committed; the inbox makes the redo change nothing twice. The steps are
built and wired in main.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import Message

from services.status_worker import metrics
from services.status_worker.batch import Settled
from services.status_worker.decode import verify_and_decode
from services.status_worker.guards import DeadLetterRatioExceeded
from services.status_worker.outputs import Destinations, outputs_for, settle
from services.status_worker.report import report_batch
from services.status_worker.source import CommandSource
from services.status_worker.steps import Apply, ApplyStep, GuardStep, Publish


@dataclass(frozen=True, slots=True)
class InFlight:
    """A batch whose Kafka transaction is under way on the publisher's thread."""

    messages: Sequence[Message]
    settled: list[Settled]
    polled_at: datetime
    published: Future[bool]


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
        *,
        pipelined: bool = True,
    ) -> None:
        self.source = source
        self.apply = apply
        self.database = database
        """The apply step's database side: its back-off and whether PostgreSQL answers again."""
        self.guard = guard
        self.publish = publish
        self.destinations = destinations
        self.stop = stop
        self.pipelined = pipelined
        """Off: each batch's transaction is settled before the next poll (WORKER_PIPELINED)."""
        self.in_flight: InFlight | None = None
        self._publisher = ThreadPoolExecutor(1, thread_name_prefix="kafka-transaction")
        source.before_revoke = self.settle_before_revoke

    def run(self) -> None:
        self.guard.ensure_not_tripped(self.stop)
        self.source.subscribe()
        try:
            while not self.stop.is_set():
                messages = self.source.poll(wait=self.in_flight is None)
                if messages:
                    self.process(messages)
                else:
                    self.finish()
            self.finish()
        finally:
            self._publisher.shutdown(wait=True)

    def process(self, messages: Sequence[Message]) -> None:
        now = datetime.now(UTC)
        decoded = [verify_and_decode(m, now, self.destinations.keys) for m in messages]
        started = time.perf_counter()
        processed = self.apply(decoded, now)
        if processed is None:
            self.source.rewind([*self.settle_in_flight(), *messages])
            self.source.paused(self.database.backoff, self.database.database_ready, self.stop)
            return
        metrics.DB_SECONDS.observe(time.perf_counter() - started)
        settled = settle(messages, decoded, processed)
        try:
            self.guard.check(settled)
        except DeadLetterRatioExceeded:
            # Divert nothing more: leave this batch uncommitted and stop for a person to look.
            self.source.rewind([*self.settle_in_flight(), *messages])
            raise
        records = outputs_for(settled, self.destinations)
        failed = self.settle_in_flight()
        if failed:  # redo the earlier batch, then this one, in order
            self.source.rewind([*failed, *messages])
            return
        submitted = self._publisher.submit(self.publish, records, messages)
        self.in_flight = InFlight(messages, settled, now, submitted)
        if not self.pipelined:
            self.finish()

    def finish(self) -> None:
        """Settles the batch in flight; rewinds it when its transaction failed."""
        failed = self.settle_in_flight()
        if failed:
            self.source.rewind(failed)

    def settle_in_flight(self) -> Sequence[Message]:
        """Waits for the batch in flight and reports it; when its transaction failed, its messages,
        for the caller to rewind (with any later batch, so a partition goes back to the earliest)."""
        batch, self.in_flight = self.in_flight, None
        if batch is None:
            return []
        if not batch.published.result():
            metrics.TRANSACTION_ABORTS.inc()
            return batch.messages
        report_batch(batch.messages, batch.settled, batch.polled_at, datetime.now(UTC))
        return []

    def settle_before_revoke(self) -> None:
        """A partition changes hands only between transactions. A failed one needs no rewind: the
        next owner of its partitions starts at their committed offsets."""
        self.settle_in_flight()
