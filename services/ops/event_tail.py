"""`orderstatus tail`: the events topic live, one line per event, for an operator's terminal.

Reads with its own partition assignment (no consumer group, nothing committed), from the end of
each partition or, with `from_beginning`, from its start; read_committed, like every consumer."""

from __future__ import annotations

import sys
import time
from typing import TextIO
from uuid import UUID

from confluent_kafka import Consumer, KafkaError, TopicPartition

from services.adapters import kafka_config
from services.adapters.kafka_records import position, watermarks
from services.adapters.settings import Settings
from services.core.events import OrderCloudEvent, decode_cloud_event


def line_of(event: OrderCloudEvent) -> str:
    """time, restaurant, order, version, transition, actor, event id[, reason]: greppable columns."""
    data = event.data
    transition = f"{data.from_status or '-'} -> {data.to_status}"
    reason = f" reason={data.reason!r}" if data.reason else ""
    return (
        f"{event.time.isoformat(timespec='milliseconds')} restaurant={data.restaurant_id} "
        f"order={data.order_id} v{data.version} {transition} actor={data.actor} id={event.id}"
        f"{reason}"
    )


def _starts(consumer: Consumer, topic: str, from_beginning: bool) -> list[TopicPartition]:
    """Each partition's start or its current end, resolved now: an event published once the
    announcement is printed is shown (OFFSET_END would resolve later, at the first fetch)."""
    return [
        TopicPartition(topic, p, low if from_beginning else high)
        for p, (low, high) in watermarks(consumer, topic).items()
    ]


def tail(
    settings: Settings,
    out: TextIO,
    *,
    restaurant: UUID | None = None,
    from_beginning: bool = False,
    count: int | None = None,
    idle_s: float | None = None,
) -> int:
    """Prints events until interrupted, or `count` events were printed, or `idle_s` passed
    without one. Records that are not events are reported on their own line and skipped."""
    topic = settings.topics.events
    consumer = Consumer(kafka_config.tail_reader(settings))
    printed = 0
    try:
        consumer.assign(_starts(consumer, topic, from_beginning))
        where = "the oldest retained event" if from_beginning else "now"
        print(f"tailing {topic} from {where} (Ctrl-C stops)", file=sys.stderr, flush=True)
        last_seen = time.monotonic()
        while count is None or printed < count:
            if idle_s is not None and time.monotonic() - last_seen > idle_s:
                break
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(f"reading {topic}: {error}")
            last_seen = time.monotonic()
            try:
                event = decode_cloud_event(message.value() or b"")
            except ValueError as exc:
                where = "{}:{}:{}".format(*position(message))
                print(f"{where} not an order event: {str(exc).splitlines()[0]}", file=out)
                continue
            if restaurant is not None and event.data.restaurant_id != restaurant:
                continue
            print(line_of(event), file=out, flush=True)
            printed += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0
