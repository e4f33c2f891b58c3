"""Pure judgement of what `orderstatus doctor` measured, against the runbook's thresholds.
No I/O here: each function takes numbers and returns a verdict with a one-line reason."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from services.adapters.command_signing import signing_refusal
from services.adapters.kafka_principals import is_dev_password
from services.adapters.settings import (
    DEV_JWT_SECRET,
    Settings,
    dev_secret_refusal,
    is_local_environment,
)
from services.observability.kafka_lag import PartitionLag
from services.observability.slis import Sli


class Verdict(StrEnum):
    OK = "ok"
    INFO = "info"
    """Measured and shown, with no threshold to judge it by (or too little traffic to judge)."""
    WARN = "warn"
    FAIL = "fail"

    @property
    def rank(self) -> int:
        return _RANKS[self]


_RANKS = {Verdict.OK: 0, Verdict.INFO: 0, Verdict.WARN: 1, Verdict.FAIL: 2}


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    return max(verdicts, key=lambda v: v.rank, default=Verdict.OK)


@dataclass(frozen=True, slots=True)
class Judged:
    verdict: Verdict
    summary: str


# ---- thresholds the runbook does not give (its own are in services/observability/slis.py) ----

MIN_PATCHES_TO_JUDGE = 50
"""Fewer PATCH requests than this in the window: one conflict among 20 is no 'sustained 5 %'."""
LAG_WARN = 1_000
LAG_FAIL = 10_000
SLOW_STATEMENT_MS = 100.0
"""A statement on the order tables averaging more than this eats a third of the 300 ms budget."""
SLOW_ACCESS_MS = 1_000.0
"""An order-table statement averaging this much is the 'database load/contention' of scenario 4."""
EXPECTED_INDEXES = {
    "orders": ("orders_status_created_idx",),
    "order_status_events": ("order_status_events_created_idx",),
}


def judge_sli(sli: Sli, value: float | None, patches: float) -> Judged:
    """A ratio or quantile SLI over the window; `patches` is the PATCH /status volume in it."""
    if value is None or value != value:  # None or NaN: no request of that kind in the window
        return Judged(Verdict.INFO, "no traffic in the window")
    shown = f"{sli.describe(value)} (objective {sli.objective_text()})"
    if patches < MIN_PATCHES_TO_JUDGE:
        return Judged(
            Verdict.INFO,
            f"{shown}; only {patches:.0f} PATCH requests, {MIN_PATCHES_TO_JUDGE} needed to judge",
        )
    return Judged(Verdict.OK if sli.met(value) else Verdict.FAIL, shown)


def judge_server_errors(errors: float, value: float | None, objective_text: str) -> Judged:
    """The runbook: any 5xx is critical, whatever the ratio."""
    ratio = "no traffic" if value is None or value != value else f"{value * 100:.3f} % ok"
    if errors > 0:
        return Judged(Verdict.FAIL, f"{errors:.0f} 5xx answers in the window ({ratio})")
    return Judged(Verdict.OK, f"no 5xx ({ratio}, objective {objective_text})")


def judge_lag(
    before: Sequence[PartitionLag], after: Sequence[PartitionLag], seconds: float
) -> Judged:
    """Two samples `seconds` apart: waiting commands are fine while the group makes progress."""
    total = sum(p.lag for p in after)
    if total == 0:
        return Judged(Verdict.OK, "no command waiting")
    committed_before = {p.partition: _offset(p) for p in before}
    progressed = any(_offset(p) > committed_before.get(p.partition, -1) for p in after)
    waiting = sorted((p for p in after if p.lag), key=lambda p: -p.lag)
    where = ", ".join(f"p{p.partition}={p.lag}" for p in waiting[:6])
    if not progressed:
        return Judged(
            Verdict.FAIL,
            f"{total} commands waiting and none processed in {seconds:g} s ({where}): "
            "is the worker running?",
        )
    if total >= LAG_FAIL:
        return Judged(Verdict.FAIL, f"{total} commands waiting ({where})")
    if total >= LAG_WARN:
        return Judged(Verdict.WARN, f"{total} commands waiting ({where})")
    return Judged(Verdict.OK, f"{total} commands in flight, being processed")


def _offset(lag: PartitionLag) -> int:
    return lag.committed if lag.committed is not None else -1


def judge_dead_letters(depth: int) -> Judged:
    if depth == 0:
        return Judged(Verdict.OK, "dead-letter topic empty")
    return Judged(Verdict.WARN, f"{depth} commands parked in the dead-letter topic")


def judge_indexes(present: Iterable[tuple[str, str]]) -> Judged:
    """`present`: (table, index) pairs found in pg_indexes."""
    have = set(present)
    missing = [
        f"{table}.{index}"
        for table, indexes in EXPECTED_INDEXES.items()
        for index in indexes
        if (table, index) not in have
    ]
    if missing:
        return Judged(Verdict.FAIL, f"missing: {', '.join(missing)}")
    return Judged(
        Verdict.OK, f"{sum(map(len, EXPECTED_INDEXES.values()))} expected indexes present"
    )


PARTITIONS_AHEAD_WARN_DAYS = 3
"""Fewer whole days of partitions ahead than this: the daily maintenance has stopped running."""


def judge_partitions(ahead: dict[str, int], default_rows: dict[str, int]) -> Judged:
    """`ahead`: days after today covered by daily partitions, per table (-1: not even today);
    `default_rows`: how many rows each default partition holds."""
    if not ahead:
        return Judged(Verdict.FAIL, "no partitioned tables (migration 0015 not applied?)")
    uncovered = sorted(table for table, days in ahead.items() if days < 0)
    if uncovered:
        return Judged(
            Verdict.FAIL,
            f"no partition for today: {', '.join(uncovered)} insert into the default partition "
            "(orderstatus partitions maintain)",
        )
    short = sorted(table for table, days in ahead.items() if days < PARTITIONS_AHEAD_WARN_DAYS)
    if short:
        return Judged(
            Verdict.WARN,
            f"fewer than {PARTITIONS_AHEAD_WARN_DAYS} days of partitions ahead: {', '.join(short)} "
            "(is `orderstatus partitions maintain` / the purge running?)",
        )
    caught = sorted(table for table, rows in default_rows.items() if rows >= 1)
    if caught:
        return Judged(
            Verdict.WARN,
            f"default partition holds rows: {', '.join(caught)} (a key outside the daily "
            "partitions; `orderstatus partitions maintain` moves them when their day is created)",
        )
    return Judged(Verdict.OK, f"{min(ahead.values())} days of partitions ahead")


def judge_statements(installed: bool, mean_ms: Sequence[float]) -> Judged:
    if not installed:
        return Judged(
            Verdict.WARN,
            "pg_stat_statements not installed in this database "
            "(as a superuser: CREATE EXTENSION pg_stat_statements)",
        )
    slowest = max(mean_ms, default=0.0)
    if slowest >= SLOW_ACCESS_MS:
        return Judged(Verdict.FAIL, f"an order-table statement averages {slowest:.0f} ms")
    if slowest >= SLOW_STATEMENT_MS:
        return Judged(Verdict.WARN, f"an order-table statement averages {slowest:.0f} ms")
    return Judged(Verdict.OK, f"slowest order-table statement averages {slowest:.2f} ms")


def judge_config(settings: Settings) -> Judged:
    """The dev-secret and signing-key rules are the API's own (dev_secret_refusal,
    signing_refusal): doctor fails exactly where the API would refuse to start."""
    environment = settings.environment
    relaxed = is_local_environment(environment)
    default_jwt_secret = settings.jwt_secret.get_secret_value() == DEV_JWT_SECRET
    problems: list[tuple[Verdict, str]] = []
    refusal = dev_secret_refusal(settings)
    if refusal is not None:
        problems.append((Verdict.FAIL, refusal))
    unsigned = signing_refusal(settings)  # the API and the worker refuse to start on it too
    if unsigned is not None:
        problems.append((Verdict.FAIL, unsigned))
    if not settings.sentry_dsn:
        problems.append(
            (
                Verdict.OK if relaxed else Verdict.WARN,
                f"SENTRY_DSN unset (Sentry off in {environment!r})",
            )
        )
    verdict = worst(v for v, _ in problems)
    notes = [text for _, text in problems]
    if default_jwt_secret and refusal is None:
        notes.append(f"dev JWT secret (allowed in {environment})")
    return Judged(verdict, "; ".join(notes) or f"SENTRY_DSN set, JWT secret set ({environment})")


def judge_reachable(component: str, error: str | None, *, required: bool = True) -> Judged:
    if error is None:
        return Judged(Verdict.OK, "reachable")
    return Judged(Verdict.FAIL if required else Verdict.WARN, f"{component} unreachable: {error}")


def judge_targets(targets: Sequence[tuple[str, str, bool]]) -> Judged:
    """(job, instance, up) of the services' scrape targets."""
    if not targets:
        return Judged(Verdict.WARN, "Prometheus has no command-api/status-worker target")
    down = [f"{job} {instance}" for job, instance, up in targets if not up]
    if down:
        return Judged(Verdict.FAIL, f"down: {', '.join(down)}")
    return Judged(Verdict.OK, f"{len(targets)} targets up")


# ---- issue 11: the Kafka security mode --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerSecurity:
    """What the broker says of itself (its configs, as the operator may describe them)."""

    listener_protocols: dict[str, str]
    """listener name -> security protocol (listener.security.protocol.map)."""
    authorizer: str
    """authorizer.class.name, '' when none (every authenticated principal may do anything)."""


def judge_kafka_security(settings: Settings, broker: BrokerSecurity | None) -> Judged:
    """Plaintext without SASL outside a local environment fails: anyone who reaches the broker
    could write commands (issue 11). So do the public dev passwords and a broker without ACLs."""
    protocol = settings.kafka_security_protocol
    local = is_local_environment(settings.environment)
    strict = Verdict.OK if local else Verdict.FAIL
    problems: list[tuple[Verdict, str]] = []
    client: str = protocol
    if protocol.startswith("SASL_"):
        client = f"{protocol}/{settings.kafka_sasl_mechanism} as {settings.kafka_sasl_username}"
        password = settings.kafka_sasl_password
        if password and is_dev_password(settings.kafka_sasl_username, password.get_secret_value()):
            problems.append((strict, "the public dev Kafka password"))
        if protocol == "SASL_PLAINTEXT" and not local:
            problems.append((Verdict.WARN, "SASL without TLS: the traffic is readable on the wire"))
    elif protocol == "PLAINTEXT":
        problems.append((strict, "plaintext without SASL: any client that reaches it may write"))
    notes = [f"client {client}"]
    if broker is not None:
        listeners = ", ".join(f"{n}:{p}" for n, p in sorted(broker.listener_protocols.items()))
        notes.append(
            f"broker {listeners}; authorizer {broker.authorizer.rsplit('.', 1)[-1] or '-'}"
        )
        if not broker.authorizer:
            problems.append((strict, "no authorizer: no ACLs apply"))
    verdict = worst(v for v, _ in problems)
    flagged = [text for v, text in problems if v is not Verdict.OK]
    note = "; ".join(notes)
    return Judged(verdict, f"{note} ({'; '.join(flagged)})" if flagged else note)
