"""The notifier's loops: ingest (events topic -> deliveries in PostgreSQL -> offsets committed),
dispatch (due deliveries, the head of each (endpoint, order) only, within per-host budgets ->
attempts in flight), and record (finished attempts -> PostgreSQL, in batches)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID

import psycopg
from confluent_kafka import Message
from psycopg_pool import PoolTimeout

from services.notifier import metrics
from services.notifier.db import DueDelivery, FinishedAttempt, NotifierDatabase
from services.notifier.http import DeliveryClient, host_key
from services.notifier.kafka import EventSource, RoutedEvent, routed_event
from services.notifier.schedule import AttemptResult, Verdict, decide, retry_after_s
from services.notifier.signing import signed_headers

log = logging.getLogger(__name__)

T = TypeVar("T")

DATABASE_ERRORS = (psycopg.OperationalError, PoolTimeout)
POLL_MAX = 500
POLL_WAIT_S = 0.05
"""How long one poll waits for a first record (it returns as soon as one is there)."""
FETCH_MAX = 500
STOP_GRACE_S = 5.0
"""On SIGTERM, attempts in flight get this long; the rest are sent again by the next notifier."""
IDLE_DISPATCH_S = 0.2
RECORD_COALESCE_S = 0.005
"""With nothing new, the dispatcher still looks for due retries this often."""


def _decoded(messages: list[Message]) -> list[RoutedEvent]:
    """The batch's events; an undecodable record is counted, logged and skipped."""
    events: list[RoutedEvent] = []
    for message in messages:
        try:
            events.append(routed_event(message.value()))
        except ValueError as exc:
            metrics.UNDECODABLE.inc()
            log.warning(
                "undecodable event skipped",
                extra={
                    "evt": "event_undecodable",
                    "error": str(exc),
                    "partition": message.partition(),
                    "offset": message.offset(),
                },
            )
    return events


@dataclass(frozen=True)
class NotifierConfig:
    schedule: tuple[float, ...]
    disable_after_s: float
    max_in_flight: int
    per_host: int


class Notifier:
    def __init__(
        self,
        config: NotifierConfig,
        source: EventSource,
        database: NotifierDatabase,
        client: DeliveryClient,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.db = database
        self.client = client
        self.rng = rng or random.Random()
        self.stopping = asyncio.Event()
        self._slot_free = asyncio.Event()  # new heads, or a host has room again: start some
        self._buffer: list[DueDelivery] = []  # due heads fetched but not started (no room yet)
        self._finished_ready = asyncio.Event()
        self._finished: list[FinishedAttempt] = []
        self._in_flight: dict[
            int, UUID
        ] = {}  # delivery id -> endpoint, until its attempt is stored
        self._host_of_endpoint: dict[UUID, str] = {}
        self._per_host: Counter[str] = Counter()  # HTTP requests open per host
        self._attempts: set[asyncio.Task[None]] = set()
        self._dispatching = False  # holds the dispatcher lock
        self._stored_during_fetch: set[int] = set()

    # ---- ingest ------------------------------------------------------------------------------

    async def ingest(self) -> None:
        self.source.subscribe()
        while not self.stopping.is_set():
            messages = await asyncio.to_thread(self.source.poll, POLL_MAX, POLL_WAIT_S)
            if not messages:
                continue
            polled_at, polled = datetime.now(UTC), time.perf_counter()
            events = _decoded(messages)
            await self._until_stored(functools.partial(self._record, events))
            # Only now: a crash before this line re-reads the batch, whose deliveries are stored.
            # (Asynchronous, the commit only queues a request: no thread hop needed.)
            self.source.commit(messages)
            if events and log.isEnabledFor(logging.DEBUG):
                oldest = (polled_at - min(e.time for e in events)).total_seconds()
                log.debug(
                    "events recorded",
                    extra={
                        "evt": "events_recorded",
                        "events": len(events),
                        "oldest_at_poll_ms": round(oldest * 1000, 1),
                        "duration_ms": round((time.perf_counter() - polled) * 1000, 2),
                    },
                )

    async def _record(self, events: list[RoutedEvent]) -> None:
        written, heads = await self.db.record_events(events)
        metrics.RECORDED.inc(written)
        self._offer(heads)

    def _offer(self, heads: list[DueDelivery]) -> None:
        """New heads straight to the buffer: they go out without the dispatcher asking first."""
        if not heads:
            return
        known = {d.id for d in self._buffer}
        self._buffer += [h for h in heads if h.id not in known and h.id not in self._in_flight]
        if self._dispatching:
            self._start_buffered()  # now, not after the dispatch loop's next wake-up
        self._slot_free.set()

    async def _until_stored(self, write: Callable[[], Awaitable[T]]) -> T:
        """PostgreSQL away: wait and write again (nothing is acknowledged meanwhile)."""
        pause = 0.5
        while True:
            try:
                return await write()
            except DATABASE_ERRORS as exc:
                log.warning(
                    "database unavailable", extra={"evt": "database_unavailable", "error": str(exc)}
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    # ---- dispatch ----------------------------------------------------------------------------

    async def dispatch(self) -> None:
        while not await self.db.take_dispatcher_lock():
            log.info("another notifier dispatches; waiting", extra={"evt": "dispatcher_standby"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 5)
            if self.stopping.is_set():
                return
        self._dispatching = True
        log.info("dispatcher started", extra={"evt": "dispatcher_started"})
        fetched_at = 0.0
        while not self.stopping.is_set():
            # New heads arrive by _offer (ingest, stored attempts); the database is asked for what
            # else is due (retries, recovered deliveries, hosts that had no room) every so often.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_free.wait(), IDLE_DISPATCH_S)
            self._slot_free.clear()
            refetch = time.monotonic() - fetched_at >= IDLE_DISPATCH_S
            if refetch:
                fetched_at = time.monotonic()
            try:
                if refetch:
                    await self._fetch_due()
                self._start_buffered()
            except DATABASE_ERRORS as exc:
                log.warning(
                    "database unavailable", extra={"evt": "database_unavailable", "error": str(exc)}
                )
                await asyncio.sleep(1)

    def _busy_endpoints(self) -> list[UUID]:
        full = {h for h, n in self._per_host.items() if n >= self.config.per_host}
        return [e for e, h in self._host_of_endpoint.items() if h in full]

    async def _fetch_due(self) -> None:
        """Replaces the buffer with the heads due now (the database's view is the newer)."""
        room = self.config.max_in_flight - len(self._in_flight)
        if room <= 0:
            return
        asked = time.perf_counter()
        self._stored_during_fetch = set()
        fetched = await self.db.due(
            list(self._in_flight), self._busy_endpoints(), min(room, FETCH_MAX)
        )
        # A delivery whose attempt was stored while the query ran may be in its (older) view.
        fetched = [d for d in fetched if d.id not in self._stored_during_fetch]
        # Heads offered while the query ran stay; the query's own view comes first (oldest due).
        known = {d.id for d in fetched}
        self._buffer = fetched + [d for d in self._buffer if d.id not in known]
        log.debug(
            "due deliveries",
            extra={
                "evt": "dispatch_due",
                "due": len(self._buffer),
                "in_flight": len(self._in_flight),
                "duration_ms": round((time.perf_counter() - asked) * 1000, 2),
            },
        )

    def _start_buffered(self) -> None:
        """Starts what has room; of the rest, up to one pool's worth per host stays buffered (a
        hung host's backlog is not carried around: the next fetch finds it when it has room)."""
        waiting: list[DueDelivery] = []
        kept: Counter[str] = Counter()
        for delivery in self._buffer:
            host = host_key(delivery.url)
            if delivery.id in self._in_flight:
                continue
            if self._per_host[host] >= self.config.per_host or (
                len(self._in_flight) >= self.config.max_in_flight
            ):
                if kept[host] < self.config.per_host:
                    kept[host] += 1
                    waiting.append(delivery)
                continue
            self._in_flight[delivery.id] = delivery.endpoint_id
            self._host_of_endpoint[delivery.endpoint_id] = host
            self._per_host[host] += 1
            task = asyncio.create_task(self._attempt(delivery, host))
            self._attempts.add(task)
            task.add_done_callback(functools.partial(self._attempt_done, delivery.id))
        self._buffer = waiting
        metrics.IN_FLIGHT.set(len(self._in_flight))

    def _attempt_done(self, delivery_id: int, task: asyncio.Task[None]) -> None:
        self._attempts.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A bug, not the receiver: free the slot; the delivery is still pending and retried.
            self._in_flight.pop(delivery_id, None)
            log.error(
                "attempt crashed",
                exc_info=task.exception(),
                extra={"evt": "webhook_attempt_crashed", "delivery_id": delivery_id},
            )

    async def _attempt(self, delivery: DueDelivery, host: str) -> None:
        attempted_at = datetime.now(UTC)
        if delivery.attempts == 0:
            lag = (attempted_at - delivery.event_time).total_seconds()
            metrics.FIRST_ATTEMPT_SECONDS.observe(max(lag, 0.0))
        try:
            headers = signed_headers(
                delivery.secrets, delivery.event_id, int(time.time()), delivery.body
            )
            outcome = await self.client.post(delivery.url, delivery.body, headers)
        finally:
            self._per_host[host] -= 1
            self._slot_free.set()
        metrics.ATTEMPTS.labels(outcome.result.value).inc()
        metrics.ATTEMPT_SECONDS.observe(outcome.latency_ms / 1000)
        decision = decide(
            outcome.result,
            delivery.attempts + 1,
            self.config.schedule,
            attempted_at,
            self.rng,
            retry_after_s(outcome.retry_after, attempted_at),
        )
        status = {
            Verdict.DELIVERED: "delivered",
            Verdict.RETRY: "pending",
            Verdict.FAILED: "failed",
            Verdict.DISABLE: "failed",
        }[decision.verdict]
        if decision.verdict is not Verdict.RETRY:
            metrics.DELIVERIES.labels(decision.verdict.value).inc()
        self._finished.append(
            FinishedAttempt(
                delivery_id=delivery.id,
                endpoint_id=delivery.endpoint_id,
                order_id=delivery.order_id,
                attempted_at=attempted_at,
                status=status,
                status_code=outcome.status_code,
                latency_ms=outcome.latency_ms,
                error=outcome.error,
                next_retry_at=decision.next_attempt_at,
                success=outcome.result is AttemptResult.SUCCESS,
                gone=outcome.result is AttemptResult.GONE,
            )
        )
        self._finished_ready.set()

    # ---- record ------------------------------------------------------------------------------

    async def record(self) -> None:
        """Stores finished attempts in batches; a delivery leaves `in flight` only once its new
        state is stored, so the dispatcher never sends it twice."""
        while not (self.stopping.is_set() and not self._attempts and not self._finished):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished_ready.wait(), 0.1)
            self._finished_ready.clear()
            if not self._finished:
                continue
            await asyncio.sleep(RECORD_COALESCE_S)  # let a few more finish: one transaction for all
            batch, self._finished = self._finished, []
            disabled, heads = await self._until_stored(
                functools.partial(self.db.record_attempts, batch, self.config.disable_after_s)
            )
            for attempt in batch:
                self._in_flight.pop(attempt.delivery_id, None)
                self._stored_during_fetch.add(attempt.delivery_id)
            for endpoint in disabled:
                metrics.ENDPOINTS_DISABLED.inc()
                log.warning(
                    "endpoint disabled",
                    extra={"evt": "webhook_endpoint_disabled", "endpoint_id": str(endpoint)},
                )
            if disabled:
                self._buffer = [d for d in self._buffer if d.endpoint_id not in disabled]
            self._forget_idle_endpoints()
            metrics.IN_FLIGHT.set(len(self._in_flight))
            self._offer(heads)
            self._slot_free.set()

    def _forget_idle_endpoints(self) -> None:
        busy = set(self._in_flight.values())
        for endpoint in [e for e in self._host_of_endpoint if e not in busy]:
            del self._host_of_endpoint[endpoint]

    # ---- gauges ------------------------------------------------------------------------------

    async def measure(self, every_s: float = 5.0) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(*DATABASE_ERRORS):
                backlog = await self.db.backlog()
                metrics.PENDING.set(backlog["pending"])
                metrics.RETRY_BACKLOG.set(backlog["retrying"])
                metrics.OLDEST_UNDELIVERED.set(backlog["oldest_s"])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), every_s)

    async def run(self) -> None:
        loops = [
            asyncio.create_task(self.ingest(), name="ingest"),
            asyncio.create_task(self.dispatch(), name="dispatch"),
            asyncio.create_task(self.record(), name="record"),
            asyncio.create_task(self.measure(), name="measure"),
        ]
        stopped = asyncio.create_task(self.stopping.wait())
        done, _ = await asyncio.wait([*loops, stopped], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            failure = None if task is stopped else task.exception()
            if failure is not None:
                self.stopping.set()
                raise failure
        # Stopping: attempts in flight get a bounded time to finish; what finished is stored.
        if self._attempts:
            await asyncio.wait(set(self._attempts), timeout=STOP_GRACE_S)
        for task in list(self._attempts):
            task.cancel()
        await asyncio.gather(*self._attempts, return_exceptions=True)
        await asyncio.gather(*loops, return_exceptions=True)
