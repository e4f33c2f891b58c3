"""The Kafka ACLs of the system (issue 11): what each principal may do, derived from the settings'
topic prefix and group ids, and created or removed through the Admin API. The broker runs
StandardAuthorizer with allow.everyone.if.no.acl.found=false, so anything not granted here is
refused; the operator is the super user and needs no ACL. docs/security.md lists the same table."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

# Where they are defined: confluent_kafka.admin re-exports them only implicitly (mypy --strict).
from confluent_kafka.admin._acl import AclBinding, AclBindingFilter, AclOperation, AclPermissionType
from confluent_kafka.admin._resource import ResourcePatternType, ResourceType

from services.adapters import kafka_config
from services.adapters.kafka_principals import Role, principal_name
from services.adapters.settings import Settings

log = logging.getLogger(__name__)

Op = AclOperation
LITERAL = ResourcePatternType.LITERAL
PREFIXED = ResourcePatternType.PREFIXED
CLUSTER = "kafka-cluster"
API_GROUP_PREFIX = "command-api-"
"""The API's consumers (results, SSE hub) take random group ids under this prefix; they only
assign partitions, never join or commit."""


@dataclass(frozen=True)
class Grant:
    """One row of the table: `role` may do `operations` on the resource."""

    role: Role
    resource: ResourceType
    name: str
    operations: tuple[AclOperation, ...]
    pattern: ResourcePatternType = LITERAL
    shared: bool = False
    """Not scoped to one topic prefix (the cluster, the API's groups): kept when one prefix's ACLs
    are removed, because every prefix on the broker relies on it."""

    def bindings(self) -> list[AclBinding]:
        return [
            AclBinding(
                self.resource,
                self.name,
                self.pattern,
                f"User:{principal_name(self.role)}",
                "*",
                operation,
                AclPermissionType.ALLOW,
            )
            for operation in self.operations
        ]


def _topic(role: Role, name: str, *operations: AclOperation) -> Grant:
    return Grant(role, ResourceType.TOPIC, name, (*operations, Op.DESCRIBE))


def _idempotent(role: Role) -> Grant:
    return Grant(role, ResourceType.BROKER, CLUSTER, (Op.IDEMPOTENT_WRITE,), shared=True)


def grants(settings: Settings) -> list[Grant]:
    """Least privilege per process: only the API writes commands and reads results; only workers
    read commands and write results, events and dead letters; downstream readers read events."""
    t = settings.topics
    figures = f"{settings.kafka_topic_prefix}.figures"
    group, txn = ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID
    return [
        _topic(Role.API, t.commands, Op.WRITE),
        _topic(Role.API, t.results, Op.READ),
        _topic(Role.API, t.events, Op.READ),
        Grant(Role.API, group, API_GROUP_PREFIX, (Op.READ,), PREFIXED, shared=True),
        _idempotent(Role.API),
        _topic(Role.WORKER, t.commands, Op.READ),
        _topic(Role.WORKER, t.results, Op.WRITE),
        _topic(Role.WORKER, t.events, Op.WRITE),
        _topic(Role.WORKER, t.dead_letters, Op.WRITE),
        Grant(Role.WORKER, group, settings.worker_group_id, (Op.READ,)),
        Grant(Role.WORKER, txn, f"{settings.worker_group_id}.", (Op.WRITE, Op.DESCRIBE), PREFIXED),
        _idempotent(Role.WORKER),
        _topic(Role.NOTIFIER, t.events, Op.READ),
        Grant(Role.NOTIFIER, group, settings.notifier_group_id, (Op.READ,)),
        _topic(Role.FIGURES, t.events, Op.READ),
        _topic(Role.FIGURES, t.results, Op.READ),
        # faust: its group, transactional ids and changelog topics all start with its app id.
        Grant(Role.FIGURES, ResourceType.TOPIC, figures, (Op.ALL,), PREFIXED),
        Grant(Role.FIGURES, group, figures, (Op.READ,), PREFIXED),
        Grant(Role.FIGURES, txn, figures, (Op.WRITE, Op.DESCRIBE), PREFIXED),
        _idempotent(Role.FIGURES),
    ]


def bindings(chosen: Iterable[Grant]) -> list[AclBinding]:
    return [binding for grant in chosen for binding in grant.bindings()]


def apply_acls(settings: Settings, timeout: float = 30.0) -> int:
    """Creates every ACL of `settings` (creating one that exists is a no-op), connecting as the
    settings' principal (the operator); returns how many."""
    wanted = bindings(grants(settings))
    admin = AdminClient(kafka_config.acl_admin(settings))
    for future in admin.create_acls(wanted, request_timeout=timeout).values():
        future.result()
    _wait_until_in_force(admin, wanted, timeout)
    log.info("kafka acls applied", extra={"evt": "kafka_acls_applied", "acls": len(wanted)})
    return len(wanted)


# None matches any name, principal and host (confluent-kafka's documented filter; its hints say str).
ANY_ACL = AclBindingFilter(
    ResourceType.ANY,
    None,  # type: ignore[arg-type]
    ResourcePatternType.ANY,
    None,  # type: ignore[arg-type]
    None,  # type: ignore[arg-type]
    AclOperation.ANY,
    AclPermissionType.ANY,
)


def _wait_until_in_force(admin: AdminClient, wanted: list[AclBinding], timeout: float) -> None:
    """create_acls returns once the controller has them; the broker authorizes with its own copy,
    a moment later (a client started at once was refused, seen in tests). The broker answers
    DescribeAcls from that copy: wait until it lists every one."""
    deadline = time.monotonic() + timeout
    while True:
        described = admin.describe_acls(ANY_ACL, request_timeout=timeout).result()
        if set(wanted) <= set(described):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(set(wanted) - set(described))} ACLs not in force")
        time.sleep(0.1)


def remove_acls(settings: Settings, timeout: float = 30.0) -> int:
    """Deletes the ACLs scoped to the settings' topic prefix and groups (not the shared ones, which
    other prefixes on the same broker use too); returns how many the broker deleted."""
    filters = [_exact_filter(b) for b in bindings(g for g in grants(settings) if not g.shared)]
    admin = AdminClient(kafka_config.acl_admin(settings))
    deleted = 0
    for future in admin.delete_acls(filters, request_timeout=timeout).values():
        try:
            deleted += len(future.result())
        except KafkaException:
            log.warning("could not delete a kafka acl", exc_info=True)
    return deleted


def _exact_filter(binding: AclBinding) -> AclBindingFilter:
    return AclBindingFilter(
        binding.restype,
        binding.name,
        binding.resource_pattern_type,
        binding.principal,
        binding.host,
        binding.operation,
        binding.permission_type,
    )
