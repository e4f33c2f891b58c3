"""Configuration from environment variables, with defaults for the local stack."""

from __future__ import annotations

from functools import cached_property

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.topics import Topics

DEV_JWT_SECRET = "dev-only-secret-change-me-0123456789abcdef"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    environment: str = Field(
        "dev", description="dev | test | prod; prod refuses the dev JWT secret"
    )

    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    kafka_topic_prefix: str = "order-status"
    kafka_command_partitions: int = 12
    kafka_replication_factor: int = 1

    database_url: str = "postgresql://orderstatus:orderstatus@127.0.0.1:55432/orderstatus"
    database_admin_url: str | None = Field(
        None, description="Used for migrations; defaults to DATABASE_URL."
    )

    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    jwt_audience: str = "authenticated"
    jwt_issuer: str | None = None

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_reply_timeout_s: float = 5.0
    api_publish_timeout_s: float = 2.0

    worker_id: str = Field("1", description="Stable per worker slot: names the transactional.id")
    worker_group_id: str = "order-status-worker"
    worker_metrics_port: int = 9101
    worker_batch_max: int = 500
    worker_static_membership: bool = True
    worker_session_timeout_ms: int = 10_000
    worker_transaction_timeout_ms: int = 10_000

    sentry_dsn: str | None = None
    log_level: str = "INFO"

    @cached_property
    def topics(self) -> Topics:
        return Topics.with_prefix(self.kafka_topic_prefix)

    @property
    def admin_url(self) -> str:
        return self.database_admin_url or self.database_url
