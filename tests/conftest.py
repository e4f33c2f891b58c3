"""Fixtures: `stack_settings` (isolated database and topics), `stack` (a running API and worker),
`api` (an HTTP client for it) and `tokens`. Unit tests need none of them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from services.adapters.settings import Settings
from tests.stack import ServiceProcess, Tokens, free_port, isolated_settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.path)
        if "/tests/integration/" in path:
            item.add_marker(pytest.mark.integration)
        elif "/tests/e2e/" in path:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("service-logs")


@pytest.fixture(scope="session")
def stack_settings(base_settings: Settings) -> Iterator[Settings]:
    with isolated_settings(base_settings) as settings:
        yield settings


@dataclass
class Stack:
    settings: Settings
    api: ServiceProcess
    worker: ServiceProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"

    def db(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.settings.admin_url, autocommit=True)


@pytest.fixture(scope="session")
def stack(stack_settings: Settings, log_dir: Path) -> Iterator[Stack]:
    # Metrics on a free port: tests read the worker's counters (e.g. forbidden outcomes).
    worker = ServiceProcess(
        "worker", stack_settings, log_dir, worker_metrics_port=free_port()
    ).start()
    api = ServiceProcess("api", stack_settings, log_dir).start()
    yield Stack(stack_settings, api, worker)
    api.terminate()
    worker.terminate()


@pytest.fixture(scope="session")
def tokens(stack_settings: Settings) -> Tokens:
    return Tokens(stack_settings)


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=15) as client:
        yield client
