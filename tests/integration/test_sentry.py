"""Sentry with the real SDK in both services, sending to a capturing HTTP endpoint on loopback:
one test per runbook message name, and one trace crossing Kafka (API -> command -> worker)."""

from __future__ import annotations

import gzip
import json
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from services.adapters.kafka_records import header
from services.adapters.settings import Settings
from services.observability import sentry
from tests.stack import ServiceProcess, Tokens, isolated_settings
from tests.topics import read_topic

Event = dict[str, Any]


def parse_envelope(raw: bytes) -> list[tuple[dict[str, Any], Event]]:
    """(item header, item payload) pairs of a Sentry envelope."""
    lines = raw.split(b"\n", 1)
    rest = lines[1] if len(lines) > 1 else b""
    items = []
    while rest.strip():
        item_header_raw, _, rest = rest.partition(b"\n")
        item_header = json.loads(item_header_raw)
        length = item_header.get("length")
        if length is not None:
            payload, rest = rest[:length], rest[length + 1 :]
        else:
            payload, _, rest = rest.partition(b"\n")
        try:
            items.append((item_header, json.loads(payload)))
        except ValueError:
            continue
    return items


class Collector:
    """A tiny Sentry ingest: stores every envelope item posted to /api/<project>/envelope/."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Event]] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                encoding = self.headers.get("content-encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                with collector.lock:
                    collector.items.extend(
                        (str(h.get("type")), payload) for h, payload in parse_envelope(body)
                    )
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def dsn(self) -> str:
        return f"http://public@127.0.0.1:{self.server.server_address[1]}/1"

    def events(self, kind: str) -> list[Event]:
        with self.lock:
            return [payload for item_type, payload in self.items if item_type == kind]

    def wait(self, kind: str, match: Callable[[Event], bool], timeout: float = 30) -> Event:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events(kind):
                if match(event):
                    return event
            time.sleep(0.2)
        raise AssertionError(f"no {kind} matched in {timeout} s; got {len(self.events(kind))}")


@dataclass
class SentryStack:
    settings: Settings
    collector: Collector
    api: ServiceProcess
    worker: ServiceProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"


@pytest.fixture(scope="module")
def sentry_stack(base_settings: Settings, log_dir: Path) -> Iterator[SentryStack]:
    collector = Collector()
    collector.thread.start()
    try:
        with isolated_settings(
            base_settings, sentry_dsn=collector.dsn, sentry_traces_sample_rate=1.0
        ) as settings:
            worker = ServiceProcess("worker", settings, log_dir, worker_metrics_port=0).start()
            api = ServiceProcess("api", settings, log_dir).start()
            try:
                yield SentryStack(settings, collector, api, worker)
            finally:
                api.terminate()
                worker.terminate()
    finally:
        collector.server.shutdown()


@pytest.fixture
def client(sentry_stack: SentryStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sentry_stack.url, timeout=15) as api:
        yield api


def new_order(client: httpx.Client, tokens: Tokens, restaurant: uuid.UUID) -> str:
    response = client.post(
        "/orders", json={"restaurant_id": str(restaurant)}, headers=tokens.headers(restaurant)
    )
    assert response.status_code == 201, response.text
    return str(response.json()["order_id"])


def accept_new_order(stack: SentryStack, client: httpx.Client, kind: str) -> str:
    """Creates an order and accepts it under a fresh request id; returns the id."""
    tokens = Tokens(stack.settings)
    restaurant = uuid.uuid4()
    order_id = new_order(client, tokens, restaurant)
    rid = f"{kind}-{uuid.uuid4().hex[:8]}"
    headers = {**tokens.headers(restaurant), "X-Request-ID": rid}
    response = client.patch(
        f"/orders/{order_id}/status", json={"status": "accepted"}, headers=headers
    )
    assert response.status_code == 200
    return rid


def message_of(event: Event) -> str:
    return str(event.get("message") or event.get("logentry", {}).get("message") or "")


def test_a_409_sends_order_status_conflict(sentry_stack: SentryStack, client: httpx.Client) -> None:
    tokens = Tokens(sentry_stack.settings)
    restaurant = uuid.uuid4()
    order_id = new_order(client, tokens, restaurant)
    body = {"status": "accepted", "expected_version": 1}
    path = f"/orders/{order_id}/status"
    assert client.patch(path, json=body, headers=tokens.headers(restaurant)).status_code == 200
    rid = f"conflict-{uuid.uuid4().hex[:8]}"
    headers = {**tokens.headers(restaurant), "X-Request-ID": rid}
    assert client.patch(path, json=body, headers=headers).status_code == 409

    event = sentry_stack.collector.wait(
        "event", lambda e: e.get("tags", {}).get("rid") == rid and message_of(e) != ""
    )
    assert message_of(event) == sentry.CONFLICT
    assert event["tags"]["order_id"] == order_id
    assert event["tags"]["service"] == "command-api"


def test_a_403_sends_order_status_forbidden(
    sentry_stack: SentryStack, client: httpx.Client
) -> None:
    tokens = Tokens(sentry_stack.settings)
    restaurant = uuid.uuid4()
    order_id = new_order(client, tokens, restaurant)
    rid = f"forbidden-{uuid.uuid4().hex[:8]}"
    headers = {**tokens.headers(uuid.uuid4()), "X-Request-ID": rid}
    response = client.patch(
        f"/orders/{order_id}/status", json={"status": "accepted"}, headers=headers
    )
    assert response.status_code == 403

    event = sentry_stack.collector.wait("event", lambda e: e.get("tags", {}).get("rid") == rid)
    assert message_of(event) == sentry.FORBIDDEN
    assert event["level"] == "warning"


def test_an_applied_patch_is_an_order_status_success_transaction_with_duration_ms(
    sentry_stack: SentryStack, client: httpx.Client
) -> None:
    rid = accept_new_order(sentry_stack, client, "success")

    transaction = sentry_stack.collector.wait(
        "transaction",
        lambda t: (
            t.get("transaction") == sentry.SUCCESS
            and t["contexts"]["trace"].get("data", {}).get("duration_ms") is not None
            and t.get("tags", {}).get("evt") == "order_status_success"
            and t.get("tags", {}).get("rid") == rid
        ),
    )
    assert transaction["contexts"]["trace"]["data"]["duration_ms"] > 0
    assert transaction["transaction_info"]["source"] == "custom"


def test_one_trace_spans_the_api_the_kafka_command_and_the_worker(
    sentry_stack: SentryStack, client: httpx.Client
) -> None:
    rid = accept_new_order(sentry_stack, client, "trace")

    worker_tx = sentry_stack.collector.wait(
        "transaction",
        lambda t: (
            t.get("transaction") == sentry.WORKER_TRANSACTION
            and t["contexts"]["trace"].get("data", {}).get("rid") == rid
        ),
    )
    trace = worker_tx["contexts"]["trace"]
    api_tx = sentry_stack.collector.wait(
        "transaction",
        lambda t: (
            t.get("tags", {}).get("service") == "command-api"
            and t["contexts"]["trace"]["trace_id"] == trace["trace_id"]
        ),
    )
    # The command in Kafka carries the API's trace; the worker continued it as a child.
    command = next(
        m
        for m in read_topic(sentry_stack.settings, sentry_stack.settings.topics.commands)
        if (header(m, "rid") or b"").decode() == rid
    )
    traceparent = (header(command, "sentry-trace") or b"").decode()
    assert traceparent.split("-")[0] == trace["trace_id"]
    assert trace["parent_span_id"] == traceparent.split("-")[1]
    api_spans = {api_tx["contexts"]["trace"]["span_id"]} | {
        s["span_id"] for s in api_tx.get("spans", [])
    }
    assert trace["parent_span_id"] in api_spans
    assert worker_tx["tags"]["service"] == "status-worker"
    assert trace["data"]["outcome"] == "applied"
    assert api_tx["transaction"] == sentry.SUCCESS


def test_an_unhandled_exception_sends_order_status_exception_with_its_stack_trace(
    sentry_stack: SentryStack, client: httpx.Client
) -> None:
    """Reads break while `orders` is renamed away; restored afterwards."""
    tokens = Tokens(sentry_stack.settings)
    restaurant = uuid.uuid4()
    order_id = new_order(client, tokens, restaurant)
    rid = f"exception-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(sentry_stack.settings.admin_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE orders RENAME TO orders_away")
        try:
            response = client.get(
                f"/orders/{order_id}", headers={**tokens.headers(restaurant), "X-Request-ID": rid}
            )
        finally:
            conn.execute("ALTER TABLE orders_away RENAME TO orders")
    assert response.status_code == 500

    event = sentry_stack.collector.wait(
        "event",
        lambda e: (
            message_of(e) == sentry.EXCEPTION and e.get("tags", {}).get("service") == "command-api"
        ),
    )
    exception = event["exception"]["values"][-1]
    assert exception["stacktrace"]["frames"], "no stack trace"
    assert "UndefinedTable" in exception["type"] or "orders" in exception.get("value", "")
    assert event["tags"]["runbook_event"] == sentry.EXCEPTION


def test_sentry_is_off_without_a_dsn() -> None:
    assert sentry.init_sentry(Settings(sentry_dsn=None), "test") is False
    assert sentry.trace_headers() == []
