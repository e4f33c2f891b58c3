"""Wiring of the status worker process: `orderstatus worker`. The composition root: every Kafka
client, the database and the steps are built here and injected."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from datetime import timedelta
from types import FrameType

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from prometheus_client import start_http_server

from services.adapters import kafka_config
from services.adapters.command_signing import signing_keys, signing_refusal
from services.adapters.jsonlog import configure_logging
from services.adapters.kafka_admin import ensure_topics
from services.adapters.settings import Settings
from services.observability.kafka_lag import offsets_reader
from services.observability.sentry import init_sentry
from services.status_worker import faults, metrics
from services.status_worker.db import WorkerDatabase
from services.status_worker.guards import (
    DeadLetterGuard,
    DeadLetterGuardStillTripped,
    DeadLetterRatioExceeded,
)
from services.status_worker.kafka import (
    RESTART_EXIT_CODE,
    STUCK_GRACE_S,
    SlotFencer,
    TransactionalPublisher,
)
from services.status_worker.outputs import Destinations
from services.status_worker.pipeline import StatusWorker
from services.status_worker.source import CommandSource, RewindFailed
from services.status_worker.steps import Apply, ApplyStep, GuardStep, Publish, PublishStep

log = logging.getLogger(__name__)

GUARD_EXIT_CODE = 3


def build_worker(
    settings: Settings,
    consumer: Consumer,
    producer: Producer,
    database: WorkerDatabase,
    stop: threading.Event,
) -> tuple[StatusWorker, CommandSource]:
    """The pipeline over the given clients; with WORKER_FAULT set, its test faults wrapped in."""
    plan = faults.FaultPlan(settings) if settings.worker_fault else None
    publisher_type = faults.FaultyPublisher if plan else TransactionalPublisher
    publisher = publisher_type(
        producer,
        consumer,
        # Past transaction.timeout.ms the coordinator aborts the transaction anyway: a call still
        # blocked a little later is stuck, not slow.
        stuck_after_s=settings.worker_transaction_timeout_ms / 1000 + STUCK_GRACE_S,
    )
    if isinstance(publisher, faults.FaultyPublisher) and plan:
        publisher.plan = plan
    source = CommandSource(consumer, settings.topics.commands, settings.worker_batch_max)
    fence = settings.worker_fence_departed_slots and settings.worker_static_membership
    source.after_assign = OnAssignment(publisher, slot_fencer(settings) if fence else None)
    database_step = ApplyStep(database)
    apply: Apply = database_step
    publish: Publish = PublishStep(publisher, source)
    if plan:
        apply, publish = faults.FaultyApply(apply, plan), faults.FaultyPublish(publish, plan)
    guard = GuardStep(
        DeadLetterGuard(settings.worker_dead_letter_window, settings.worker_dead_letter_max_ratio),
        database.guard_trips(settings.worker_group_id, settings.worker_id),
    )
    results = settings.topics.results
    destinations = Destinations(
        settings.topics, publisher.partitions_of(results), signing_keys(settings)
    )
    worker = StatusWorker(
        source,
        apply,
        database_step,
        guard,
        publish,
        destinations,
        stop,
        pipelined=settings.worker_pipelined,
    )
    return worker, source


class OnAssignment:
    """What a worker does when given partitions, before it fetches from them. The first time: its
    producer's init_transactions, which fences its own slot's predecessor (aborting what that one
    left open). Only then, once a member of the group: a survivor fences the slots that are not
    members, so it never fences this worker's new producer. Each time: the slots that left the
    group since the last assignment are fenced (kafka.SlotFencer; docs/instances.md)."""

    def __init__(self, publisher: TransactionalPublisher, fencer: SlotFencer | None) -> None:
        self.publisher = publisher
        self.fencer = fencer
        self.initialized = False

    def __call__(self) -> None:
        if not self.initialized:
            self.publisher.init()
            self.initialized = True
        if self.fencer is not None:
            self.fencer.after_assignment()


def slot_fencer(settings: Settings) -> SlotFencer:
    """Slots are named alike in the group (group.instance.id) and as transactional ids."""
    producer = kafka_config.worker_producer(settings)
    return SlotFencer(
        AdminClient(kafka_config.admin(settings)),
        settings.worker_group_id,
        producer["transactional.id"],
        {key: value for key, value in producer.items() if key != "transactional.id"},
    )


def run(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    configure_logging("status-worker", settings.log_level)
    refusal = signing_refusal(settings)
    if refusal is not None:
        raise SystemExit(f"orderstatus worker: refusing to start: {refusal}")
    init_sentry(settings, "status-worker")
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("stop requested", extra={"evt": "worker_stopping", "signal": signum})
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    ensure_topics(settings)
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host)
    consumer = Consumer(kafka_config.worker_consumer(settings))
    producer = Producer(kafka_config.worker_producer(settings))
    database = WorkerDatabase(
        settings.database_url, timedelta(seconds=settings.worker_inbox_lookback_s)
    )
    worker, source = build_worker(settings, consumer, producer, database, stop)
    log.info(
        "status worker started", extra={"evt": "worker_started", "worker_id": settings.worker_id}
    )
    lag_monitor = metrics.LagMonitor(settings, lambda: source.assigned, offsets_reader(settings))
    lag_monitor.start()
    try:
        _run_until_stopped(worker)
    finally:
        # Leaving the group hands our partitions over at once; every finished batch is committed.
        lag_monitor.stop()
        consumer.close()
        with contextlib.suppress(KafkaException):  # a producer in a fatal state cannot flush
            producer.flush(10)
        database.reset()
        log.info("status worker stopped", extra={"evt": "worker_stopped"})


def _run_until_stopped(worker: StatusWorker) -> None:
    """Runs the worker; turns the ways it can end into exit statuses for its supervisor."""
    try:
        worker.run()
    except DeadLetterGuardStillTripped as exc:
        log.critical(
            f"dead-letter guard {exc}; reset it with `orderstatus worker-ops reset-guard`",
            extra={"evt": "dead_letter_guard_still_tripped"},
        )
        raise SystemExit(GUARD_EXIT_CODE) from exc
    except DeadLetterRatioExceeded as exc:
        log.critical(str(exc), extra={"evt": "dead_letter_guard_tripped"})
        raise SystemExit(GUARD_EXIT_CODE) from exc
    except (KafkaException, RewindFailed) as exc:
        # A fatal client state (e.g. INVALID_TXN_STATE after a broker restart) cannot be repaired
        # in place; a restarted worker fences it, and the inbox makes the redone batch harmless.
        log.critical(
            "fatal Kafka error: exiting for a restart",
            extra={"evt": "kafka_fatal_error", "error": str(exc)},
        )
        raise SystemExit(RESTART_EXIT_CODE) from exc
