"""Prometheus metrics of the worker (served on WORKER_METRICS_PORT), its consumer-lag monitor, and
the Sentry transactions of processed commands."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from confluent_kafka import Consumer, Message
from prometheus_client import Counter, Gauge, Histogram

from services.adapters.settings import Settings
from services.core.messages import Outcome
from services.core.outcomes import OUTCOME_NAMES
from services.observability import sentry
from services.observability.kafka_lag import group_lag
from services.status_worker.batch import Finished

log = logging.getLogger(__name__)

DEAD_LETTER_REASONS = ("oversize", "unauthenticated", "undecodable", "error")

COMMANDS = Counter(
    "orderstatus_worker_commands_total", "Commands given an outcome, by outcome", ["outcome"]
)
DUPLICATES = Counter(
    "orderstatus_worker_duplicate_commands_total",
    "Second copies of already applied commands, answered from the inbox",
)
DEAD_LETTERS = Counter(
    "orderstatus_worker_dead_letters_total", "Messages sent to the dead-letter topic", ["reason"]
)
BATCH_SIZE = Histogram(
    "orderstatus_worker_batch_size",
    "Commands per batch (one DB and one Kafka transaction)",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
)
DB_SECONDS = Histogram(
    "orderstatus_worker_db_seconds",
    "Time to apply a batch in PostgreSQL",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
PUBLISH_SECONDS = Histogram(
    "orderstatus_worker_publish_seconds",
    "Time to publish a batch's outcomes and commit its offsets in one Kafka transaction, and to "
    "check that the commit took effect (on the publisher's thread, beside the next batch's DB work)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
COMMAND_E2E_SECONDS = Histogram(
    "orderstatus_command_e2e_seconds",
    "From the API issuing a command to its outcome being published",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2.5, 5, 10),
)
TRANSACTION_ABORTS = Counter(
    "orderstatus_worker_transaction_aborts_total", "Kafka transactions aborted (batch redone)"
)
DATABASE_UNAVAILABLE = Counter(
    "orderstatus_worker_database_unavailable_total",
    "Times the worker paused its partitions because PostgreSQL was unreachable",
)
ASSIGNED_PARTITIONS = Gauge(
    "orderstatus_worker_assigned_partitions", "Command partitions assigned to this worker"
)
FENCED_SLOTS = Counter(
    "orderstatus_worker_fenced_slots_total",
    "Transactional ids of departed worker slots fenced on a partition assignment (their open "
    "transaction aborted at once instead of at transaction.timeout.ms; docs/instances.md)",
)
CONSUMER_LAG = Gauge(
    "orderstatus_worker_consumer_lag",
    "Commands not yet processed (high watermark - committed offset) on this worker's partitions",
    ["partition"],
)
LAG_MEASURED = Gauge(
    "orderstatus_worker_lag_measured_timestamp_seconds",
    "When this worker last measured its consumer lag (stale = the measuring thread is stuck)",
)

for _names in OUTCOME_NAMES.values():
    COMMANDS.labels(_names.metric)  # every outcome's series exists from the start, at 0
for _reason in DEAD_LETTER_REASONS:
    DEAD_LETTERS.labels(_reason)


class LagMonitor:
    """Measures the lag of the partitions this worker owns every `interval` seconds, on a thread of
    its own with its own consumer, so a slow broker never delays the processing loop."""

    def __init__(
        self,
        settings: Settings,
        assigned: Callable[[], Iterable[tuple[str, int]]],
        reader: Consumer,
    ) -> None:
        self.settings = settings
        self.assigned = assigned
        self.reader = reader
        """Reads the group's committed offsets without joining it; built by main.py, closed here."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        reader = self.reader
        topic = self.settings.topics.commands
        try:
            while not self._stop.wait(self.settings.worker_lag_interval_s):
                try:
                    self.measure(reader, topic)
                except Exception as exc:  # the broker may be away; measure again next time
                    log.warning(
                        "lag not measured", extra={"evt": "lag_unmeasured", "error": str(exc)}
                    )
        finally:
            reader.close()

    def measure(self, reader: Consumer, topic: str) -> None:
        partitions = {p for t, p in self.assigned() if t == topic}
        lags = group_lag(reader, topic, partitions)
        CONSUMER_LAG.clear()
        for lag in lags:
            CONSUMER_LAG.labels(str(lag.partition)).set(lag.lag)
        LAG_MEASURED.set_to_current_time()


def trace_batch(
    messages: Sequence[Message], finished: Sequence[Finished], started: datetime
) -> None:
    """One Sentry transaction per processed command, continuing the trace of the API request that
    sent it (its Kafka headers). No-op without SENTRY_DSN."""
    if not sentry.active():
        return
    headers = {(m.partition(), m.offset()): m.headers() for m in messages}
    for done in finished:
        item, result = done.incoming, done.processed.result
        sentry.trace_command(
            headers.get((item.partition, item.offset)),
            started=started,
            ok=result.outcome is not Outcome.ERROR,
            data={
                "rid": item.command.rid,
                "command_id": str(result.command_id),
                "order_id": str(result.order_id),
                "outcome": result.outcome.value,
                "duplicate": done.duplicate,
                "partition": item.partition,
                "offset": item.offset,
            },
        )
