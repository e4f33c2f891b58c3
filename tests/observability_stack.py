"""A running system with metrics on: the API, a worker serving /metrics on a free port (and, if
asked, the figures app and the webhook notifier), and a private Prometheus of the test's own (1 s
scrapes, the project's rule files) scraping them."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import yaml
from confluent_kafka import Producer

from services.adapters import kafka_config
from services.adapters.settings import Settings
from services.core.messages import Actor, CreateOrder, Role
from services.figures.kafka import delete_app_topics
from tests.stack import (
    ServiceProcess,
    die_with_parent,
    free_port,
    isolated_settings,
    with_database,
)
from tests.tools import require
from tests.topics import command_record

ROOT = Path(__file__).resolve().parents[1]
RULE_FILES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
PROMETHEUS = shutil.which("prometheus")
SUPERUSER = "postgres"

T = TypeVar("T")


def prometheus_config(
    api_port: int,
    worker_port: int,
    figures_port: int | None = None,
    notifier_port: int | None = None,
) -> dict[str, Any]:
    jobs = {
        "command-api": api_port,
        "status-worker": worker_port,
        "figures": figures_port,
        "notifier": notifier_port,
    }
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in RULE_FILES],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for job, port in jobs.items()
            if port is not None
        ],
    }


@contextmanager
def private_prometheus(
    workdir: Path,
    api_port: int,
    worker_port: int,
    figures_port: int | None = None,
    notifier_port: int | None = None,
) -> Iterator[str]:
    """Prometheus on a free loopback port scraping these ports; yields its URL."""
    jobs = prometheus_config(api_port, worker_port, figures_port, notifier_port)
    with running_prometheus(workdir, jobs) as url:
        yield url


@contextmanager
def running_prometheus(workdir: Path, configuration: dict[str, Any]) -> Iterator[str]:
    """Prometheus with this configuration on a free loopback port, its data in `workdir`; yields
    its URL. It dies with the process that started it (a killed test run leaves none behind)."""
    prometheus = require(PROMETHEUS, "prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(configuration))
    port = free_port()
    log = (workdir / "prometheus.log").open("ab")
    process = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), 60, "Prometheus ready")
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(probe: Callable[[], T], timeout: float, what: str, every: float = 0.5) -> T:
    """Polls `probe` until it returns something truthy; bounded by `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(every)


def create_pg_stat_statements(settings: Settings) -> None:
    """The extension needs a superuser; the local cluster trusts `postgres` on loopback."""
    dbname = psycopg.conninfo.conninfo_to_dict(settings.admin_url)["dbname"]
    superuser = with_database(settings.admin_url, str(dbname))
    superuser = psycopg.conninfo.make_conninfo(superuser, user=SUPERUSER, password="")
    with psycopg.connect(superuser, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


@dataclass
class ObservedStack:
    settings: Settings
    api: ServiceProcess
    worker: ServiceProcess
    prometheus_url: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.prometheus_url}/api/v1/query", params={"query": expr}, timeout=10
        )
        body = response.json()
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]  # type: ignore[no-any-return]


@contextmanager
def observed_stack(
    base: Settings, log_dir: Path, figures: bool = False, notifier: bool = False, **overrides: Any
) -> Iterator[ObservedStack]:
    """With `figures`, the figures app runs and is scraped too (its dashboard panels); with
    `notifier`, the webhook notifier (loopback receivers allowed, as in the local stack)."""
    worker_port = free_port()
    figures_port = free_port() if figures else None
    notifier_port = free_port() if notifier else None
    if notifier:
        overrides.setdefault("webhook_allowed_cidrs", "127.0.0.0/8")
    with isolated_settings(base, worker_lag_interval_s=1.0, **overrides) as settings:
        worker = ServiceProcess("worker", settings, log_dir, worker_metrics_port=worker_port)
        api = ServiceProcess("api", settings, log_dir)
        processes = [worker, api]
        if figures_port is not None:
            processes.append(
                ServiceProcess("figures", settings, log_dir, figures_port=figures_port)
            )
        if notifier_port is not None:
            processes.append(
                ServiceProcess("notifier", settings, log_dir, notifier_metrics_port=notifier_port)
            )
        try:
            for process in processes:
                process.start()
            workdir = log_dir / f"prometheus-{uuid.uuid4().hex[:6]}"
            ports = (settings.api_port, worker_port, figures_port, notifier_port)
            with private_prometheus(workdir, *ports) as url:
                stack = ObservedStack(
                    settings.model_copy(update={"prometheus_url": url}), api, worker, url
                )
                # Load must come after a first scrape: rate() cannot see a series' first sample.
                targets = len(processes)
                wait_for(lambda: len(stack.query("up == 1")) == targets, 60, "all targets scraped")
                yield stack
        finally:
            for process in reversed(processes):
                process.terminate()
            if figures_port is not None:
                delete_app_topics(settings)


def enqueue_create_orders(settings: Settings, count: int) -> None:
    """Commands straight into the commands topic, as a POS integration would publish them."""
    producer = Producer(kafka_config.client(settings))
    actor = Actor(sub="pos-test", role=Role.SERVICE_ROLE)
    for _ in range(count):
        command = CreateOrder(
            command_id=uuid.uuid4(),
            order_id=uuid.uuid4(),
            restaurant_id=uuid.uuid4(),
            actor=actor,
            rid=f"enqueued-{uuid.uuid4().hex[:8]}",
            issued_at=datetime.now(UTC),
        )
        key, value, headers = command_record(command)
        producer.produce(settings.topics.commands, key=key, value=value, headers=headers)
    assert producer.flush(30) == 0


def until_empty(missing: Callable[[], list[str]], timeout: float, every: float = 1.0) -> list[str]:
    """Polls `missing` until it returns nothing or `timeout` passes; returns its last answer."""
    deadline = time.monotonic() + timeout
    while (left := missing()) and time.monotonic() < deadline:
        time.sleep(every)
    return left
