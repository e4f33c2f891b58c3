"""Wiring of the status worker process: `orderstatus worker`."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from types import FrameType

from confluent_kafka import Consumer, KafkaException, Producer
from prometheus_client import start_http_server

from services.core.jsonlog import configure_logging
from services.core.kafka_admin import ensure_topics
from services.core.settings import Settings
from services.observability.sentry import init_sentry
from services.status_worker import metrics
from services.status_worker.db import WorkerDatabase
from services.status_worker.guards import DeadLetterRatioExceeded
from services.status_worker.kafka import (
    RESTART_EXIT_CODE,
    STUCK_GRACE_S,
    TransactionalPublisher,
    consumer_config,
    producer_config,
)
from services.status_worker.pipeline import StatusWorker

log = logging.getLogger(__name__)


def run(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    configure_logging("status-worker", settings.log_level)
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
    consumer = Consumer(consumer_config(settings))
    producer = Producer(producer_config(settings))
    publisher = TransactionalPublisher(
        producer,
        consumer,
        # Past transaction.timeout.ms the coordinator aborts the transaction anyway: a call still
        # blocked a little later is stuck, not slow.
        stuck_after_s=settings.worker_transaction_timeout_ms / 1000 + STUCK_GRACE_S,
    )
    publisher.init()
    database = WorkerDatabase(settings.database_url)
    worker = StatusWorker(settings, consumer, publisher, database, stop)
    log.info(
        "status worker started", extra={"evt": "worker_started", "worker_id": settings.worker_id}
    )
    lag_monitor = metrics.LagMonitor(settings, lambda: worker.assigned)
    lag_monitor.start()
    try:
        worker.run()
    except DeadLetterRatioExceeded as exc:
        log.critical(str(exc), extra={"evt": "dead_letter_guard_tripped"})
        raise SystemExit(3) from exc
    except KafkaException as exc:
        # A fatal client state (e.g. INVALID_TXN_STATE after a broker restart) cannot be repaired
        # in place; a restarted worker fences it, and the inbox makes the redone batch harmless.
        log.critical(
            "fatal Kafka error: exiting for a restart",
            extra={"evt": "kafka_fatal_error", "error": str(exc.args[0])},
        )
        raise SystemExit(RESTART_EXIT_CODE) from exc
    finally:
        # Leaving the group hands our partitions over at once; every finished batch is committed.
        lag_monitor.stop()
        consumer.close()
        with contextlib.suppress(KafkaException):  # a producer in a fatal state cannot flush
            producer.flush(10)
        database.reset()
        log.info("status worker stopped", extra={"evt": "worker_stopped"})
