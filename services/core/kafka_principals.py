"""The Kafka principals of the system (SASL/SCRAM-SHA-512 users, issue 11) and their local
passwords. Same rule as deploy/local/kafka-credentials.sh: role R logs in as `orderstatus-R` with
$KAFKA_PASSWORD_<R>, else a public dev password that only a local stack may use (like the dev JWT
secret: docs/security.md)."""

from __future__ import annotations

import os
from enum import StrEnum


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


def local_password(role: Role) -> str:
    """$KAFKA_PASSWORD_<ROLE>, else the public dev password of the local stack."""
    return os.environ.get(f"KAFKA_PASSWORD_{role.value.upper()}") or (
        f"orderstatus-{role.value}-dev-password"
    )
