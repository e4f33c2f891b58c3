"""Kafka adapter of the live event streams: one consumer per API process reads every partition of
the events topic and fans each event out to the open streams of its restaurant.

Streams never read Kafka themselves, so a thousand open kitchen screens cost one consumer. Each
event a stream gets carries a resume position (services/command_api/feed_tokens.py): the hub's
position per partition once it has handed out that event. A client that comes back with it
(`Last-Event-ID`) gets what it missed from a short-lived catch-up reader over exactly the range
between its position and the hub's, then the live events: nothing twice, nothing lost, as long as
the topic still retains the range. A stream that falls behind by more than its buffer is ended; it
resumes the same way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from confluent_kafka import Consumer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge

from services.adapters import kafka_config
from services.adapters.kafka_records import poll_batch, position, watermarks
from services.adapters.settings import Settings
from services.command_api.feed_tokens import Positions, encode_positions, merged
from services.core.events import OrderCloudEvent, decode_cloud_event, encode_cloud_event

log = logging.getLogger(__name__)


class EventHubMetrics:
    """The hub's collectors, registered in the API's registry by its composition root (app.py),
    so /metrics serves them beside the API's own."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.open_streams = Gauge(
            "orderstatus_api_event_streams",
            "Event streams (SSE) open in this API process",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.consumers = Counter(
            "orderstatus_api_event_hub_consumers",
            "Kafka consumers the event hub created for live streams (one per API process start)",
            registry=registry,
        )
        self.catch_ups = Counter(
            "orderstatus_api_event_stream_catchups",
            "Resumed streams (Last-Event-ID) that read the range they missed with a short-lived "
            "reader",
            registry=registry,
        )
        self.overflows = Counter(
            "orderstatus_api_event_stream_overflows",
            "Streams ended because the client fell further behind than its buffer (it resumes)",
            registry=registry,
        )


CATCH_UP_DEADLINE_S = 60.0


def _consumer(settings: Settings, purpose: str) -> Consumer:
    return Consumer(kafka_config.event_stream_reader(settings, purpose))


@dataclass(frozen=True, slots=True)
class Delivery:
    event: OrderCloudEvent
    data: str
    """The event as it travels (encoded once, however many streams it goes to)."""
    resume_at: str
    """The SSE `id` of this event: where to resume after it."""


@dataclass(frozen=True, slots=True)
class Handout:
    """One event as the hub hands it to every stream of its restaurant."""

    partition: int
    offset: int
    event: OrderCloudEvent
    data: str
    at: Positions
    at_text: str


@dataclass(eq=False)
class Subscription:
    """One open stream: its restaurant, the hub's position when it opened (live events start
    there), a floor below which it already has everything (from its Last-Event-ID), its queue."""

    restaurant_id: UUID
    start: Positions
    floor: Positions
    queue: asyncio.Queue[Delivery]
    overflows: Counter
    overflowed: bool = False

    def offer(self, handout: Handout) -> None:
        if self.overflowed or handout.offset < self.floor.get(handout.partition, 0):
            return
        resume_at = (
            handout.at_text
            if all(o <= handout.at.get(p, 0) for p, o in self.floor.items())
            else encode_positions(merged(handout.at, self.floor))
        )
        try:
            self.queue.put_nowait(Delivery(handout.event, handout.data, resume_at))
        except asyncio.QueueFull:
            self.overflowed = True
            self.overflows.inc()

    @property
    def ended(self) -> bool:
        """Overflowed and everything queued before that was taken: end the stream here."""
        return self.overflowed and self.queue.empty()


@dataclass(eq=False)
class EventHub:
    settings: Settings
    metrics: EventHubMetrics
    _subscribers: dict[UUID, set[Subscription]] = field(default_factory=lambda: defaultdict(set))
    _positions: Positions = field(default_factory=dict)
    """What has been handed to the subscriptions, per partition (touched on the event loop only)."""
    _running: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _consumer: Any = None

    @property
    def topic(self) -> str:
        return self.settings.topics.events

    @property
    def ready(self) -> bool:
        return self._running.is_set()

    async def start(self) -> None:
        """Reads from the end as of now: streams get what happens from here on (or resume)."""
        self._loop = asyncio.get_running_loop()
        self._consumer = _consumer(self.settings, "events")
        self.metrics.consumers.inc()
        ends = await asyncio.to_thread(watermarks, self._consumer, self.topic)
        self._positions = {p: high for p, (_low, high) in ends.items()}
        self._consumer.assign(
            [TopicPartition(self.topic, p, o) for p, o in self._positions.items()]
        )
        self._running.set()
        self._thread = threading.Thread(target=self._read, name="event-hub", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._running.clear()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
        if self._consumer is not None:
            await asyncio.to_thread(self._consumer.close)

    def subscribe(self, restaurant_id: UUID, floor: Positions | None = None) -> Subscription:
        subscription = Subscription(
            restaurant_id,
            dict(self._positions),
            dict(floor or {}),
            asyncio.Queue(self.settings.api_event_stream_buffer),
            self.metrics.overflows,
        )
        self._subscribers[restaurant_id].add(subscription)
        self.metrics.open_streams.inc()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.restaurant_id)
        if subscribers is not None and subscription in subscribers:
            subscribers.discard(subscription)
            self.metrics.open_streams.dec()
            if not subscribers:
                del self._subscribers[subscription.restaurant_id]

    def position(self) -> Positions:
        """Everything before this has been handed out (a quiet stream's resume point)."""
        return dict(self._positions)

    # ---- the reading thread ------------------------------------------------------------------

    def _read(self) -> None:
        loop = self._loop
        assert loop is not None
        while self._running.is_set():
            try:
                batch = self._next_batch()
                if batch:
                    loop.call_soon_threadsafe(self._dispatch, batch)
            except Exception:  # a broker hiccup must not end every stream of the process
                log.exception("event hub read failed", extra={"evt": "event_hub_error"})
                time.sleep(1.0)

    def _next_batch(self) -> list[tuple[int, int, OrderCloudEvent | None]]:
        batch: list[tuple[int, int, OrderCloudEvent | None]] = []
        for message in poll_batch(self._consumer, 500, 0.1):
            if message.error() is not None:
                continue
            _topic, partition, offset = position(message)
            batch.append((partition, offset, _decoded(message.value())))
        return batch

    def _dispatch(self, batch: list[tuple[int, int, OrderCloudEvent | None]]) -> None:
        for partition, offset, event in batch:
            self._positions[partition] = offset + 1
            if event is None:
                continue
            subscribers = self._subscribers.get(event.data.restaurant_id)
            if subscribers:
                at = dict(self._positions)
                handout = Handout(partition, offset, event, _data(event), at, encode_positions(at))
                for subscription in list(subscribers):
                    subscription.offer(handout)

    # ---- resuming ---------------------------------------------------------------------------

    async def catch_up(self, subscription: Subscription) -> AsyncIterator[Delivery]:
        """The subscription's restaurant's events from its floor up to where its live events
        start, in offset order per partition. A floor beyond the topic's end (another process's
        token, ahead of this hub) is kept: live events below it are skipped, not repeated."""
        self.metrics.catch_ups.inc()
        consumer = _consumer(self.settings, "catch-up")
        try:
            marks = await asyncio.to_thread(watermarks, consumer, self.topic)
            since = subscription.floor
            start = {
                p: max(since.get(p, low), low)
                for p, (low, _high) in marks.items()
                if p in subscription.start
            }
            until = {p: o for p, o in subscription.start.items() if start.get(p, o) < o}
            progress = merged(since, start)
            if until:
                consumer.assign([TopicPartition(self.topic, p, start[p]) for p in until])
            deadline = time.monotonic() + CATCH_UP_DEADLINE_S
            while until:
                if time.monotonic() > deadline:
                    raise TimeoutError("catch-up did not reach the live position in time")
                messages = await asyncio.to_thread(consumer.consume, 500, 0.2)
                for message in messages:
                    if message.error() is not None:
                        continue
                    _topic, partition, offset = position(message)
                    if offset >= until.get(partition, -1):
                        continue  # the live stream has it
                    progress[partition] = offset + 1
                    event = _decoded(message.value())
                    if event is not None and event.data.restaurant_id == subscription.restaurant_id:
                        yield Delivery(event, _data(event), encode_positions(progress))
                for p in list(until):
                    reached = await asyncio.to_thread(
                        consumer.position, [TopicPartition(self.topic, p)]
                    )
                    if reached[0].offset >= until[p]:
                        del until[p]
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(consumer.close)


def _data(event: OrderCloudEvent) -> str:
    return encode_cloud_event(event).decode()


def _decoded(raw: bytes | None) -> OrderCloudEvent | None:
    try:
        return decode_cloud_event(raw or b"")
    except ValueError:
        return None
