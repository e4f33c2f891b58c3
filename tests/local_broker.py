"""A Kafka broker of a test's own, started by deploy/local/kafka.sh in a directory of its own and on
free ports (as tests/chaos does), so a test may run it with SASL and ACLs whatever the shared
broker's mode, and never touches the shared one."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from services.adapters.kafka_principals import Role, sasl_identity
from services.adapters.settings import Settings
from tests.stack import free_port

KAFKA_SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "local" / "kafka.sh"


@dataclass(frozen=True)
class LocalBroker:
    """`with LocalBroker.started(directory, ...) as broker`: running inside, stopped after."""

    root: Path
    port: int
    controller_port: int
    security: str = "sasl"
    tls_dir: Path | None = None
    """With a broker.pem (key and chain) and ca.pem: the client listener is SASL_SSL."""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "ORDERSTATUS_LOCAL_DIR": str(self.root),
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "KAFKA_SECURITY": self.security,
            "KAFKA_HEAP": "-Xms128m -Xmx512m -XX:TieredStopAtLevel=1",
            "KAFKA_TLS_DIR": str(self.tls_dir or ""),
        }

    def script(self, action: str, timeout: float = 120) -> None:
        done = subprocess.run(
            [str(KAFKA_SCRIPT), action],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kafka.sh {action} failed:\n{done.stderr[-3000:]}")

    @classmethod
    @contextmanager
    def started(cls, root: Path, tls_dir: Path | None = None) -> Iterator[LocalBroker]:
        broker = cls(root, free_port(), free_port(), tls_dir=tls_dir)
        broker.script("start")
        try:
            yield broker
        finally:
            broker.script("stop")

    def settings(self, base: Settings, role: Role = Role.OPERATOR) -> Settings:
        """`base` pointed at this broker, connecting as `role`; one broker's replication (the
        environment's may be a cluster's: `make test KAFKA_BROKERS=3`)."""
        return base.model_copy(
            update={
                "kafka_bootstrap_servers": self.bootstrap,
                "kafka_replication_factor": 1,
                "kafka_min_insync_replicas": 1,
                **sasl_identity(role),
            }
        )
