"""Kafka client configurations, built in one place: every setting that makes a client wait on the
request path is here, beside why it has the value it has.

librdkafka's defaults favour throughput and a quiet broker; on the API's request path each default
wait is paid by one HTTP answer, so these builders tune for latency (issue 9):
- `linger.ms` (alias `queue.buffering.max.ms`): how long the producer holds a record to batch it.
  0 sends it at once; under load records still batch while a request is in flight.
- `retry.backoff.ms`: the first wait before any retried request (exponential up to
  `retry.backoff.max.ms`), so a short first backoff costs little under broker restarts.
- `fetch.wait.max.ms`: how long the broker holds an empty fetch; a fetch returns as soon as data
  arrives, so this only bounds idle polling.
- `socket.nagle.disable` (librdkafka's default: false): with Nagle on, a small request written
  while an earlier one is unacknowledged waits for the peer's delayed ACK. Measured on this machine
  (idle PATCH, one terminal, worker at its own settings): p50 96-103 ms before, 20-31 ms with
  these builders, and the gain is this setting (linger.ms 0 saves ~1 ms on the publish step,
  retry.backoff.ms changed nothing at idle).

Every client of the project (API, worker, notifier, figures, the CLI's tools, tests and benchmarks)
gets its configuration here, built from `Settings`, so the broker's security settings (issue 11:
`KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_*`, `KAFKA_SSL_*`) reach every one of them from `_client`.
Values that are not about latency keep the reason they have beside them."""

from __future__ import annotations

import ssl
import uuid
from typing import TYPE_CHECKING, Any

from services.adapters.settings import Settings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

Config = dict[str, Any]

NAGLE_OFF: Config = {"socket.nagle.disable": True}
"""The request path's clients (see above) and the notifier, whose offset commit and next fetch are
small requests written back to back, which Nagle would hold for the broker's delayed ACK."""


# ---- what every client shares: where the brokers are and how it proves who it is ------------------


def _client(settings: Settings, client_id: str | None = None) -> Config:
    config: Config = {"bootstrap.servers": settings.kafka_bootstrap_servers}
    if client_id is not None:
        config["client.id"] = client_id
    return {**config, **security(settings)}


def security(settings: Settings) -> Config:
    """librdkafka's security settings; none at all for PLAINTEXT (librdkafka's default), and the
    SASL or TLS ones only for the protocols that use them."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    config: Config = {"security.protocol": protocol}
    if protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None  # Settings refuses SASL without one
        config |= {
            "sasl.mechanisms": settings.kafka_sasl_mechanism,
            "sasl.username": settings.kafka_sasl_username,
            "sasl.password": settings.kafka_sasl_password.get_secret_value(),
        }
    if protocol.endswith("SSL"):
        files = {
            "ssl.ca.location": settings.kafka_ssl_ca_location,
            "ssl.certificate.location": settings.kafka_ssl_certificate_location,
            "ssl.key.location": settings.kafka_ssl_key_location,
        }
        config |= {key: path for key, path in files.items() if path}
    return config


def admin(settings: Settings) -> Config:
    """An AdminClient's: topics created and deleted, metadata read."""
    return _client(settings)


def acl_admin(settings: Settings) -> Config:
    """`orderstatus kafka-acls`' AdminClient: librdkafka's info lines (e.g. BGQUEUE "Purging
    unserved events" at exit) left out, they were the one stray line in `make up`'s output;
    notices, warnings and errors still print."""
    return {**_client(settings), "log_level": 5}


def client(settings: Settings) -> Config:
    """The bare connection, for tests and benchmarks that set their own producer knobs (a POS
    integration's producer, a buggy client's): the security settings still come from here."""
    return _client(settings)


# ---- the API's request path ---------------------------------------------------------------------


def _api_latency(settings: Settings) -> Config:
    backoff = settings.api_kafka_retry_backoff_ms
    return {
        "retry.backoff.ms": backoff,
        "retry.backoff.max.ms": max(backoff, settings.api_kafka_retry_backoff_max_ms),
    }


def api_producer(settings: Settings) -> Config:
    """Commands: idempotent, acknowledged by all in-sync replicas, within the publish timeout."""
    publish_ms = int(settings.api_publish_timeout_s * 1000)
    return {
        **_client(settings, "command-api"),
        **NAGLE_OFF,
        **_api_latency(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": settings.api_linger_ms,
        "message.timeout.ms": publish_ms,
        "socket.connection.setup.timeout.ms": publish_ms,
    }


def api_results_consumer(settings: Settings) -> Config:
    """Results: assigned, never joined or committed; only committed transactions' results."""
    return {
        **assign_only_reader(settings, "command-api-results"),
        **_api_latency(settings),
        "fetch.wait.max.ms": settings.api_fetch_wait_max_ms,
    }


def assign_only_reader(
    settings: Settings, client_id: str, *, committed_only: bool = True
) -> Config:
    """A consumer that assigns partitions itself: a group id of its own that it never joins."""
    return {
        **_client(settings, client_id),
        **NAGLE_OFF,
        "group.id": f"{client_id}-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed" if committed_only else "read_uncommitted",
    }


def event_stream_reader(settings: Settings, purpose: str) -> Config:
    """The API's live event hub and its catch-up readers (command_api/event_hub.py): assigned,
    never committed; a short fetch wait so a live event reaches the open streams at once."""
    return {
        **_client(settings, f"command-api-{purpose}"),
        "group.id": f"command-api-{purpose}-{uuid.uuid4()}",  # assign only, never committed
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "fetch.wait.max.ms": 10,
    }


# ---- the worker -----------------------------------------------------------------------------------


def worker_consumer(settings: Settings) -> Config:
    config: Config = {
        **_client(settings, f"status-worker-{settings.worker_id}"),
        "group.id": settings.worker_group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": settings.worker_session_timeout_ms,
        "heartbeat.interval.ms": max(1000, settings.worker_session_timeout_ms // 3),
        "fetch.wait.max.ms": settings.worker_fetch_wait_max_ms,
        # The per-batch check of the committed offsets waits for stable offsets and retries with
        # this backoff while the previous transaction's commit is being completed.
        **_worker_retry_backoff(settings),
    }
    if settings.worker_static_membership:
        # A restarted worker (same WORKER_ID) takes its partitions back at once, with no rebalance.
        config["group.instance.id"] = f"{settings.worker_group_id}.{settings.worker_id}"
    return config


def worker_producer(settings: Settings) -> Config:
    return {
        **_client(settings, f"status-worker-{settings.worker_id}"),
        # Stable per worker slot: a restarted worker fences and aborts its predecessor's open
        # transaction at once instead of leaving it to block read_committed readers until timeout.
        "transactional.id": f"{settings.worker_group_id}.{settings.worker_id}",
        "transaction.timeout.ms": settings.worker_transaction_timeout_ms,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 1,
        # The coordinator answers CONCURRENT_TRANSACTIONS to a new transaction while the
        # previous one's markers are written: each such answer costs one retry backoff.
        **_worker_retry_backoff(settings),
    }


def _worker_retry_backoff(settings: Settings) -> Config:
    """The retry backoff of both worker clients. (socket.nagle.disable was measured too: no
    difference for the worker, whose transaction is a chain of request-response calls.)"""
    backoff = settings.worker_kafka_retry_backoff_ms
    return {
        "retry.backoff.ms": backoff,
        "retry.backoff.max.ms": max(backoff, settings.worker_kafka_retry_backoff_max_ms),
    }


def worker_offsets_reader(settings: Settings) -> Config:
    """Reads the worker group's committed offsets (lag, doctor) without joining the group."""
    return {
        **_client(settings, f"orderstatus-lag-{uuid.uuid4().hex[:8]}"),
        "group.id": settings.worker_group_id,
        "enable.auto.commit": False,
    }


# ---- downstream of the events topic, and the operators' tools --------------------------------------


def notifier_consumer(settings: Settings) -> Config:
    """Offsets committed by hand, only after the batch's deliveries are in PostgreSQL."""
    return {
        **_client(settings, "notifier"),
        **NAGLE_OFF,
        "group.id": settings.notifier_group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": 10_000,
        "fetch.wait.max.ms": 10,
    }


def tail_reader(settings: Settings) -> Config:
    """`orderstatus tail`: assigns partitions itself, never commits, read_committed."""
    return {
        **_client(settings),
        "group.id": f"orderstatus-tail-{uuid.uuid4().hex[:8]}",  # assigns only, never commits
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    }


def doctor_admin(settings: Settings) -> Config:
    """doctor's and watch's AdminClient: a short socket timeout, so an unreachable broker is
    reported quickly; log_level 4: librdkafka's info lines (e.g. on closing) would clutter the
    report."""
    return {**_client(settings), "socket.timeout.ms": 5000, "log_level": 4}


def replay_producer(settings: Settings) -> Config:
    """`orderstatus dlq replay`: idempotent and acknowledged by all in-sync replicas, like the
    API's producer, without its latency tuning (an operator's batch, not a request)."""
    return {**_client(settings), "enable.idempotence": True, "acks": "all"}


# ---- faust (aiokafka) ------------------------------------------------------------------------------


def faust_brokers(settings: Settings) -> list[str]:
    """The broker URLs as faust takes them."""
    return [f"kafka://{host.strip()}" for host in settings.kafka_bootstrap_servers.split(",")]


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """The same security settings as faust's `broker_credentials`: faust hands them to every
    aiokafka client it builds (consumer, producer, transactional producers) through
    `credentials_to_aiokafka_auth`. SASLCredentials with an SSL context means SASL_SSL."""
    import faust  # only the figures app needs faust: keep it out of every other process

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = tls_context(settings) if protocol.endswith("SSL") else None
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    assert settings.kafka_sasl_password is not None  # Settings refuses SASL without one
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=context,
    )


def tls_context(settings: Settings) -> ssl.SSLContext:
    """The TLS settings as a Python SSL context (aiokafka's form of librdkafka's ssl.*): the brokers'
    CA (or the system's), and the client's certificate when one is set."""
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=settings.kafka_ssl_ca_location or None
    )
    if settings.kafka_ssl_certificate_location:
        context.load_cert_chain(
            settings.kafka_ssl_certificate_location,
            keyfile=settings.kafka_ssl_key_location or None,
        )
    return context
