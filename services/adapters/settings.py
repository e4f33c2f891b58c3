"""Configuration from environment variables, with defaults for the local stack."""

from __future__ import annotations

from functools import cached_property
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.topics import Topics

DEV_JWT_SECRET = "dev-only-secret-change-me-0123456789abcdef"

# ---- Where the public dev secret may be used (issue 10): one rule for the API, `token`, doctor ----
LOCAL_ENVIRONMENTS = frozenset({"dev", "test", "local"})
"""Environments that are explicitly local: only these accept DEV_JWT_SECRET or mint tokens.
Exact, lower-case names: anything else (`prod`, `production`, `Prod`, unset) fails closed."""


def is_local_environment(environment: str) -> bool:
    return environment in LOCAL_ENVIRONMENTS


def dev_secret_refusal(settings: Settings) -> str | None:
    """Why these settings must not verify tokens (the public dev secret outside a local
    environment), or None. The API refuses to start on it and doctor fails on it."""
    if settings.jwt_secret.get_secret_value() != DEV_JWT_SECRET:
        return None
    if is_local_environment(settings.environment):
        return None
    return (
        f"JWT_SECRET is the public development JWT secret and ENVIRONMENT={settings.environment!r} "
        f"is not a local environment ({', '.join(sorted(LOCAL_ENVIRONMENTS))}): set a real "
        "JWT_SECRET, or JWT_SECRET= (empty) with JWT_JWKS_URL"
    )


KafkaSecurityProtocol = Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"]


class Settings(BaseSettings):
    # hide_input_in_errors: a validation error must not print the settings (passwords, keys, URLs)
    model_config = SettingsConfigDict(
        env_prefix="", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    environment: str = Field(
        "",
        description="dev | test | local (local stacks, the dev JWT secret allowed) or anything "
        "else (prod, staging...: the dev JWT secret refused). Unset is not local.",
    )

    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    kafka_topic_prefix: str = "order-status"
    kafka_command_partitions: int = 12
    kafka_replication_factor: int = Field(
        1, ge=1, description="Replicas of every project topic: 1 on one broker, 3 on the cluster"
    )
    kafka_min_insync_replicas: int = Field(
        1,
        ge=1,
        description="min.insync.replicas of every project topic: how many replicas must have a "
        "record before an acks=all write is acknowledged (2 on the three-broker cluster)",
    )

    # ---- issue 11: how every Kafka client proves who it is (services/adapters/kafka_config.py) -------
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        "PLAINTEXT",
        description="PLAINTEXT | SASL_PLAINTEXT | SASL_SSL | SSL, for every client of the project "
        "(confluent-kafka and faust alike)",
    )
    kafka_sasl_mechanism: str = Field(
        "SCRAM-SHA-512", description="SASL mechanism when the protocol is SASL_*"
    )
    kafka_sasl_username: str | None = Field(
        None, description="SASL principal; required with SASL_PLAINTEXT and SASL_SSL"
    )
    kafka_sasl_password: SecretStr | None = Field(
        None, description="SASL password; required with SASL_PLAINTEXT and SASL_SSL"
    )
    kafka_ssl_ca_location: str | None = Field(
        None,
        description="PEM file of the CA that signed the brokers' certificates (SSL, SASL_SSL); "
        "unset: the system's CAs",
    )
    kafka_ssl_certificate_location: str | None = Field(
        None, description="PEM client certificate, for brokers that require TLS client auth"
    )
    kafka_ssl_key_location: str | None = Field(
        None, description="PEM private key of KAFKA_SSL_CERTIFICATE_LOCATION"
    )

    database_url: str = Field(
        "postgresql://orderstatus_app:orderstatus_app@127.0.0.1:55432/orderstatus",
        description="The services' login role (orderstatus_app): not the owner, no BYPASSRLS",
    )
    database_admin_url: str | None = Field(
        "postgresql://orderstatus:orderstatus@127.0.0.1:55432/orderstatus",
        description="The owner role: `orderstatus migrate`, `grant` and `revoke`",
    )

    jwt_secret: SecretStr = Field(
        SecretStr(DEV_JWT_SECRET), description="HS256 key; empty turns HS256 tokens off"
    )
    jwt_jwks_url: str | None = Field(
        None, description="JWKS of the RS256/ES256 token issuer, e.g. Supabase's; unset: HS256 only"
    )
    jwt_audience: str = "authenticated"
    jwt_issuer: str | None = None

    # ---- issue 11: signed commands and results (services/adapters/command_signing.py) ----------------
    command_signing_keys: SecretStr = Field(
        SecretStr(""),
        description="kid:base64secret[,kid:base64secret]: HMAC-SHA256 keys (32+ bytes) that sign "
        "commands and results; every one listed is accepted (rotation). Unset: a public dev key "
        "in a local environment, refused elsewhere",
    )
    command_signing_key_id: str = Field(
        "", description="The key id that signs; unset: the first of COMMAND_SIGNING_KEYS"
    )

    # ---- issue 10: JWKS outages, resource bounds, retention (services/command_api/jwks.py,
    # services/command_api/main.py, services/ops/retention.py) -------------------------------------
    jwt_jwks_refresh_s: float = Field(
        300.0, gt=0, description="Age after which the JWKS key set is refreshed in the background"
    )
    jwt_jwks_max_stale_s: float = Field(
        3600.0,
        gt=0,
        description="During a JWKS outage the last good key set serves up to this age, then 503",
    )
    jwt_jwks_unknown_kid_cooldown_s: float = Field(
        30.0,
        ge=0,
        description="At most one JWKS refresh per this for unknown kids / after a failure",
    )
    jwt_jwks_timeout_s: float = Field(2.0, gt=0, description="JWKS fetch timeout")
    api_limit_concurrency: int = Field(
        200, gt=0, description="Connections + tasks uvicorn serves at once; beyond it, 503"
    )
    api_timeout_keep_alive_s: float = Field(
        5.0, gt=0, description="Idle keep-alive connections are closed after this"
    )
    api_header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A connection that has not sent a complete request head within this is closed "
        "(slowloris)",
    )
    retention_outcomes_days: float = Field(
        30.0, gt=0, description="command_outcomes rows older than this are purged"
    )
    retention_refused_days: float = Field(
        8.0,
        gt=0,
        description="Outcomes of refused commands (and their widget_events) are purged sooner",
    )
    retention_widget_events_days: float = Field(
        30.0,
        gt=0,
        description="widget_events rows (refused commands' analytics) older than this are purged",
    )
    retention_purge_every_s: float = Field(
        3600.0, gt=0, description="How often the API process runs the purge (0 rows is cheap)"
    )
    retention_purge_batch: int = Field(
        5000, gt=0, description="Rows deleted per statement, so a purge never holds long locks"
    )

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_reply_timeout_s: float = 5.0
    api_publish_timeout_s: float = 2.0
    api_max_body_bytes: int = Field(16 * 1024, description="Larger request bodies get 413")
    api_max_header_bytes: int = Field(8 * 1024, description="Larger request headers get 431")
    api_event_stream_heartbeat_s: float = Field(
        15.0, gt=0, description="SSE keep-alive (and staff membership re-check) interval"
    )
    api_event_stream_buffer: int = Field(
        1000, ge=1, description="Events queued per SSE stream; a slower client is cut off to resume"
    )
    api_kafka_retry_backoff_ms: int = Field(
        5,
        ge=1,
        description="retry.backoff.ms of the API's producer and results consumer (librdkafka's "
        "default of 100 ms is paid by an HTTP answer whenever a request is retried)",
    )
    api_kafka_retry_backoff_max_ms: int = Field(
        100, ge=1, description="retry.backoff.max.ms: the cap of the exponential retry backoff"
    )
    api_linger_ms: float = Field(
        0, ge=0, description="linger.ms of the API's producer: 0 sends each command at once"
    )
    api_fetch_wait_max_ms: int = Field(
        10, ge=0, description="fetch.wait.max.ms of the results consumer (bounds idle polling)"
    )
    api_stale_refusal: bool = Field(
        True,
        description="Answer 409 before publishing a PATCH whose conflict the committed order settles "
        "(expected_version below the order's, or a final order; docs/delivery-guarantees.md); "
        "off: the worker answers every command",
    )
    api_processes: int = Field(
        1, ge=1, description="Processes of `orderstatus api` (uvicorn workers) on one port"
    )
    api_results_partition: str = Field(
        "all",
        pattern=r"^(all|auto|[0-9]{1,6})$",
        description="The results partition an API process reads: 'all' (every one), 'auto' (a "
        "free one, by PostgreSQL advisory lock) or a number; see command_api/reply_partition.py",
    )

    worker_id: str = Field("1", description="Stable per worker slot: names the transactional.id")
    worker_group_id: str = "order-status-worker"
    worker_metrics_port: int = 9101
    worker_batch_max: int = 500
    worker_static_membership: bool = True
    worker_session_timeout_ms: int = 10_000
    worker_transaction_timeout_ms: int = 10_000
    worker_kafka_retry_backoff_ms: int = Field(
        1,
        ge=1,
        description="retry.backoff.ms of the worker's producer and consumer: how long librdkafka "
        "waits before retrying, e.g. after CONCURRENT_TRANSACTIONS while the previous "
        "transaction's markers are written (librdkafka's default of 100 ms costs every batch), "
        "or while the committed-offset check after a commit meets UNSTABLE_OFFSET_COMMIT (5 ms: "
        "p50 6.7 ms for that check; 1 ms: 2.0 ms, bench/trace.py --transaction)",
    )
    worker_kafka_retry_backoff_max_ms: int = Field(
        100, ge=1, description="retry.backoff.max.ms: the cap of the exponential retry backoff"
    )
    worker_fetch_wait_max_ms: int = Field(
        100, ge=0, description="fetch.wait.max.ms of the worker's consumer (idle polling)"
    )
    worker_pipelined: bool = Field(
        False,
        description="Overlap batch N's Kafka transaction with batch N+1's database work (up to "
        "four batches per poll; the last is settled before the next poll, where rebalances run). "
        "Off until a full `make chaos` passes with it: the last one found batches redone after a "
        "rebalance (docs/delivery-guarantees.md), and the revoke stall found since is fixed",
    )
    worker_dead_letter_window: int = Field(
        200, description="Messages the dead-letter guard looks back over"
    )
    worker_dead_letter_max_ratio: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Above this share of dead letters in the window, the worker stops",
    )
    worker_fault: str = Field(
        "",
        description="Fault injection for tests, at batch N: 'crash_after_db_commit' and "
        "'crash_before_kafka_commit' kill the process there; 'silent_abort' aborts the Kafka "
        "transaction but lets the commit report success; 'false_abort' treats a commit that "
        "went through as failed",
    )
    worker_fault_batch: int = 1

    worker_metrics_host: str = Field("127.0.0.1", description="0.0.0.0 inside containers")
    worker_lag_interval_s: float = Field(5.0, description="How often the worker measures its lag")

    figures_host: str = Field("127.0.0.1", description="0.0.0.0 inside containers")
    figures_port: int = Field(6066, description="The figures app's page, JSON views and /metrics")
    figures_metrics_max_restaurants: int = Field(
        20, ge=1, description="Restaurants with their own metric label; the rest are 'other'"
    )

    notifier_group_id: str = "order-status-notifier"
    notifier_metrics_port: int = 9102
    notifier_metrics_host: str = Field("127.0.0.1", description="0.0.0.0 inside containers")
    notifier_max_in_flight: int = Field(2000, description="Webhook deliveries in flight at once")
    notifier_per_host_connections: int = Field(
        128, description="Connections (and deliveries in flight) per receiving host:port"
    )
    webhook_allowed_cidrs: str = Field(
        "",
        description="Comma-separated CIDRs webhook URLs may resolve to although private, loopback "
        "or reserved (the local stack: 127.0.0.0/8)",
    )
    webhook_retry_schedule_s: str = Field(
        "5,300,1800,7200,18000,36000,36000",
        description="Delays before each retry after the first attempt (Svix-like: about 28 h "
        "and a half); each gets +-20 % jitter; the last one bounds Retry-After",
    )
    webhook_disable_after_s: float = Field(
        5 * 24 * 3600.0, description="An endpoint failing without a success this long is disabled"
    )
    webhook_connect_timeout_s: float = 3.0
    webhook_total_timeout_s: float = Field(10.0, description="One attempt, connect to last byte")
    webhook_max_response_bytes: int = Field(4096, description="Response body read at most")
    webhook_previous_secret_s: float = Field(
        24 * 3600.0, description="After rotate-secret, the old secret still signs this long"
    )

    sentry_dsn: str | None = Field(None, description="Sentry is off when unset")
    sentry_sample_rate: float = Field(1.0, ge=0, le=1, description="Share of errors/messages sent")
    sentry_traces_sample_rate: float = Field(
        0.1, ge=0, le=1, description="Share of new traces sampled; continued traces follow theirs"
    )
    sentry_release: str | None = None
    prometheus_url: str = "http://127.0.0.1:19090"
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _sasl_has_credentials(self) -> Self:
        """A SASL protocol without a principal would fail later, at the first broker call, as an
        authentication timeout: refuse it at start-up with the names of the missing settings."""
        if self.kafka_security_protocol.startswith("SASL_"):
            missing = [
                name
                for name, value in (
                    ("KAFKA_SASL_USERNAME", self.kafka_sasl_username),
                    ("KAFKA_SASL_PASSWORD", self.kafka_sasl_password),
                )
                if not (value.get_secret_value() if isinstance(value, SecretStr) else value)
            ]
            if missing:
                raise ValueError(
                    f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                    f"{' and '.join(missing)}"
                )
        if self.kafka_ssl_key_location and not self.kafka_ssl_certificate_location:
            raise ValueError("KAFKA_SSL_KEY_LOCATION is set without KAFKA_SSL_CERTIFICATE_LOCATION")
        return self

    @cached_property
    def topics(self) -> Topics:
        return Topics.with_prefix(self.kafka_topic_prefix)

    @property
    def admin_url(self) -> str:
        return self.database_admin_url or self.database_url
