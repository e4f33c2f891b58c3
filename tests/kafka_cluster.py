"""A handle on a three-broker KRaft cluster that deploy/local/kafka.sh runs (KAFKA_BROKERS=3) for one
ORDERSTATUS_LOCAL_DIR on free ports: start and stop it, kill -9, pause and resume one node, and ask
who leads a partition, who is in its ISR and which node is the active controller (the KRaft quorum
leader). Used by tests/integration/test_kafka_cluster.py and the cluster chaos run; never touches the
shared broker."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._metadata import PartitionMetadata

from services.adapters import kafka_config
from services.adapters.kafka_principals import Role, sasl_identity
from services.adapters.settings import Settings
from tests.stack import free_port

KAFKA_SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "local" / "kafka.sh"
NODES = 3
CLUSTER_HEAP = "-Xms128m -Xmx512m -XX:TieredStopAtLevel=1"
"""Three JVMs on a small machine, restarted often: C1 only, for a faster start (as tests/chaos)."""
METADATA_ATTEMPT_S = 3.0


def _metric(text: str, name: str) -> float | None:
    """The value of an unlabelled sample `name` in Prometheus text, if present."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


@dataclass
class KafkaCluster:
    """The nodes kafka.sh runs under `root` (its ORDERSTATUS_LOCAL_DIR); node N (1-based) listens on
    ports[N-1], its controller on controller_ports[N-1], its metrics on metrics_ports[N-1]."""

    root: Path
    ports: list[int]
    controller_ports: list[int]
    metrics_ports: list[int]
    replica_lag_max_ms: int = 30000
    broker_session_timeout_ms: int = 9000
    security: str = "sasl"
    heap: str = CLUSTER_HEAP
    internal_partitions: int = 10
    """Partitions of __consumer_offsets and __transaction_state (Kafka's 50 by default): a restarted
    node log-recovers each, and a test cluster needs few coordinators."""
    script_timeout_s: float = 180
    _admin: AdminClient | None = field(default=None, init=False, repr=False)

    @classmethod
    def on_free_ports(cls, root: Path, nodes: int = NODES, **options: Any) -> KafkaCluster:
        return cls(
            root,
            [free_port() for _ in range(nodes)],
            [free_port() for _ in range(nodes)],
            [free_port() for _ in range(nodes)],
            **options,
        )

    @classmethod
    @contextmanager
    def started(cls, root: Path, **options: Any) -> Iterator[KafkaCluster]:
        """Running inside; every node stopped after, whatever state the test left them in."""
        cluster = cls.on_free_ports(root, **options)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()

    @property
    def nodes(self) -> int:
        return len(self.ports)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def env(self) -> dict[str, str]:
        """The environment of kafka.sh for this cluster, and of the services that use it."""
        joined = {
            "KAFKA_PORTS": self.ports,
            "KAFKA_CONTROLLER_PORTS": self.controller_ports,
            "KAFKA_METRICS_PORTS": self.metrics_ports,
        }
        return {
            **os.environ,
            "ORDERSTATUS_LOCAL_DIR": str(self.root),
            "KAFKA_BROKERS": str(self.nodes),
            "KAFKA_PORT": str(self.ports[0]),
            "KAFKA_CONTROLLER_PORT": str(self.controller_ports[0]),
            **{name: ",".join(map(str, ports)) for name, ports in joined.items()},
            "KAFKA_REPLICA_LAG_MAX_MS": str(self.replica_lag_max_ms),
            "KAFKA_BROKER_SESSION_TIMEOUT_MS": str(self.broker_session_timeout_ms),
            "KAFKA_SECURITY": self.security,
            "KAFKA_HEAP": self.heap,
            "KAFKA_INTERNAL_PARTITIONS": str(self.internal_partitions),
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_REPLICATION_FACTOR": str(self.nodes),
            "KAFKA_MIN_INSYNC_REPLICAS": str(min(2, self.nodes)),
        }

    def script(self, action: str, *args: str) -> str:
        """kafka.sh ACTION [ARGS] for this cluster; its messages, or RuntimeError with them."""
        done = subprocess.run(
            [str(KAFKA_SCRIPT), action, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=self.script_timeout_s,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kafka.sh {action} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done.stderr

    def start(self) -> None:
        """Every node; returns once the metadata lists all brokers."""
        self.script("start")

    def stop(self) -> None:
        self._admin = None
        self.script("stop")

    def start_node(self, n: int) -> None:
        """Returns once broker `n` is registered again (not yet back in every ISR: wait_in_sync)."""
        self.script("start-node", str(n))

    def stop_node(self, n: int) -> None:
        """SIGTERM: a controlled shutdown, its leaderships moved first."""
        self.script("stop-node", str(n))

    def kill_node(self, n: int) -> None:
        """kill -9."""
        self.script("kill-node", str(n))

    def pause_node(self, n: int) -> None:
        """SIGSTOP: alive for the OS, silent for the cluster."""
        self.script("pause-node", str(n))

    def resume_node(self, n: int) -> None:
        self.script("resume-node", str(n))

    def status(self) -> str:
        done = subprocess.run(
            [str(KAFKA_SCRIPT), "status"],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return done.stdout

    # ---- what the cluster says -----------------------------------------------------------------

    def settings(self, base: Settings, role: Role = Role.OPERATOR) -> Settings:
        """`base` pointed at this cluster (its replication too), connecting as `role`."""
        identity = sasl_identity(role) if self.security == "sasl" else {}
        return base.model_copy(
            update={
                "kafka_bootstrap_servers": self.bootstrap,
                "kafka_replication_factor": self.nodes,
                "kafka_min_insync_replicas": min(2, self.nodes),
                **identity,
            }
        )

    def admin(self, fresh: bool = False) -> AdminClient:
        """The operator's AdminClient (kept: one connection set for every question). `fresh`: a new
        one, for requests that go to the controller: librdkafka sends those to the controller its
        metadata named, and a kept client may still name a node just killed."""
        if self._admin is None or fresh:
            settings = self.settings(Settings())
            # A request to a paused broker (SIGSTOP: its socket accepts, nothing answers) times
            # out soon, and its connection is dropped, so the next request goes elsewhere.
            quick = {"socket.timeout.ms": int(METADATA_ATTEMPT_S * 1000), "log_level": 0}
            self._admin = AdminClient({**kafka_config.admin(settings), **quick})
        return self._admin

    def partition(self, topic: str, partition: int, timeout: float = 15) -> PartitionMetadata:
        """The partition's metadata from any broker that answers: a request that lands on a paused
        broker times out after METADATA_ATTEMPT_S and goes to another (librdkafka picks
        one at random)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                md = self.admin().list_topics(topic, timeout=METADATA_ATTEMPT_S)
                break
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
        found = md.topics[topic]
        if found.error is not None:
            raise RuntimeError(f"metadata of {topic}: {found.error}")
        return found.partitions[partition]

    def leader_of(self, topic: str, partition: int) -> int:
        """The node id leading the partition (-1 while it has none)."""
        return int(self.partition(topic, partition).leader)

    def replicas_in_sync(self, topic: str, partition: int) -> list[int]:
        """The partition's ISR (node ids), as the metadata reports it."""
        return sorted(self.partition(topic, partition).isrs)

    def replicas(self, topic: str, partition: int) -> list[int]:
        return sorted(self.partition(topic, partition).replicas)

    def metrics(self, n: int, timeout: float = 2) -> str:
        """Node n's Prometheus page (the JMX exporter)."""
        url = f"http://127.0.0.1:{self.metrics_ports[n - 1]}/metrics"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return str(response.read().decode())

    def metric(self, n: int, name: str) -> float:
        """An unlabelled sample of node n's metrics, e.g.
        kafka_server_replicamanager_underreplicatedpartitions."""
        value = _metric(self.metrics(n), name)
        if value is None:
            raise KeyError(f"{name} not on node {n}'s metrics")
        return value

    def active_controller(self, timeout: float = 30) -> int:
        """The KRaft quorum leader: the one node whose ActiveControllerCount is 1 and which the
        answering nodes name as their raft leader (AdminClient.describe_cluster's "controller" is
        any broker under KRaft, not the quorum leader). Waits out an election in progress."""
        deadline = time.monotonic() + timeout
        while True:
            active: list[int] = []
            named: set[float] = set()
            for n in range(1, self.nodes + 1):
                try:
                    page = self.metrics(n, timeout=1)
                except OSError:  # stopped, killed or paused
                    continue
                if _metric(page, "kafka_controller_kafkacontroller_activecontrollercount") == 1:
                    active.append(n)
                leader = _metric(page, "kafka_server_raft_metrics_current_leader")
                if leader is not None:
                    named.add(leader)
            if len(active) == 1 and named == {float(active[0])}:
                return active[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no single active controller: active {active}, named {named}")
            time.sleep(0.3)

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 60) -> float:
        """Polls `check` until true; returns the seconds it took (TimeoutError naming `what`)."""
        started = time.monotonic()
        while True:
            try:
                if check():
                    return time.monotonic() - started
            except (KafkaException, KeyError, RuntimeError, OSError):
                pass  # the metadata or a node is unavailable while the nodes move
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{what} not within {timeout}s")
            time.sleep(0.25)

    def wait_in_sync(self, topic: str, partition: int, timeout: float = 60) -> float:
        """Until every replica of the partition is in its ISR; returns the seconds it took."""
        return self.wait_for(
            f"{topic}[{partition}] fully in sync",
            lambda: self.replicas_in_sync(topic, partition) == self.replicas(topic, partition),
            timeout,
        )


def kafka_cluster_fixture(scope: Any = "module", **options: Any) -> Any:
    """A pytest fixture of that scope: a cluster of its own under a temporary ORDERSTATUS_LOCAL_DIR
    on free ports, started once and stopped at the end. In a test module:
    `kafka_cluster = kafka_cluster_fixture(replica_lag_max_ms=4000)`."""

    @pytest.fixture(scope=scope)
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
        with KafkaCluster.started(tmp_path_factory.mktemp("kafka-cluster"), **options) as cluster:
            yield cluster

    return fixture
