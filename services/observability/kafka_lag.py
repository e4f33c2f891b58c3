"""Consumer lag of the worker group: per partition, the high watermark of the commands topic minus
the group's committed offset. The commands topic is written without transactions, so there are no
control records and the difference is exactly the number of commands not yet processed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import OFFSET_INVALID, Consumer, TopicPartition

from services.adapters import kafka_config
from services.adapters.settings import Settings


@dataclass(frozen=True, slots=True)
class PartitionLag:
    partition: int
    committed: int | None
    """None when the group never committed on this partition."""
    high: int
    lag: int


def lag_of(low: int, high: int, committed: int | None) -> int:
    """Messages after the committed offset; a group that never committed starts at `low` (the
    worker reads from the earliest offset)."""
    start = low if committed is None or committed < 0 else max(committed, low)
    return max(high - start, 0)


def offsets_reader(settings: Settings) -> Consumer:
    """Reads the worker group's committed offsets without joining the group."""
    return Consumer(kafka_config.worker_offsets_reader(settings))


def command_partitions(consumer: Consumer, topic: str, timeout: float = 5.0) -> list[int]:
    metadata = consumer.list_topics(topic, timeout=timeout).topics[topic]
    if metadata.error is not None:
        raise RuntimeError(f"topic {topic}: {metadata.error}")
    return sorted(metadata.partitions)


def group_lag(
    consumer: Consumer, topic: str, partitions: Iterable[int], timeout: float = 5.0
) -> list[PartitionLag]:
    wanted = [TopicPartition(topic, p) for p in sorted(partitions)]
    if not wanted:
        return []
    committed = {tp.partition: tp.offset for tp in consumer.committed(wanted, timeout=timeout)}
    lags = []
    for tp in wanted:
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
        offset = committed.get(tp.partition, OFFSET_INVALID)
        known = offset if offset >= 0 else None
        lags.append(PartitionLag(tp.partition, known, high, lag_of(low, high, known)))
    return lags
