"""The Kafka principals of the system (SASL/SCRAM-SHA-512 users, issue 11) and their local
passwords. Same rule as deploy/local/kafka-credentials.sh: role R logs in as `orderstatus-R` with
$KAFKA_PASSWORD_<R>, else a public dev password that only a local stack may use (like the dev JWT
secret: docs/security.md)."""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Any

from pydantic import SecretStr

from services.adapters.settings import Settings


class Role(StrEnum):
    """Who connects: each process kind has its own principal, so the ACLs can tell them apart."""

    OPERATOR = "operator"
    """The super user: the CLI's admin tasks (topics, ACLs, DLQ replay) and the broker itself."""
    API = "api"
    WORKER = "worker"
    NOTIFIER = "notifier"
    FIGURES = "figures"


def principal_name(role: Role) -> str:
    return f"orderstatus-{role.value}"


def dev_password(role: Role) -> str:
    """Public (it is in this repository): fit for a local stack only; doctor fails on it elsewhere."""
    return f"orderstatus-{role.value}-dev-password"


def local_password(role: Role) -> str:
    """$KAFKA_PASSWORD_<ROLE>, else the public dev password of the local stack."""
    return os.environ.get(f"KAFKA_PASSWORD_{role.value.upper()}") or dev_password(role)


def is_dev_password(username: str | None, password: str) -> bool:
    return any(username == principal_name(r) and password == dev_password(r) for r in Role)


PROCESS_ROLES: dict[str, Role] = {
    "api": Role.API,
    "worker": Role.WORKER,
    "notifier": Role.NOTIFIER,
    "figures": Role.FIGURES,
}
"""`orderstatus <kind>` -> the principal that process logs in as."""


def sasl_identity(role: Role) -> dict[str, Any]:
    """Settings (a model_copy update) of a client of `role` on a local broker with SASL."""
    return {
        "kafka_security_protocol": "SASL_PLAINTEXT",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": principal_name(role),
        "kafka_sasl_password": SecretStr(local_password(role)),
    }


def as_principal(settings: Settings, role: Role) -> Settings:
    """`settings` logging in as `role` with its local password (unchanged without SASL): how the
    test stack, chaos and benchmarks start each process with its own credentials."""
    if not settings.kafka_security_protocol.startswith("SASL_"):
        return settings
    identity = sasl_identity(role)
    return settings.model_copy(
        update={k: identity[k] for k in ("kafka_sasl_username", "kafka_sasl_password")}
    )
