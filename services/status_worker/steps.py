"""The worker's steps with I/O, each a small unit the pipeline chains: apply a batch in PostgreSQL,
guard against diverting everything, publish outcomes and commit offsets in one Kafka transaction."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import psycopg
from confluent_kafka import Message

from services.status_worker import metrics
from services.status_worker.batch import DeadLetter, Decoded, Incoming, Processed, Settled, diverted
from services.status_worker.db import WorkerDatabase
from services.status_worker.decode import first_line
from services.status_worker.guards import (
    DeadLetterGuard,
    DeadLetterGuardStillTripped,
    DeadLetterRatioExceeded,
)
from services.status_worker.kafka import (
    OutRecord,
    TransactionAborted,
    TransactionalPublisher,
    next_offsets,
)
from services.status_worker.service import apply_batch, refuses_only_this_command
from services.status_worker.source import CommandSource

log = logging.getLogger(__name__)


class Apply(Protocol):
    def __call__(self, decoded: Sequence[Decoded], now: datetime) -> list[Processed] | None:
        """Outcomes of the batch's commands, in order; None when the database is away."""


class Publish(Protocol):
    def __call__(self, records: Sequence[OutRecord], messages: Sequence[Message]) -> bool:
        """Whether `records` were published and the offsets after `messages` committed."""


class ApplyStep:
    """Applies a batch in one transaction; isolates the command the database refuses; says None
    (keep the batch, pause, retry) when the database is unreachable, misconfigured or overloaded."""

    def __init__(self, database: WorkerDatabase) -> None:
        self.database = database
        self.backoff = 0.0

    def __call__(self, decoded: Sequence[Decoded], now: datetime) -> list[Processed] | None:
        incoming = [d for d in decoded if isinstance(d, Incoming)]
        invalid = [d for d in decoded if isinstance(d, DeadLetter) and d.result is not None]
        if not incoming and not invalid:
            return []
        isolate = False
        while True:
            try:
                uow = self.database.unit_of_work()
                processed = apply_batch(uow, incoming, now, isolate=isolate, invalid=invalid)
                self.backoff = 0.0
                return processed
            except Exception as exc:
                # A refused insert in the batch pipeline (the insert policy said no after all) is
                # decided per command, isolated: there a refusal is `forbidden`.
                refused_insert = isinstance(exc, psycopg.errors.InsufficientPrivilege)
                if not refuses_only_this_command(exc) and (isolate or not refused_insert):
                    self._unavailable(exc)
                    return None
                if isolate:
                    raise  # isolated mode turns these into outcomes: this is a bug of ours
                log.warning(
                    "batch refused by the database: redoing it command by command",
                    extra={"evt": "batch_isolated", "error": first_line(exc)},
                )
                isolate = True

    def _unavailable(self, exc: Exception) -> None:
        # No command is to blame: the batch is kept and retried in order once the database answers.
        log.warning(
            "database unavailable: pausing partitions",
            extra={
                "evt": "database_unavailable",
                "error": first_line(exc),
                "sqlstate": getattr(exc, "sqlstate", None),
            },
        )
        metrics.DATABASE_UNAVAILABLE.inc()
        self.database.reset()
        # Grows while retries keep failing, even when a ping succeeds (e.g. missing privileges).
        self.backoff = min(max(self.backoff * 2, 0.2), 10.0)

    def database_ready(self) -> bool:
        try:
            self.database.ping()
        except psycopg.OperationalError:
            self.database.reset()
            return False
        log.info("database reachable again", extra={"evt": "database_available"})
        return True


class PublishStep:
    """One Kafka transaction: the batch's records and its consumed offsets, then a check that the
    commit took effect (the group's committed offsets advanced)."""

    def __init__(self, publisher: TransactionalPublisher, source: CommandSource) -> None:
        self.publisher = publisher
        self.source = source

    def __call__(self, records: Sequence[OutRecord], messages: Sequence[Message]) -> bool:
        started = time.perf_counter()
        try:
            self.publisher.publish(records, next_offsets(messages))
        except TransactionAborted:
            return False
        took_effect = self.source.commit_took_effect(messages)
        if took_effect:
            metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        return took_effect


class TripStore(Protocol):
    def open_trip(self) -> str | None:
        """Why the guard of this group tripped, while no operator has reset it."""

    def record(self, reason: str) -> None: ...


class GuardStep:
    """Stops the worker when dead letters dominate, and keeps it stopped across restarts until an
    operator resets the trip (`orderstatus worker-ops reset-guard`)."""

    def __init__(self, guard: DeadLetterGuard, trips: TripStore) -> None:
        self.guard = guard
        self.trips = trips

    def ensure_not_tripped(self, stop: threading.Event) -> None:
        """Raises DeadLetterGuardStillTripped while an earlier trip stands; waits for PostgreSQL."""
        delay = 0.2
        while not stop.is_set():
            try:
                reason = self.trips.open_trip()
            except psycopg.OperationalError as exc:
                log.warning(
                    "guard state unknown",
                    extra={"evt": "database_unavailable", "error": first_line(exc)},
                )
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            if reason is not None:
                raise DeadLetterGuardStillTripped(reason)
            return

    def check(self, settled: Sequence[Settled]) -> None:
        """Counts the batch; raises DeadLetterRatioExceeded (after recording the trip) when the
        batch must not be published: nothing more is diverted until a person looks."""
        for item in settled:
            self.guard.observe(diverted(item))
        if not self.guard.tripped:
            return
        reason = (
            f"{self.guard.ratio:.0%} of the last {self.guard.window} commands were "
            f"dead-lettered (limit {self.guard.max_ratio:.0%})"
        )
        try:
            self.trips.record(reason)
        except psycopg.Error as exc:  # stop anyway; a restart will count a new window
            log.error("guard trip not recorded", extra={"error": first_line(exc)})
        raise DeadLetterRatioExceeded(reason)
