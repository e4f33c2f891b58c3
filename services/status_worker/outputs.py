"""What a batch publishes, decided without I/O: each message's outcome (`settle`) and the records of
the batch's one Kafka transaction (`outputs_for`): results, events, dead letters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import Message

from services.adapters.command_signing import Purpose, SigningKeys, signature_headers
from services.adapters.kafka_records import position
from services.core.events import (
    CLOUDEVENTS_CONTENT_TYPE,
    HEADER_CONTENT_TYPE,
    cloud_event_of,
    encode_cloud_event,
)
from services.core.messages import CommandResult, OrderEvent, encode
from services.core.topics import (
    HEADER_COMMAND_ID,
    HEADER_DLQ_OFFSET,
    HEADER_DLQ_PARTITION,
    HEADER_DLQ_REASON,
    HEADER_DLQ_TOPIC,
    HEADER_REQUEST_ID,
    Topics,
)
from services.status_worker.batch import DeadLetter, Decoded, Finished, Processed, Settled
from services.status_worker.decode import reply_partition
from services.status_worker.kafka import Headers, OutRecord

DUPLICATE_HEADER = ("duplicate", b"1")


@dataclass(frozen=True, slots=True)
class Destinations:
    """Where outputs go: the topics, and how many partitions the results topic has (a reply
    partition beyond them is ignored rather than failing the whole transaction); and the keys that
    sign the results (the same keys check the commands: pipeline.py)."""

    topics: Topics
    results_partitions: int
    keys: SigningKeys


def settle(
    messages: Sequence[Message], decoded: Sequence[Decoded], processed: Sequence[Processed]
) -> list[Settled]:
    """Each message with its outcome, in batch order; `processed` holds the outcomes of the decoded
    commands, in order."""
    outcomes = iter(processed)
    settled: list[Settled] = []
    for message, item in zip(messages, decoded, strict=True):
        if isinstance(item, DeadLetter):
            settled.append(item)
            continue
        outcome = next(outcomes)
        duplicate = outcome.source != (item.partition, item.offset)
        letter = None
        if outcome.failure is not None and not duplicate:
            # Answered with `error`, and kept aside to be replayed once the cause is fixed.
            letter = DeadLetter(message, f"error: {outcome.failure}", None)
        settled.append(Finished(item, outcome, duplicate, letter))
    return settled


def outputs_for(settled: Sequence[Settled], to: Destinations) -> list[OutRecord]:
    records: list[OutRecord] = []
    for item in settled:
        if isinstance(item, DeadLetter):
            records.extend(dead_letter_records(item, to))
            continue
        records.extend(outcome_records(item, to))
        if item.dead_letter is not None:
            records.extend(dead_letter_records(item.dead_letter, to))
    return records


def outcome_records(finished: Finished, to: Destinations) -> list[OutRecord]:
    result, event = finished.processed.result, finished.processed.event
    reply = _within(finished.incoming.reply_partition, to)
    if finished.duplicate:
        # A second copy of an applied command: answer it, but downstream saw the event already.
        return [result_record(to.topics.results, result, reply, to.keys, duplicate=True)]
    records = [result_record(to.topics.results, result, reply, to.keys)]
    if event is not None:
        records.append(event_record(to.topics.events, event))
    return records


def result_record(
    topic: str,
    result: CommandResult,
    partition: int | None,
    keys: SigningKeys,
    *,
    duplicate: bool = False,
) -> OutRecord:
    """The one place a result record is built: signed, so the API can tell it from a forgery."""
    key, value, command_id = str(result.order_id).encode(), encode(result), result.command_id
    command_id_header = str(command_id).encode()
    headers: list[tuple[str, str | bytes | None]] = [
        (HEADER_COMMAND_ID, command_id_header),
        (HEADER_REQUEST_ID, result.rid.encode()),
        *signature_headers(keys, Purpose.RESULT, key, command_id_header, value),
    ]
    if duplicate:
        headers.append(DUPLICATE_HEADER)
    return OutRecord(topic, key, value, headers, partition)


def event_record(topic: str, event: OrderEvent) -> OutRecord:
    """The one place that encodes an event record (key, value, headers) for the events topic."""
    headers: Headers = [
        (HEADER_CONTENT_TYPE, CLOUDEVENTS_CONTENT_TYPE.encode()),
        (HEADER_COMMAND_ID, str(event.event_id).encode()),
        (HEADER_REQUEST_ID, event.rid.encode()),
    ]
    value = encode_cloud_event(cloud_event_of(event))
    return OutRecord(topic, str(event.order_id).encode(), value, headers)


def dead_letter_records(dead: DeadLetter, to: Destinations) -> list[OutRecord]:
    """The message as it came, with the reason and its source in headers; and its `invalid`
    result for the caller when it names one."""
    message = dead.message
    source = position(message)
    headers: Headers = [
        *(message.headers() or []),
        (HEADER_DLQ_REASON, dead.reason.encode()),
        (HEADER_DLQ_TOPIC, source.topic.encode()),
        (HEADER_DLQ_PARTITION, str(source.partition).encode()),
        (HEADER_DLQ_OFFSET, str(source.offset).encode()),
    ]
    records = [
        OutRecord(to.topics.dead_letters, message.key() or b"", message.value() or b"", headers)
    ]
    if dead.result is not None:
        reply = _within(reply_partition(message), to)
        records.append(result_record(to.topics.results, dead.result, reply, to.keys))
    return records


def _within(partition: int | None, to: Destinations) -> int | None:
    if partition is None or partition >= to.results_partitions:
        return None
    return partition
