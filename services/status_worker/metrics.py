"""Prometheus metrics of the worker (served on WORKER_METRICS_PORT)."""

from prometheus_client import Counter, Gauge, Histogram

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
    "Time to publish a batch's outcomes and commit its offsets in one Kafka transaction",
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
