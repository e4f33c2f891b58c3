"""Real processes of the system for integration and end-to-end tests: an isolated database and
topic prefix per test session, and the API and worker run as the `orderstatus` console script."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import psycopg.sql
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from services.adapters import kafka_config
from services.adapters.kafka_acls import apply_acls, remove_acls
from services.adapters.kafka_admin import ensure_topics
from services.adapters.kafka_principals import PROCESS_ROLES, as_principal
from services.adapters.migrate import apply_migrations
from services.adapters.settings import Settings
from services.adapters.tenancy import grant_staff
from services.command_api.auth import mint_token
from services.core.messages import Role

ORDERSTATUS = str(Path(sys.executable).with_name("orderstatus"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            env.pop(name.upper(), None)
            continue
        env[name.upper()] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    return env


def with_database(url: str, database: str) -> str:
    return psycopg.conninfo.make_conninfo(url, dbname=database)


def drop_database(admin_url: str, name: str, patience_s: float = 15.0) -> None:
    """DROP DATABASE ... WITH (FORCE). The owner may end only its own roles' sessions, so while a
    closed connection of another role (the services' login, a test's PostgREST-like login) is still
    going away server-side, the drop is refused: wait for it rather than leave the database."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(
                    psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        psycopg.sql.Identifier(name)
                    )
                )
            return
        except psycopg.errors.InsufficientPrivilege:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextmanager
def migrated_database(base: Settings) -> Iterator[tuple[str, str]]:
    """A fresh migrated database without Kafka: (app role url, owner url); dropped afterwards."""
    name = f"orderstatus_db_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # name is generated above
    try:
        admin_url = with_database(base.admin_url, name)
        apply_migrations(admin_url)
        yield with_database(base.database_url, name), admin_url
    finally:
        drop_database(base.admin_url, name)


@contextmanager
def isolated_settings(base: Settings, **overrides: Any) -> Iterator[Settings]:
    """A fresh database (migrated) and topic prefix, with the prefix's ACLs when the broker
    authenticates (`base` connects as the operator); all removed afterwards."""
    name = f"t{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "orderstatus_{name}"')  # name is generated above
    url = with_database(base.database_url, f"orderstatus_{name}")
    admin_url = with_database(base.admin_url, f"orderstatus_{name}")
    settings = base.model_copy(
        update={
            "database_url": url,
            "database_admin_url": admin_url,
            "kafka_topic_prefix": f"test-{name}",
            "kafka_command_partitions": 6,
            "worker_group_id": f"test-{name}-worker",
            # A group of its own: a notifier joining or leaving (or killed) elsewhere on the broker
            # would otherwise rebalance this one, stalling its events for seconds.
            "notifier_group_id": f"test-{name}-notifier",
            "api_port": free_port(),
            "environment": "test",
            **overrides,
        }
    )
    apply_migrations(settings.admin_url)
    ensure_topics(settings)
    sasl = settings.kafka_security_protocol.startswith("SASL_")
    if sasl:
        apply_acls(settings)
    try:
        yield settings
    finally:
        topics = settings.topics
        admin = AdminClient(kafka_config.admin(settings))
        for future in admin.delete_topics(
            [topics.commands, topics.results, topics.events, topics.dead_letters]
        ).values():
            with contextlib.suppress(KafkaException):  # already gone: nothing to clean
                future.result()
        if sasl:
            remove_acls(settings)
        drop_database(base.admin_url, f"orderstatus_{name}")


def die_with_parent() -> None:
    """Runs in the child: the kernel kills it if the test process dies, so no service outlives a
    killed or timed-out test run."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


PR_SET_PDEATHSIG = 1


class ServiceProcess:
    """`orderstatus api`, `worker`, `figures` or `notifier` as a child process, logging to a file,
    connecting to Kafka as its own principal when the broker authenticates (the ACLs apply)."""

    def __init__(self, kind: str, settings: Settings, log_dir: Path, **overrides: Any) -> None:
        self.kind = kind
        self.settings = settings.model_copy(update=overrides)
        if kind in PROCESS_ROLES:
            self.settings = as_principal(self.settings, PROCESS_ROLES[kind])
        self.log_path = log_dir / f"{kind}-{self.settings.worker_id}-{uuid.uuid4().hex[:6]}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> ServiceProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv(),
            env=settings_env(self.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        if wait:
            self.wait_ready()
        return self

    def argv(self) -> list[str]:
        return [ORDERSTATUS, self.kind]

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited early:\n{self.logs()[-4000:]}")
            if self._ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.kind} not ready in {timeout}s:\n{self.logs()[-4000:]}")

    def _ready(self) -> bool:
        port = {"api": self.settings.api_port, "figures": self.settings.figures_port}.get(self.kind)
        if port is not None:
            try:
                url = f"http://127.0.0.1:{port}/readyz"
                return httpx.get(url, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        return (
            '"evt": "partitions_assigned"' in self.logs()
            or '"evt":"partitions_assigned"' in self.logs()
        )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 30) -> int:
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> int:
        return self._signal(signal.SIGKILL, 10)

    def _signal(self, sig: int, timeout: float) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        os.killpg(self.process.pid, sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(10)


class Tokens:
    """Tokens for tests, and the staff memberships behind them (docs/security.md).

    `staff(R...)` makes `sub` a member of each R in the database (as the owner) and narrows the
    token to them: one sub may belong to many restaurants while each token acts only for its own.
    `pos(R...)` is a POS integration's service token scoped to R; `service()` an unscoped one."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._granted: set[tuple[str, uuid.UUID]] = set()

    def grant(self, sub: str, *restaurants: uuid.UUID) -> None:
        missing = [r for r in restaurants if (sub, r) not in self._granted]
        if not missing:
            return
        with psycopg.connect(self.settings.admin_url, autocommit=True) as conn:
            for restaurant in missing:
                grant_staff(conn, user_id=sub, restaurant_id=restaurant)
        self._granted.update((sub, r) for r in missing)

    def staff(self, *restaurants: uuid.UUID, sub: str = "staff-test") -> str:
        self.grant(sub, *restaurants)
        return mint_token(self.settings, sub=sub, restaurant_ids=restaurants)

    def pos(self, *restaurants: uuid.UUID, sub: str = "pos-terminal") -> str:
        return mint_token(
            self.settings, sub=sub, role=Role.SERVICE_ROLE, restaurant_ids=restaurants
        )

    def service(self, sub: str = "pos-integration") -> str:
        return mint_token(self.settings, sub=sub, role=Role.SERVICE_ROLE)

    def headers(self, *restaurants: uuid.UUID, sub: str = "staff-test") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.staff(*restaurants, sub=sub)}"}


def stop_all(processes: Sequence[ServiceProcess]) -> None:
    for process in processes:
        process.terminate()
