"""Each of the worker's steps against in-memory neighbours (tests/unit/worker_fakes.py): the pure
outputs of a batch, the use case over a fake unit of work, the apply, guard and publish steps, the
command source's rewinds, and the pipeline that chains them."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from confluent_kafka import Message

from services.adapters.settings import Settings
from services.core.events import CLOUDEVENTS_CONTENT_TYPE, decode_cloud_event
from services.core.messages import (
    Actor,
    ChangeStatus,
    CreateOrder,
    OrderEvent,
    Outcome,
    Role,
    decode_result,
    encode,
)
from services.core.topics import HEADER_COMMAND_ID, HEADER_REPLY_PARTITION, Topics
from services.status_worker import faults
from services.status_worker.batch import DeadLetter, Finished, Incoming, diverted
from services.status_worker.bulk import Sightings, Writes, fold, plan
from services.status_worker.decode import decode
from services.status_worker.guards import (
    DeadLetterGuard,
    DeadLetterGuardStillTripped,
    DeadLetterRatioExceeded,
)
from services.status_worker.kafka import OutRecord, TransactionAborted
from services.status_worker.outputs import (
    DUPLICATE_HEADER,
    Destinations,
    event_record,
    outputs_for,
    settle,
)
from services.status_worker.pipeline import StatusWorker
from services.status_worker.service import apply_batch
from services.status_worker.source import CommandSource, RewindFailed
from services.status_worker.steps import ApplyStep, GuardStep, PublishStep
from tests.topics import TEST_KEYS, change_command, create_command, signed
from tests.unit.worker_fakes import FakeConsumer, FakeRepository, FakeTrips, FakeUnitOfWork

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
TOPIC = "unit.commands"
TOPICS = Topics.with_prefix("unit")
TO = Destinations(TOPICS, results_partitions=4, keys=TEST_KEYS)
RESTAURANT = uuid.UUID("5a1d0c3e-0000-4000-8000-000000000001")


def create() -> CreateOrder:
    return create_command(RESTAURANT)


def change(order: uuid.UUID, status: str = "accepted") -> ChangeStatus:
    return change_command(order, status)


def message_of(
    command: CreateOrder | ChangeStatus | None,
    offset: int,
    partition: int = 0,
    headers: list[tuple[str, bytes]] | None = None,
) -> Message:
    value = encode(command) if command is not None else b"garbage"
    key = str(command.order_id).encode() if command is not None else str(uuid.uuid4()).encode()
    all_headers = [
        (HEADER_COMMAND_ID, str(command.command_id if command else uuid.uuid4()).encode())
    ]
    key, value, all_headers = signed((key, value, all_headers + (headers or [])))
    return Message(
        topic=TOPIC, partition=partition, offset=offset, key=key, value=value, headers=all_headers
    )


def run_batch(
    repository: FakeRepository, messages: Sequence[Message], *, isolate: bool = False
) -> list[Finished | DeadLetter]:
    decoded = [decode(m, NOW) for m in messages]
    incoming = [d for d in decoded if isinstance(d, Incoming)]
    processed = apply_batch(FakeUnitOfWork(repository), incoming, NOW, isolate=isolate)
    return settle(messages, decoded, processed)


# ---- the use case over a fake unit of work -------------------------------------------------------


def test_a_batch_applies_in_order_and_records_each_outcome_in_the_inbox() -> None:
    repository = FakeRepository()
    first = create()
    then = change(first.order_id)
    stale = change(first.order_id, "accepted")  # accepted -> accepted: invalid transition
    settled = run_batch(repository, [message_of(c, i) for i, c in enumerate((first, then, stale))])
    outcomes = [s.processed.result.outcome for s in settled if isinstance(s, Finished)]
    assert outcomes == [Outcome.APPLIED, Outcome.APPLIED, Outcome.CONFLICT]
    assert set(repository.inbox) == {first.command_id, then.command_id, stale.command_id}
    assert repository.orders[first.order_id].version == 2
    assert repository.analytics == ["order_status_conflict"]


@pytest.mark.parametrize("isolate", [False, True])
def test_a_create_the_insert_policy_refuses_is_forbidden(isolate: bool) -> None:
    repository = FakeRepository(forbidden={RESTAURANT})
    [done] = run_batch(repository, [message_of(create(), 0)], isolate=isolate)
    assert isinstance(done, Finished)
    assert done.processed.result.outcome is Outcome.FORBIDDEN
    assert repository.orders == {}


def test_a_redelivered_command_is_answered_from_the_inbox_as_a_duplicate() -> None:
    repository = FakeRepository()
    command = create()
    run_batch(repository, [message_of(command, 0)])
    [again] = run_batch(repository, [message_of(command, 9)])
    assert isinstance(again, Finished) and again.duplicate
    records = outputs_for([again], TO)
    assert [r.topic for r in records] == [TOPICS.results]  # no second event
    assert DUPLICATE_HEADER in records[0].headers


def test_a_refused_command_is_dead_lettered_again_whenever_its_batch_is_redone() -> None:
    """Issue 10 (1): the first attempt's dead letter may be lost with an aborted transaction."""
    repository = FakeRepository()
    first = create()
    explosive = change(first.order_id)
    repository.refuse.add(explosive.command_id)
    batch = [message_of(first, 0), message_of(explosive, 1)]
    with pytest.raises(ValueError):
        run_batch(repository, batch)
    assert repository.inbox == {}  # the whole batch rolled back
    for _attempt in range(2):  # the first attempt, then a redo answered from the inbox
        settled = run_batch(repository, batch, isolate=True)
        refused = settled[1]
        assert isinstance(refused, Finished) and not refused.duplicate
        assert refused.processed.result.outcome is Outcome.ERROR
        assert refused.dead_letter is not None
        assert refused.dead_letter.reason.startswith("error: ValueError")
        dead = [r for r in outputs_for(settled, TO) if r.topic == TOPICS.dead_letters]
        assert [r.value for r in dead] == [encode(explosive)]


# ---- the set-based plan of a batch: pure ---------------------------------------------------------


def test_a_batch_is_grouped_by_caller_and_orders_several_callers_touch_go_one_by_one() -> None:
    staff = Actor(sub="alice", role=Role.AUTHENTICATED)
    solo, shared = create(), create()
    by_staff = change(shared.order_id).model_copy(update={"actor": staff})
    items = [
        Incoming(c, 0, i) for i, c in enumerate((solo, shared, change(solo.order_id), by_staff))
    ]
    groups, mixed = plan(items)
    assert [[i.offset for i in g.items] for g in groups] == [[0, 2]]
    assert [i.offset for i in mixed] == [1, 3]  # in arrival order
    assert groups[0].order_ids() == [solo.order_id]
    assert groups[0].creating_for() == [RESTAURANT]


def test_commands_on_one_order_see_each_others_effects_and_write_once_per_table() -> None:
    first = create()
    steps = [change(first.order_id, s) for s in ("accepted", "preparing", "ready")]
    again = change(first.order_id, "ready")  # ready -> ready: a conflict on the folded state
    items = [Incoming(c, 0, i) for i, c in enumerate((first, *steps, again))]
    sightings = Sightings({}, frozenset(), {RESTAURANT: True})
    decisions, writes = fold(items, sightings, NOW)
    assert [d.outcome for d in decisions] == [Outcome.APPLIED] * 4 + [Outcome.CONFLICT]
    assert [o.order_id for o in writes.created] == [first.order_id]
    [(final, before)] = writes.updated.values()
    assert (final.status.value, final.version, before) == ("ready", 4, 1)
    assert [d.change.version for _, d in writes.changes if d.change] == [2, 3, 4]


def test_a_fold_refuses_a_create_the_insert_policy_refuses_and_hides_what_it_hides() -> None:
    hidden, refused = create(), create()
    items = [Incoming(c, 0, i) for i, c in enumerate((refused, change(refused.order_id)))]
    decisions, writes = fold(items, Sightings({}, frozenset(), {RESTAURANT: False}), NOW)
    assert [d.outcome for d in decisions] == [Outcome.FORBIDDEN, Outcome.NOT_FOUND]
    assert writes == Writes()
    sightings = Sightings({}, frozenset({hidden.order_id}), {RESTAURANT: True})
    items = [Incoming(c, 0, i) for i, c in enumerate((hidden, change(hidden.order_id)))]
    decisions, writes = fold(items, sightings, NOW)
    assert [d.outcome for d in decisions] == [Outcome.CONFLICT, Outcome.FORBIDDEN]
    assert writes == Writes()


def test_a_second_copy_of_a_command_in_one_batch_is_answered_as_a_duplicate() -> None:
    repository = FakeRepository()
    command = create()
    first, second = run_batch(repository, [message_of(command, 0), message_of(command, 1)])
    assert isinstance(first, Finished) and isinstance(second, Finished)
    assert not first.duplicate and second.duplicate
    assert second.processed == first.processed
    assert list(repository.inbox) == [command.command_id]


# ---- outputs: pure -------------------------------------------------------------------------------


def test_an_applied_command_publishes_its_result_and_its_event() -> None:
    command = create()
    [done] = run_batch(FakeRepository(), [message_of(command, 0)])
    result, event = outputs_for([done], TO)
    assert (result.topic, event.topic) == (TOPICS.results, TOPICS.events)
    assert result.key == event.key == str(command.order_id).encode()
    assert decode_result(result.value).outcome is Outcome.APPLIED
    cloud = decode_cloud_event(event.value)
    assert cloud.id == str(command.command_id) and cloud.subject == str(command.order_id)
    assert (CLOUDEVENTS_CONTENT_TYPE.encode()) in [v for _, v in event.headers]
    assert result.partition is None and event.partition is None


def test_the_event_record_is_encoded_in_one_place() -> None:
    command = create()
    [done] = run_batch(FakeRepository(), [message_of(command, 0)])
    assert isinstance(done, Finished)
    event: OrderEvent | None = done.processed.event
    assert event is not None
    assert outputs_for([done], TO)[1] == event_record(TOPICS.events, event)


@pytest.mark.parametrize(
    ("header", "partition"),
    [(b"2", 2), (b"0", 0), (b"3", 3), (b"4", None), (b"-1", None), (b"x", None), (b"", None)],
)
def test_a_result_goes_to_the_reply_partition_its_command_names(
    header: bytes, partition: int | None
) -> None:
    command = create()
    source = message_of(command, 0, headers=[(HEADER_REPLY_PARTITION, header)])
    [done] = run_batch(FakeRepository(), [source])
    result, event = outputs_for([done], TO)
    assert result.partition == partition
    assert event.partition is None  # events stay keyed by order


def test_an_undecodable_command_is_dead_lettered_and_answered_at_its_reply_partition() -> None:
    source = message_of(None, 5, headers=[(HEADER_REPLY_PARTITION, b"1")])
    [letter] = run_batch(FakeRepository(), [source])
    assert isinstance(letter, DeadLetter) and diverted(letter)
    dead, answer = outputs_for([letter], TO)
    assert dead.topic == TOPICS.dead_letters and dead.value == b"garbage"
    assert answer.topic == TOPICS.results and answer.partition == 1
    assert decode_result(answer.value).outcome is Outcome.INVALID


def test_outputs_keep_the_batch_order() -> None:
    first = create()
    batch = [message_of(first, 0), message_of(None, 1), message_of(change(first.order_id), 2)]
    records = outputs_for(run_batch(FakeRepository(), batch), TO)
    assert [r.topic for r in records] == [
        TOPICS.results,
        TOPICS.events,
        TOPICS.dead_letters,
        TOPICS.results,
        TOPICS.results,
        TOPICS.events,
    ]


# ---- the command source ----------------------------------------------------------------------------


def source_with(consumer: FakeConsumer, *partitions: int) -> CommandSource:
    source = CommandSource(consumer, TOPIC, 100)  # type: ignore[arg-type]
    source.assigned = {(TOPIC, p) for p in partitions}
    return source


def at(partition: int, offset: int) -> Message:
    return Message(topic=TOPIC, partition=partition, offset=offset, value=b"")


def test_a_rewind_goes_back_to_the_batch_start_or_to_the_committed_offset_past_it() -> None:
    consumer = FakeConsumer(committed={(TOPIC, 1): 30})  # a 'failed' commit that went through
    source = source_with(consumer, 0, 1)
    source.rewind([at(0, 10), at(0, 11), at(1, 20), at(1, 29), at(2, 5)])  # 2: revoked meanwhile
    assert sorted(consumer.seeks) == [(TOPIC, 0, 10), (TOPIC, 1, 30)]


def test_a_failed_seek_during_a_rewind_is_not_ignored() -> None:
    """Issue 10 (9): polling on after a failed seek would skip the batch."""
    consumer = FakeConsumer()
    consumer.failing_seeks = True
    with pytest.raises(RewindFailed):
        source_with(consumer, 0).rewind([at(0, 10)])


def test_a_commit_took_effect_only_when_the_committed_offsets_moved_past_the_batch() -> None:
    consumer = FakeConsumer(committed={(TOPIC, 0): 12})
    source = source_with(consumer, 0)
    assert source.commit_took_effect([at(0, 10), at(0, 11)])
    assert not source.commit_took_effect([at(0, 12)])


def test_a_pause_resumes_once_the_database_is_ready() -> None:
    consumer = FakeConsumer()
    answers = iter([False, False, True])
    source_with(consumer, 0).paused(0.0, lambda: next(answers), threading.Event())
    assert consumer.paused == [(TOPIC, 0)] and consumer.resumed == 1


# ---- the apply, guard and publish steps ----------------------------------------------------------


class FakeDatabase:
    def __init__(
        self,
        repository: FakeRepository,
        failures: int = 0,
        error: Exception | None = None,
    ) -> None:
        self.repository = repository
        self.failures = failures
        self.error = error or psycopg.OperationalError("connection refused")
        self.resets = 0

    def unit_of_work(self) -> FakeUnitOfWork:
        if self.failures:
            self.failures -= 1
            raise self.error
        return FakeUnitOfWork(self.repository)

    def reset(self) -> None:
        self.resets += 1

    def ping(self) -> None:
        pass


def test_the_apply_step_isolates_the_refused_command_and_the_batch_goes_on() -> None:
    repository = FakeRepository()
    first = create()
    explosive_change = change(first.order_id)
    repository.refuse.add(explosive_change.command_id)
    step = ApplyStep(FakeDatabase(repository))  # type: ignore[arg-type]
    decoded = [decode(message_of(c, i), NOW) for i, c in enumerate((first, explosive_change))]
    processed = step(decoded, NOW)
    assert processed is not None
    assert [p.result.outcome for p in processed] == [Outcome.APPLIED, Outcome.ERROR]


def test_the_apply_step_keeps_the_batch_while_the_database_is_away() -> None:
    database = FakeDatabase(FakeRepository(), failures=2)
    step = ApplyStep(database)  # type: ignore[arg-type]
    decoded = [decode(message_of(create(), 0), NOW)]
    assert step(decoded, NOW) is None
    first_backoff = step.backoff
    assert step(decoded, NOW) is None
    assert step.backoff > first_backoff > 0  # grows while retries keep failing
    assert step(decoded, NOW) is not None and step.backoff == 0
    assert database.resets == 2


def test_an_insert_refused_in_the_batch_pipeline_is_decided_again_command_by_command() -> None:
    refused = psycopg.errors.InsufficientPrivilege("new row violates row-level security policy")
    once = ApplyStep(FakeDatabase(FakeRepository(), failures=1, error=refused))  # type: ignore[arg-type]
    assert once([decode(message_of(create(), 0), NOW)], NOW) is not None
    # Refused isolated too: no command is to blame (e.g. a missing grant): wait, do not divert.
    always = ApplyStep(FakeDatabase(FakeRepository(), failures=2, error=refused))  # type: ignore[arg-type]
    assert always([decode(message_of(create(), 0), NOW)], NOW) is None


def test_the_apply_step_records_an_undecodable_commands_invalid_outcome() -> None:
    repository = FakeRepository()
    step = ApplyStep(FakeDatabase(repository))  # type: ignore[arg-type]
    letter = decode(message_of(None, 3), NOW)
    assert step([letter], NOW) == []
    assert isinstance(letter, DeadLetter) and letter.result is not None
    assert list(repository.invalid) == [letter.result.command_id]


def test_the_guard_records_its_trip_and_stays_tripped() -> None:
    trips = FakeTrips()
    step = GuardStep(DeadLetterGuard(window=4, max_ratio=0.5), trips)
    letters = run_batch(FakeRepository(), [message_of(None, i) for i in range(4)])
    with pytest.raises(DeadLetterRatioExceeded):
        step.check(letters)
    assert len(trips.recorded) == 1
    restarted = GuardStep(DeadLetterGuard(window=4, max_ratio=0.5), trips)
    with pytest.raises(DeadLetterGuardStillTripped):
        restarted.ensure_not_tripped(threading.Event())
    trips.trip = None  # what `orderstatus worker-ops reset-guard` does
    restarted.ensure_not_tripped(threading.Event())


class FakePublisher:
    def __init__(self, aborts: bool = False) -> None:
        self.aborts = aborts
        self.transactions: list[tuple[list[OutRecord], list[tuple[int, int]]]] = []

    def publish(self, records: Sequence[OutRecord], offsets: list[Any]) -> None:
        if self.aborts:
            raise TransactionAborted("coordinator moved")
        self.transactions.append((list(records), [(tp.partition, tp.offset) for tp in offsets]))


def test_the_publish_step_commits_the_offsets_after_the_batch_and_checks_they_moved() -> None:
    consumer = FakeConsumer()
    publisher = FakePublisher()
    step = PublishStep(publisher, source_with(consumer, 0))  # type: ignore[arg-type]
    assert not step([], [at(0, 7)])  # reported committed, but the offsets did not move
    consumer.committed_offsets[(TOPIC, 0)] = 8
    assert step([], [at(0, 7)])
    assert publisher.transactions[-1][1] == [(0, 8)]
    aborting = PublishStep(FakePublisher(aborts=True), source_with(consumer, 0))  # type: ignore[arg-type]
    assert not aborting([], [at(0, 7)])


def test_the_false_abort_fault_reports_a_failure_at_its_batch_only() -> None:
    plan = faults.FaultPlan(Settings(worker_fault="false_abort", worker_fault_batch=2))
    publish = faults.FaultyPublish(lambda records, messages: True, plan)
    results = []
    for batch in (1, 2, 3):
        plan.batches = batch
        results.append(publish([], []))
    assert results == [True, False, True]


def test_an_unknown_fault_is_refused() -> None:
    with pytest.raises(ValueError):
        faults.FaultPlan(Settings(worker_fault="crash_sometimes"))


# ---- the pipeline ----------------------------------------------------------------------------------


def pipeline(
    repository: FakeRepository,
    publisher: FakePublisher,
    consumer: FakeConsumer,
    trips: FakeTrips,
    pipelined: bool = True,
) -> StatusWorker:
    source = source_with(consumer, 0)
    apply = ApplyStep(FakeDatabase(repository))  # type: ignore[arg-type]
    guard = GuardStep(DeadLetterGuard(window=10, max_ratio=0.5), trips)
    publish = PublishStep(publisher, source)  # type: ignore[arg-type]
    return StatusWorker(
        source, apply, apply, guard, publish, TO, threading.Event(), pipelined=pipelined
    )


def test_the_pipeline_publishes_a_batch_and_commits_after_its_last_offset() -> None:
    repository, publisher = FakeRepository(), FakePublisher()
    consumer = FakeConsumer(committed={(TOPIC, 0): 2})
    first = create()
    worker = pipeline(repository, publisher, consumer, FakeTrips())
    worker.process([message_of(first, 0), message_of(change(first.order_id), 1)])
    worker.finish()
    [(records, offsets)] = publisher.transactions
    assert offsets == [(0, 2)]
    assert [r.topic for r in records] == [TOPICS.results, TOPICS.events] * 2
    assert consumer.seeks == []


def test_unpipelined_each_batch_is_settled_before_the_next_poll() -> None:
    consumer, publisher = FakeConsumer(), FakePublisher(aborts=True)
    worker = pipeline(FakeRepository(), publisher, consumer, FakeTrips(), pipelined=False)
    worker.process([message_of(create(), 4)])
    assert worker.in_flight is None and consumer.seeks == [(TOPIC, 0, 4)]  # no finish() needed


def test_the_pipeline_rewinds_a_batch_whose_transaction_aborted() -> None:
    consumer = FakeConsumer()
    worker = pipeline(FakeRepository(), FakePublisher(aborts=True), consumer, FakeTrips())
    worker.process([message_of(create(), 4), message_of(create(), 5)])
    worker.finish()
    assert consumer.seeks == [(TOPIC, 0, 4)]


def test_the_pipeline_rewinds_and_stops_when_the_guard_trips() -> None:
    consumer, trips, publisher = FakeConsumer(), FakeTrips(), FakePublisher()
    worker = pipeline(FakeRepository(), publisher, consumer, trips)
    with pytest.raises(DeadLetterRatioExceeded):
        worker.process([message_of(None, i) for i in range(10)])
    assert consumer.seeks == [(TOPIC, 0, 0)]
    assert publisher.transactions == [] and trips.trip is not None


def test_the_next_batch_is_applied_while_the_last_one_publishes_and_published_after_it() -> None:
    consumer, publisher = FakeConsumer(), FakePublisher()
    worker = pipeline(FakeRepository(), publisher, consumer, FakeTrips())
    first, second = create(), create()
    consumer.committed_offsets[(TOPIC, 0)] = 2
    worker.process([message_of(first, 0)])
    worker.process([message_of(second, 1)])  # applied while the first is in flight
    worker.finish()
    assert [offsets for _, offsets in publisher.transactions] == [[(0, 1)], [(0, 2)]]
    assert consumer.seeks == []


def test_when_a_transaction_fails_the_batch_after_it_is_redone_after_it() -> None:
    """Both batches go back to the earliest offset of each partition: none is skipped."""
    consumer = FakeConsumer()
    publisher = FakePublisher(aborts=True)
    worker = pipeline(FakeRepository(), publisher, consumer, FakeTrips())
    worker.process([message_of(create(), 10), message_of(create(), 11)])
    worker.process([message_of(create(), 12), message_of(create(), 3, partition=1)])
    assert sorted(consumer.seeks) == [(TOPIC, 0, 10)]  # partition 1 is not this worker's
    assert publisher.transactions == []


def test_a_poll_is_split_into_batches_and_a_rewind_covers_the_rest_of_the_poll() -> None:
    consumer, repository = FakeConsumer(), FakeRepository()
    worker = pipeline(repository, FakePublisher(aborts=True), consumer, FakeTrips())
    worker.source.batch_max = 1
    worker.source.assigned.add((TOPIC, 1))
    commands = [create(), create(), create()]
    polled = [message_of(commands[0], 4), message_of(commands[1], 5), message_of(commands[2], 3, 1)]
    worker.process_poll(polled)
    # The first transaction failed: both its batch and everything polled after it go back.
    assert sorted(consumer.seeks) == [(TOPIC, 0, 4), (TOPIC, 1, 3)]
    assert commands[2].command_id not in repository.inbox  # not applied after the rewind
    assert worker.in_flight is None


def test_nothing_is_in_flight_when_the_next_poll_may_run_a_rebalance() -> None:
    consumer, publisher = FakeConsumer(committed={(TOPIC, 0): 3}), FakePublisher()
    worker = pipeline(FakeRepository(), publisher, consumer, FakeTrips())
    worker.source.batch_max = 1
    polls: list[bool] = []
    consumer.queue = [message_of(create(), offset) for offset in range(3)]
    real_poll = worker.source.poll

    def poll(limit: int | None = None) -> list[Message]:
        polls.append(worker.in_flight is None)
        if not consumer.queue:
            worker.stop.set()
        return real_poll(limit)

    worker.source.poll = poll  # type: ignore[method-assign]
    worker.source.subscribe = lambda: None  # type: ignore[method-assign]
    worker.run()
    assert len(publisher.transactions) == 3 and all(polls)
