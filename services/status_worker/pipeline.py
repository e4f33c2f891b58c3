"""The worker's loop, a chain of small steps: poll a batch (source) -> check signatures and decode
-> apply in PostgreSQL -> settle and build the outputs (pure) -> guard -> publish outcomes and
commit offsets in one Kafka transaction -> report. Pipelined: one poll takes up to
PIPELINE_DEPTH batches; batch N's Kafka transaction runs on the publisher's thread while batch N+1
is applied in PostgreSQL, and N+1's transaction starts only once N's has committed, so
per-partition order holds and no offset is committed before an earlier batch's. The last
transaction of a poll is settled before the next poll: rebalance callbacks run inside poll, so
partitions change hands only while no transaction is open (a revoke waiting for one would stall
the rebalance its own offsets commit waits for). Any failure rewinds every message of the poll
not yet committed; the inbox makes the redo change nothing twice. The steps are built and wired
in main.py."""

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

PIPELINE_DEPTH = 4
"""Batches taken by one poll when pipelined: all but the last overlap a Kafka transaction."""


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
        depth = PIPELINE_DEPTH if self.pipelined else 1
        try:
            while not self.stop.is_set():
                messages = self.source.poll(limit=self.source.batch_max * depth)
                self.process_poll(messages)
                self.finish()  # nothing in flight at the next poll, where rebalances happen
            self.finish()
        finally:
            self._publisher.shutdown(wait=True)

    def process_poll(self, messages: Sequence[Message]) -> None:
        """The poll's messages in batches of the source's batch_max, in order; after a rewind the
        rest is not processed (the rewind covered it)."""
        size = self.source.batch_max
        for first in range(0, len(messages), size):
            if not self.process(messages[first : first + size], later=messages[first + size :]):
                return

    def process(self, messages: Sequence[Message], later: Sequence[Message] = ()) -> bool:
        """Applies one batch and hands its transaction to the publisher's thread. False when the
        batch was rewound, with the batch in flight and the `later` messages of the same poll."""
        now = datetime.now(UTC)
        decoded = [verify_and_decode(m, now, self.destinations.keys) for m in messages]
        started = time.perf_counter()
        processed = self.apply(decoded, now)
        if processed is None:
            self.source.rewind([*self.settle_in_flight(), *messages, *later])
            self.source.paused(self.database.backoff, self.database.database_ready, self.stop)
            return False
        metrics.DB_SECONDS.observe(time.perf_counter() - started)
        settled = settle(messages, decoded, processed)
        try:
            self.guard.check(settled)
        except DeadLetterRatioExceeded:
            # Divert nothing more: leave this batch uncommitted and stop for a person to look.
            self.source.rewind([*self.settle_in_flight(), *messages, *later])
            raise
        records = outputs_for(settled, self.destinations)
        failed = self.settle_in_flight()
        if failed:  # redo the earlier batch, then this one, in order
            self.source.rewind([*failed, *messages, *later])
            return False
        submitted = self._publisher.submit(self.publish, records, messages)
        self.in_flight = InFlight(messages, settled, now, submitted)
        if not self.pipelined:
            return self.finish(later)
        return True

    def finish(self, later: Sequence[Message] = ()) -> bool:
        """Settles the batch in flight; when its transaction failed, rewinds it (with `later`)
        and says False."""
        failed = self.settle_in_flight()
        if failed:
            self.source.rewind([*failed, *later])
        return not failed

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
        """A partition changes hands only between transactions: run() settles each poll's last
        one before polling again, so this finds none in flight (a consumer closed mid-batch
        aside). A failed one needs no rewind: the next owner starts at the committed offsets."""
        self.settle_in_flight()
