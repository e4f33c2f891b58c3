"""`orderstatus kafka-acls apply|remove|show`: the broker's ACLs of one topic prefix (issue 11,
services/adapters/kafka_acls.py, docs/security.md), managed as the operator (KAFKA_SASL_USERNAME)."""

from __future__ import annotations

import argparse
from typing import Any

from services.adapters.settings import Settings


def register(commands: Any) -> None:
    acls = commands.add_parser("kafka-acls", help="the Kafka ACLs of each principal (SASL)")
    actions = acls.add_subparsers(dest="action", required=True)
    for name, run, what in (
        ("apply", run_apply, "create the ACLs (idempotent; make up runs it after topics)"),
        ("remove", run_remove, "delete the ACLs of one prefix (not those every prefix shares)"),
        ("show", run_show, "print the ACL table without touching the broker"),
    ):
        action = actions.add_parser(name, help=what)
        action.add_argument("--prefix", help="topic prefix (default: KAFKA_TOPIC_PREFIX)")
        action.set_defaults(run=run)


def _prefixed(settings: Settings, args: argparse.Namespace) -> Settings:
    if args.prefix is None:
        return settings
    return settings.model_copy(update={"kafka_topic_prefix": args.prefix})


def run_apply(settings: Settings, args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaError, KafkaException

    from services.adapters.kafka_acls import apply_acls

    chosen = _prefixed(settings, args)
    try:
        count = apply_acls(chosen)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.SECURITY_DISABLED:
            raise
        # A plaintext local broker (KAFKA_SECURITY=plaintext): nothing is authorized, so no ACLs.
        print("kafka acls: none applied, the broker has no authorizer (KAFKA_SECURITY=plaintext)")
        return 0
    print(f"kafka acls applied: {count} for prefix {chosen.kafka_topic_prefix!r}")
    return 0


def run_remove(settings: Settings, args: argparse.Namespace) -> int:
    from services.adapters.kafka_acls import remove_acls

    chosen = _prefixed(settings, args)
    print(f"kafka acls removed: {remove_acls(chosen)} for prefix {chosen.kafka_topic_prefix!r}")
    return 0


def run_show(settings: Settings, args: argparse.Namespace) -> int:
    from services.adapters.kafka_acls import grants
    from services.adapters.kafka_principals import principal_name

    for grant in grants(_prefixed(settings, args)):
        operations = ", ".join(op.name for op in grant.operations)
        resource = "CLUSTER" if grant.resource.name == "BROKER" else grant.resource.name
        print(
            f"{principal_name(grant.role):22} {resource:16} "
            f"{grant.pattern.name.lower():8} {grant.name:36} {operations}"
        )
    return 0
