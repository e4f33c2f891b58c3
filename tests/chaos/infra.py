"""The chaos run's own Kafka broker (or 3-broker cluster) and PostgreSQL, and its API and worker
processes.

The broker and the database are started by deploy/local/*.sh with ORDERSTATUS_LOCAL_DIR pointing at
a fresh run directory under .local/chaos/ and on free ports, so they can be stopped and restarted at
will without touching a developer's stack; everything is stopped at the end, and the state of runs
whose owner died (kill -9 of the harness) is cleaned up by the next run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from services.adapters import kafka_config
from services.adapters.kafka_acls import apply_acls
from services.adapters.kafka_admin import ensure_topics
from services.adapters.kafka_principals import Role, sasl_identity
from services.adapters.migrate import apply_migrations
from services.adapters.settings import Settings
from tests.chaos.load import Endpoints
from tests.stack import ServiceProcess, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "deploy" / "local"
CHAOS_ROOT = REPO_ROOT / ".local" / "chaos"
KEEP_RUNS = 3
"""Run directories (logs, report) kept after the run; older ones are removed."""
SCRIPT_TIMEOUT_S = 200
CLUSTER_START_TIMEOUT_S = 150
"""kafka.sh's wait for a (re)started node: a JVM start took up to 60 s on the busy 2-core machine."""
REPLICA_LAG_MAX_MS = 5000
"""replica.lag.time.max.ms of a cluster run: a paused follower leaves the ISR within a round."""
PORTS_FREED_TIMEOUT_S = 30.0
KEEP_DATA_MARK = "keep-data"
"""In a run directory: its data was kept on purpose (--keep-data); delete the directory by hand."""


def _accepting(port: int) -> bool:
    """Whether something listens on the loopback port."""
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@dataclass
class ChaosInfra:
    """The Kafka broker (or, `brokers` > 1, the KRaft cluster) and the PostgreSQL cluster of one
    chaos run, in `root`. Node n (1-based) listens on kafka_ports[n-1]."""

    root: Path
    kafka_ports: list[int]
    controller_ports: list[int]
    pg_port: int
    metrics_ports: list[int] = field(default_factory=list)
    """The brokers' Prometheus (JMX exporter) ports (runs before the exporter: none)."""
    replica_lag_max_ms: int = REPLICA_LAG_MAX_MS
    script_log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.script_log = self.root / "log" / "scripts.log"

    @classmethod
    def create(cls, parent: Path = CHAOS_ROOT, brokers: int = 1) -> ChaosInfra:
        parent.mkdir(parents=True, exist_ok=True)
        reap_abandoned_runs(parent)
        root = parent / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        root.mkdir()
        (root / "owner.pid").write_text(str(os.getpid()))
        (root / "log").mkdir()

        def ports() -> list[int]:
            return [free_port() for _ in range(brokers)]

        infra = cls(root, ports(), ports(), free_port(), ports())
        (root / "ports.json").write_text(
            json.dumps(
                {
                    "kafka": infra.kafka_ports,
                    "controller": infra.controller_ports,
                    "metrics": infra.metrics_ports,
                    "pg": infra.pg_port,
                }
            )
        )
        return infra

    @classmethod
    def of_run(cls, root: Path) -> ChaosInfra:
        ports = json.loads((root / "ports.json").read_text())

        def listed(value: int | list[int]) -> list[int]:
            return value if isinstance(value, list) else [value]  # runs before --cluster

        return cls(
            root,
            listed(ports["kafka"]),
            listed(ports["controller"]),
            ports["pg"],
            ports.get("metrics", []),
        )

    @property
    def brokers(self) -> int:
        return len(self.kafka_ports)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.kafka_ports)

    @property
    def services_log_dir(self) -> Path:
        path = self.root / "services"
        path.mkdir(exist_ok=True)
        return path

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "ORDERSTATUS_LOCAL_DIR": str(self.root),
            "KAFKA_PORT": str(self.kafka_ports[0]),
            "KAFKA_CONTROLLER_PORT": str(self.controller_ports[0]),
            "PGPORT_LOCAL": str(self.pg_port),
            # A broker restarted every few rounds on a busy machine: C1 only, for a faster start.
            "KAFKA_HEAP": "-Xms128m -Xmx512m -XX:TieredStopAtLevel=1",
            "ORDERSTATUS_EXTERNAL_POSTGRES": "0",
            # Security on, as `make up`: SASL/SCRAM, ACLs; every process its own principal.
            "KAFKA_SECURITY": "sasl",
        }
        if self.metrics_ports:  # the run's Prometheus scrapes it (tests/chaos/alerts.py)
            env["KAFKA_METRICS_PORT"] = str(self.metrics_ports[0])
        if self.brokers > 1:

            def joined(ports: list[int]) -> str:
                return ",".join(map(str, ports))

            env |= {
                "KAFKA_BROKERS": str(self.brokers),
                "KAFKA_PORTS": joined(self.kafka_ports),
                "KAFKA_CONTROLLER_PORTS": joined(self.controller_ports),
                "KAFKA_METRICS_PORTS": joined(self.metrics_ports),
                # Short, so a paused broker leaves the ISR within a round.
                "KAFKA_REPLICA_LAG_MAX_MS": str(self.replica_lag_max_ms),
                "KAFKA_START_TIMEOUT": str(CLUSTER_START_TIMEOUT_S),
                # A killed node's partitions get a new leader once the controller stops hearing
                # from it: 6 s instead of Kafka's 9 s (docs/kafka-cluster.md). And 10 partitions for
                # the coordinators' topics instead of 50, which a restarted node recovers one by one.
                "KAFKA_BROKER_SESSION_TIMEOUT_MS": "6000",
                "KAFKA_INTERNAL_PARTITIONS": "10",
            }
        return env

    def script(self, component: str, action: str, *args: str) -> None:
        """deploy/local/<component>.sh <action> [args] against this run's state; raises on
        failure."""
        with self.script_log.open("ab") as log:
            log.write(
                f"\n== {time.strftime('%H:%M:%S')} {component} {action} {' '.join(args)}\n".encode()
            )
            log.flush()
            done = subprocess.run(
                [str(SCRIPTS / f"{component}.sh"), action, *args],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=SCRIPT_TIMEOUT_S,
                check=False,
            )
        if done.returncode != 0:
            tail = self.script_log.read_text(errors="replace")[-3000:]
            raise RuntimeError(
                f"{component}.sh {action} {' '.join(args)} failed ({done.returncode}):\n{tail}"
            )

    def start(self) -> None:
        self.script("postgres", "start")
        try:
            self.script("kafka", "start")
        except RuntimeError:
            # Once seen with a three-node start beside a test suite starting its own processes: a
            # node exited at once with nothing in its log (a free port taken in between). The
            # run's data is new, so start it once more; a second failure is the run's.
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.script("kafka", "stop")
            self.script("kafka", "start")

    def stop(self) -> None:
        """Stops both, whatever state they are in; never raises."""
        for component in ("kafka", "postgres"):
            with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
                self.script(component, "stop")

    def remove_data(self) -> None:
        """Deletes the broker's and the database's data (logs and the report stay)."""
        datadir = self.root / "pg" / "datadir"
        if datadir.exists():
            outside = Path(datadir.read_text().strip()).parent
            if outside.is_relative_to(Path("/var/tmp")) and outside.name.startswith(
                "orderstatus-pg-"
            ):
                shutil.rmtree(outside, ignore_errors=True)
        for name in ("kafka", "pg"):
            shutil.rmtree(self.root / name, ignore_errors=True)

    def base_settings(self) -> Settings:
        """Settings pointing at this run's broker (as the operator; each service of the fleet logs
        in as its own principal, tests/stack.py) and database, with the code's default roles (the
        chaos cluster trusts loopback connections, so no password is needed)."""
        defaults = Settings.model_fields

        def here(url: Any) -> str:
            return psycopg.conninfo.make_conninfo(str(url), host="127.0.0.1", port=self.pg_port)

        return Settings(
            kafka_bootstrap_servers=self.bootstrap,
            database_url=here(defaults["database_url"].default),
            database_admin_url=here(defaults["database_admin_url"].default),
            worker_metrics_port=0,
            environment="test",
            **sasl_identity(Role.OPERATOR),
        )

    def prepare(self, **overrides: Any) -> Settings:
        """Migrates the run's database and creates its topics and their ACLs: the whole cluster is
        this run's, so the default database and topic names serve (nothing needs dropping). On a
        cluster the topics get replication factor 3 and min.insync.replicas 2."""
        replicated: dict[str, Any] = {}
        if self.brokers > 1:
            replicated["kafka_replication_factor"] = min(3, self.brokers)
            if "kafka_min_insync_replicas" in Settings.model_fields:
                replicated["kafka_min_insync_replicas"] = 2
        settings = self.base_settings().model_copy(
            update={
                "kafka_command_partitions": 6,
                "api_port": free_port(),
                **replicated,
                **overrides,
            }
        )
        apply_migrations(settings.admin_url)
        ensure_topics(settings)
        apply_acls(settings)
        return settings

    def cluster(self, settings: Settings) -> ClusterNodes:
        """The handle on this run's brokers (cluster runs)."""
        return ClusterNodes(self, settings)


@dataclass(frozen=True, slots=True)
class PartitionState:
    topic: str
    partition: int
    leader: int
    """-1: none (an election is under way)."""
    replicas: tuple[int, ...]
    isrs: tuple[int, ...]

    @property
    def in_sync(self) -> bool:
        return set(self.isrs) == set(self.replicas)


class ClusterNodes:
    """What the cluster faults do to the brokers and ask of them: kill -9 / start / SIGSTOP /
    SIGCONT of node n (deploy/local/kafka.sh, through tests/kafka_cluster.py), who leads a
    partition and the quorum, and every partition's ISR from one metadata request."""

    def __init__(self, infra: ChaosInfra, settings: Settings) -> None:
        from tests.kafka_cluster import KafkaCluster  # cluster runs only

        self.infra = infra
        self.handle = KafkaCluster(
            infra.root,
            infra.kafka_ports,
            infra.controller_ports,
            infra.metrics_ports,
            replica_lag_max_ms=infra.replica_lag_max_ms,
        )
        self.admin = AdminClient({**kafka_config.admin(settings), "log_level": 0})

    def kill(self, node: int) -> None:
        self.infra.script("kafka", "kill-node", str(node))

    def start(self, node: int) -> None:
        """Starts node n once its ports are free: a node killed a moment ago may still hold
        them while the kernel takes its JVM down, and kafka.sh refuses a busy port."""
        ports = (self.infra.kafka_ports[node - 1], self.infra.controller_ports[node - 1])
        deadline = time.monotonic() + PORTS_FREED_TIMEOUT_S
        while any(_accepting(port) for port in ports) and time.monotonic() < deadline:
            time.sleep(0.2)
        self.infra.script("kafka", "start-node", str(node))

    def pause(self, node: int) -> None:
        self.infra.script("kafka", "pause-node", str(node))

    def resume(self, node: int) -> None:
        self.infra.script("kafka", "resume-node", str(node))

    def leader_of(self, topic: str, partition: int) -> int:
        return self.handle.leader_of(topic, partition)

    def active_controller(self) -> int:
        """The KRaft quorum leader; -1 while none is known (an election under way)."""
        try:
            return self.handle.active_controller(timeout=5)
        except TimeoutError:
            return -1

    def partitions(self) -> list[PartitionState]:
        """Every partition of every topic (the internal ones too), as one broker's metadata says."""
        metadata = self.admin.list_topics(timeout=5)
        return [
            PartitionState(name, p.id, p.leader, tuple(p.replicas), tuple(p.isrs))
            for name, topic in metadata.topics.items()
            if topic.error is None
            for p in topic.partitions.values()
        ]

    def partition(self, topic: str, partition: int) -> PartitionState:
        return next(s for s in self.partitions() if s.topic == topic and s.partition == partition)

    def wait_in_sync(self, timeout_s: float) -> float | None:
        """Seconds until every replica of every partition is in its ISR; None: not within
        `timeout_s`."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            with contextlib.suppress(KafkaException):
                if all(s.in_sync and s.leader >= 0 for s in self.partitions()):
                    return time.monotonic() - started
            time.sleep(0.25)
        return None


def reap_abandoned_runs(parent: Path) -> None:
    """Stops the broker and database of runs whose harness is gone; keeps the newest run logs."""
    runs = sorted(p for p in parent.iterdir() if p.is_dir())
    for root in runs:
        owner = root / "owner.pid"
        if not owner.exists():
            if time.time() - root.stat().st_mtime > 60:
                shutil.rmtree(root, ignore_errors=True)
            continue
        if _alive(int(owner.read_text() or 0)):
            continue
        kept = (root / KEEP_DATA_MARK).exists()
        if (root / "ports.json").exists() and ((root / "kafka").exists() or (root / "pg").exists()):
            infra = ChaosInfra.of_run(root)
            infra.stop()
            if not kept:
                infra.remove_data()
    finished = [
        p
        for p in runs
        if p.exists() and not (p / "kafka").exists() and not (p / KEEP_DATA_MARK).exists()
    ]
    for root in finished[:-KEEP_RUNS]:
        shutil.rmtree(root, ignore_errors=True)


class Fleet:
    """The API slots ("1", and "2" when added) and the worker slots ("1", "2") of a run. A slot
    restarted keeps its WORKER_ID, so static membership and the transactional id carry over, and
    its ports: each API slot serves HTTP and /metrics on its own port, each worker slot /metrics on
    its own (`metrics_ports`, for a Prometheus to scrape); every process logs to its own file.

    `supervise` plays the part of a restart policy (docker's `unless-stopped`): a process that
    exited without being asked to is noted and started again. One lock orders it with the faults,
    so a slot being killed on purpose is never also "restarted" by the supervisor."""

    SLOTS = ("1", "2")
    """The worker slots; the API slots are "1" or, where APIs are added and removed, both."""

    def __init__(
        self, settings: Settings, log_dir: Path, api_slots: tuple[str, ...] = ("1",)
    ) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.api_ports = {
            slot: settings.api_port if slot == "1" else free_port() for slot in api_slots
        }
        self.worker_metrics_ports = {slot: free_port() for slot in self.SLOTS}
        self.endpoints = Endpoints(self.url("1"))
        self.apis: dict[str, ServiceProcess] = {}
        self.workers: dict[str, ServiceProcess] = {}
        self.unexpected_exits: list[str] = []
        self.slow_starts: list[str] = []
        self.lock = threading.RLock()
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleet-spawner")

    def url(self, slot: str) -> str:
        return f"http://127.0.0.1:{self.api_ports[slot]}"

    def metrics_ports(self) -> dict[str, int]:
        """Where each process of the fleet serves /metrics, by name ("api-1", "worker-2"), whether
        it runs at the moment or not."""
        return {
            **{f"api-{slot}": port for slot, port in self.api_ports.items()},
            **{f"worker-{slot}": port for slot, port in self.worker_metrics_ports.items()},
        }

    def _spawn(self, service: ServiceProcess) -> ServiceProcess:
        """Starts `service` from the fleet's own thread: a test service dies with the thread that
        started it (PR_SET_PDEATHSIG, tests/stack.py), and asyncio's worker threads end with the
        load, while the fleet's thread lives until the fleet stops."""
        return self._spawner.submit(service.start, False).result()

    @property
    def api(self) -> ServiceProcess | None:
        return self.apis.get("1")

    def start_api(self, slot: str = "1") -> None:
        with self.lock:
            api = ServiceProcess(
                "api", self.settings, self.log_dir, api_port=self.api_ports[slot], worker_id=slot
            )
            self.apis[slot] = self._spawn(api)
            api.wait_ready()
            self.endpoints.set(self.url(s) for s in sorted(self.apis))

    def start_worker(self, slot: str, ready_timeout: float = 60) -> float:
        """Starts the slot's worker and waits for its first assignment; returns seconds taken."""
        started = time.monotonic()
        with self.lock:
            for _attempt in range(3):
                worker = ServiceProcess(
                    "worker",
                    self.settings,
                    self.log_dir,
                    worker_id=slot,
                    worker_metrics_port=self.worker_metrics_ports[slot],
                )
                self.workers[slot] = self._spawn(worker)
                try:
                    worker.wait_ready(ready_timeout)
                    break
                except TimeoutError:
                    self.slow_starts.append(f"worker {slot}: no assignment in {ready_timeout}s")
                    break
                except RuntimeError as exc:  # exited during start-up: note it and try again
                    self.unexpected_exits.append(f"worker {slot} at start: {last_words(str(exc))}")
                    time.sleep(1)
        return time.monotonic() - started

    def _leaves(self, slot: str) -> ServiceProcess:
        """Takes an API slot out of the fleet and, while another one runs, out of the terminals'
        endpoints (the only one stays: its requests fail until it is back)."""
        others = [s for s in sorted(self.apis) if s != slot]
        self.endpoints.set(self.url(s) for s in others or [slot])
        return self.apis.pop(slot)

    def kill_api(self, slot: str = "1") -> None:
        with self.lock:
            if slot in self.apis:
                self._leaves(slot).kill()

    def stop_api(self, slot: str) -> int:
        with self.lock:
            return self._leaves(slot).terminate()

    def kill_worker(self, slot: str) -> None:
        with self.lock:
            self.workers.pop(slot).kill()

    def stop_worker(self, slot: str) -> int:
        with self.lock:
            return self.workers.pop(slot).terminate()

    def supervise(self) -> None:
        """Restarts any process that exited without being asked to, and notes why it did."""
        with self.lock:
            for slot, worker in list(self.workers.items()):
                process = worker.process
                if process is not None and process.poll() is not None:
                    self.unexpected_exits.append(
                        f"worker {slot} exited with {process.returncode}: {last_words(worker.logs())}"
                    )
                    self.start_worker(slot)
            for slot, api in list(self.apis.items()):
                if api.process is not None and api.process.poll() is not None:
                    self.unexpected_exits.append(
                        f"api {slot} exited with {api.process.returncode}: {last_words(api.logs())}"
                    )
                    self.start_api(slot)

    def restart_workers(self) -> None:
        """kill -9 and start again every worker: the liveness probe's answer to a stall (the
        stall itself is recorded and fails the run; this only lets the run go on)."""
        with self.lock:
            for slot in sorted(self.workers):
                self.kill_worker(slot)
                self.start_worker(slot)

    def stop(self) -> None:
        with self.lock:
            for slot in list(self.apis):
                self.apis.pop(slot).terminate()
            for slot in list(self.workers):
                self.stop_worker(slot)
        self._spawner.shutdown()


def last_words(log: str) -> str:
    """Why a service ended: its last critical or error line, else the exception that ended a
    traceback, else its last line; shortened."""
    lines = [line for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        if '"level":"critical"' in line or '"level":"error"' in line:
            return line[:400]
    if "Traceback" in log:
        tail = log[log.rindex("Traceback") :].splitlines()
        raised = [line for line in tail[1:] if line and not line[0].isspace()]
        if raised:
            return raised[0][:400]
    return lines[-1][:400] if lines else "(empty log)"
