"""`orderstatus load`: open-loop PATCH /orders/{id}/status load at a constant arrival rate.

Request i is due at t0 + i/rate whatever happened to the earlier ones, and its latency is counted
from that intended time, so a stalled server cannot slow the generator down and hide its stall
(no coordinated omission). Requests go out over a pool of keep-alive HTTP/1.1 connections (one
request in flight per connection, opened on demand up to `connections`); a request due while
every connection is busy waits for one, and that wait is part of its latency.

Orders: `restaurants` x `orders` pending orders (seeded as the owner straight into the database,
with a staff membership and token per restaurant). Which order a request patches: with `skew` 0,
each request the next order round-robin; above 0, Zipf-distributed (rank r has weight r^-skew).
Each order is walked pending -> accepted -> preparing -> ready -> completed with the version the
generator expects it at (409 answers reset that to the server's current version), so with skew 0
and orders >= rate x duration every request is an applied change. `stale` is the share sent with a
wrong expected_version (409), `cross_tenant` the share sent with another restaurant's token (403).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import multiprocessing
import random
import re
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import psycopg

from services.adapters import queries
from services.adapters.settings import Settings
from services.adapters.tenancy import grant_staff
from services.command_api.auth import mint_token

NEXT_STATUS = {
    "pending": "accepted",
    "accepted": "preparing",
    "preparing": "ready",
    "ready": "completed",
}
VERSION_IN_BODY = re.compile(rb'"(?:current_)?version":\s*(\d+)')
STATUS_IN_BODY = re.compile(rb'"(?:current_)?status":\s*"(\w+)"')
DRAIN_TIMEOUT_S = 10.0


# ---- the orders the load patches ------------------------------------------------------------


@dataclass
class Tenant:
    restaurant_id: uuid.UUID
    staff_sub: str
    token: str
    orders: list[uuid.UUID] = field(default_factory=list)


def seed(settings: Settings, restaurants: int, orders_per_restaurant: int) -> list[Tenant]:
    """`restaurants` restaurants, each with one staff member (a membership, and a token narrowed
    to that restaurant) and `orders_per_restaurant` pending orders at version 1, written as the
    owner (DATABASE_ADMIN_URL): both the project and the direct baseline read these rows."""
    tenants = []
    for _ in range(restaurants):
        restaurant = uuid.uuid4()
        sub = f"load-staff-{restaurant.hex[:8]}"
        token = mint_token(settings, sub=sub, restaurant_ids=[restaurant])
        orders = [uuid.uuid4() for _ in range(orders_per_restaurant)]
        tenants.append(Tenant(restaurant, sub, token, orders))
    with psycopg.connect(settings.admin_url) as conn:
        for tenant in tenants:
            grant_staff(conn, user_id=tenant.staff_sub, restaurant_id=tenant.restaurant_id)
            conn.execute(
                queries.INSERT_PENDING_ORDERS,
                {"restaurant_id": tenant.restaurant_id, "ids": tenant.orders},
            )
        conn.commit()
    return tenants


# ---- what to send ---------------------------------------------------------------------------


@dataclass
class OrderPlan:
    """What the generator believes an order's state is (or will be, once its requests land)."""

    tenant: int
    order_id: str
    status: str = "pending"
    version: int = 1


@dataclass(frozen=True)
class Mix:
    skew: float = 0.0
    stale: float = 0.0
    cross_tenant: float = 0.0


class Requests:
    """Builds each request's bytes and learns from each answer."""

    def __init__(self, host: str, tenants: list[Tenant], mix: Mix, rng: random.Random) -> None:
        self.mix, self.rng = mix, rng
        self.tokens = [t.token for t in tenants]
        rows = [[OrderPlan(n, str(o)) for o in t.orders] for n, t in enumerate(tenants)]
        # Interleaved, so round-robin and the hottest Zipf ranks spread over the restaurants.
        self.orders = [p for row in itertools.zip_longest(*rows) for p in row if p is not None]
        self.by_id = {p.order_id: p for p in self.orders}
        self.head = f"Host: {host}\r\nContent-Type: application/json\r\n".encode()
        self._round_robin = itertools.cycle(range(len(self.orders)))
        self._zipf_cdf: list[float] = []
        if mix.skew > 0:
            weights = itertools.accumulate((r + 1) ** -mix.skew for r in range(len(self.orders)))
            self._zipf_cdf = list(weights)

    def _pick(self) -> OrderPlan:
        if not self._zipf_cdf:
            return self.orders[next(self._round_robin)]
        x = self.rng.random() * self._zipf_cdf[-1]
        return self.orders[min(bisect.bisect_left(self._zipf_cdf, x), len(self.orders) - 1)]

    def next(self) -> bytes:
        plan = self._pick()
        token = self.tokens[plan.tenant]
        status = NEXT_STATUS.get(plan.status, "completed")
        version = plan.version
        roll = self.rng.random()
        if roll < self.mix.cross_tenant and len(self.tokens) > 1:
            token = self.tokens[
                (plan.tenant + 1 + self.rng.randrange(len(self.tokens) - 1)) % len(self.tokens)
            ]
        elif roll < self.mix.cross_tenant + self.mix.stale:
            version = version - 1 if version > 1 else version + 1
        elif plan.status in NEXT_STATUS:
            plan.status, plan.version = status, version + 1  # optimistic: as if it lands
        body = b'{"status":"%s","expected_version":%d}' % (status.encode(), version)
        return b"".join(
            (
                b"PATCH /orders/%s/status HTTP/1.1\r\n" % plan.order_id.encode(),
                self.head,
                b"Authorization: Bearer %s\r\n" % token.encode(),
                b"Content-Length: %d\r\n\r\n" % len(body),
                body,
            )
        )

    def learn(self, status: int, body: bytes) -> None:
        """A 409 says where the order really is: plan the next request from there."""
        if status != 409:
            return
        match = re.search(rb"/orders/([0-9a-f-]{36})/status", body)
        version, current = VERSION_IN_BODY.search(body), STATUS_IN_BODY.search(body)
        plan = self.by_id.get(match.group(1).decode()) if match else None
        if plan is not None and version and current:
            plan.version, plan.status = int(version.group(1)), current.group(1).decode()


# ---- the client -----------------------------------------------------------------------------


@dataclass
class LoadReport:
    rate: float
    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    elapsed: float = 0.0
    cpu_s: float = 0.0
    """The generator's own CPU time (process_time) over the run."""
    """From the first intended send to the last answer."""
    max_send_lag_s: float = 0.0
    """How far behind its schedule the generator itself fell: above a few ms it is the limit."""

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        answered = len(self.latencies)
        non_5xx = sum(n for code, n in self.statuses.items() if code < 500)
        return {
            "rate": self.rate,
            "seconds": self.seconds,
            "sent": self.sent,
            "answered": answered,
            "answered_per_s": round(answered / self.elapsed, 1) if self.elapsed else 0.0,
            "p50_ms": round(self.percentile(0.50) * 1000, 1),
            "p95_ms": round(self.percentile(0.95) * 1000, 1),
            "p99_ms": round(self.percentile(0.99) * 1000, 1),
            "max_ms": round(max(self.latencies, default=float("nan")) * 1000, 1),
            "non_5xx_share": round(non_5xx / self.sent, 5) if self.sent else 0.0,
            "statuses": dict(sorted(self.statuses.items())),
            "errors": dict(self.errors),
            "max_send_lag_ms": round(self.max_send_lag_s * 1000, 1),
            "generator_cpu_us_per_request": (
                round(self.cpu_s / self.sent * 1e6, 1) if self.sent else 0.0
            ),
        }


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request in flight."""

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.intended = 0.0
        self.body = bytearray()
        self.parser = httptools.HttpResponseParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, request: bytes, intended: float) -> None:
        assert self.transport is not None
        self.intended = intended
        self.body.clear()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.client.failed(self, "bad-response")

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.client.answered(self, self.parser.get_status_code(), bytes(self.body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.failed(self, "connection-lost")


class _Client:
    def __init__(
        self, host: str, port: int, connections: int, report: LoadReport, requests: Requests
    ) -> None:
        self.host, self.port, self.limit = host, port, connections
        self.report, self.requests = report, requests
        self.idle: list[_Connection] = []
        self.busy: set[_Connection] = set()
        self.opening = 0
        self.waiting: deque[tuple[bytes, float]] = deque()
        self.loop = asyncio.get_running_loop()
        self.outstanding = 0
        self.settled = asyncio.Event()
        self.last_answer = 0.0

    def submit(self, request: bytes, intended: float) -> None:
        self.outstanding += 1
        self.report.sent += 1
        if self.idle:
            self._send(self.idle.pop(), request, intended)
            return
        self.waiting.append((request, intended))
        if len(self.busy) + self.opening < self.limit:
            self.opening += 1
            self.loop.create_task(self._open())

    async def _open(self) -> None:
        try:
            _, connection = await self.loop.create_connection(
                lambda: _Connection(self), self.host, self.port
            )
        except OSError:
            self.opening -= 1
            self.report.errors["connect"] += 1
            if self.waiting:
                await asyncio.sleep(0.05)
                self.opening += 1
                self.loop.create_task(self._open())
            return
        self.opening -= 1
        self._ready(connection)

    def _send(self, connection: _Connection, request: bytes, intended: float) -> None:
        self.busy.add(connection)
        connection.send(request, intended)

    def _ready(self, connection: _Connection) -> None:
        if self.waiting:
            self._send(connection, *self.waiting.popleft())
        else:
            self.idle.append(connection)

    def _settle_one(self) -> None:
        self.outstanding -= 1
        if self.outstanding == 0:
            self.settled.set()

    def answered(self, connection: _Connection, status: int, body: bytes) -> None:
        self.last_answer = now = time.perf_counter()
        self.report.latencies.append(now - connection.intended)
        self.report.statuses[status] += 1
        self.requests.learn(status, body)
        self.busy.discard(connection)
        self._settle_one()
        self._ready(connection)

    def failed(self, connection: _Connection, reason: str) -> None:
        if connection in self.busy:
            self.busy.discard(connection)
            self.report.errors[reason] += 1
            self._settle_one()
            if self.waiting and len(self.busy) + self.opening < self.limit:
                self.opening += 1
                self.loop.create_task(self._open())
        elif connection in self.idle:
            self.idle.remove(connection)
        if connection.transport is not None:
            connection.transport.abort()

    def close(self) -> None:
        for connection in [*self.idle, *self.busy]:
            if connection.transport is not None:
                connection.transport.abort()


Progress = Callable[[float, LoadReport], None]


async def run_open_loop(
    url: str,
    tenants: list[Tenant],
    *,
    rate: float,
    seconds: float,
    mix: Mix = Mix(),
    connections: int = 256,
    progress: Progress | None = None,
    seed_value: int = 1,
) -> LoadReport:
    """Sends rate x seconds requests on schedule; then waits up to DRAIN_TIMEOUT_S for the rest
    (those still unanswered are counted as `timeout` errors)."""
    where = urlsplit(url)
    host, port = where.hostname or "127.0.0.1", where.port or 80
    requests = Requests(f"{host}:{port}", tenants, mix, random.Random(seed_value))
    report = LoadReport(rate=rate, seconds=seconds)
    client = _Client(host, port, connections, report, requests)
    total = int(rate * seconds)
    cpu_started = time.process_time()
    started = time.perf_counter()
    next_progress = started
    sent = 0
    try:
        while sent < total:
            now = time.perf_counter()
            due = min(total, int((now - started) * rate) + 1)
            while sent < due:
                intended = started + sent / rate
                report.max_send_lag_s = max(report.max_send_lag_s, now - intended)
                client.submit(requests.next(), intended)
                sent += 1
            if progress is not None and now >= next_progress:
                progress(now - started, report)
                next_progress = now + 0.2
            wait = started + sent / rate - time.perf_counter()
            await asyncio.sleep(max(wait, 0.0))
        if client.outstanding:
            client.settled.clear()
            try:
                await asyncio.wait_for(client.settled.wait(), DRAIN_TIMEOUT_S)
            except TimeoutError:
                report.errors["timeout"] += client.outstanding
        report.elapsed = max(seconds, client.last_answer - started)
        report.cpu_s = time.process_time() - cpu_started
        if progress is not None:
            progress(seconds, report)
    finally:
        client.close()
    return report


def run_load(url: str, tenants: list[Tenant], *, processes: int = 1, **options: Any) -> LoadReport:
    """run_open_loop on uvloop (as the services run). With `processes` > 1, that many forked
    generators each send rate/processes on their own share of the orders (for rates one Python
    process cannot hold on schedule), and their reports are merged."""
    import uvloop

    if processes <= 1:
        return uvloop.run(run_open_loop(url, tenants, **options))
    progress: Progress | None = options.pop("progress", None)
    rate, seconds = options["rate"], options["seconds"]
    share_options = options | {
        "rate": rate / processes,
        "connections": max(1, options.get("connections", 256) // processes),
    }
    shares = _split(tenants, processes)
    context = multiprocessing.get_context("fork")
    started = time.perf_counter()
    with context.Pool(processes) as pool:
        pending = pool.starmap_async(
            _run_share, [(url, share, share_options, n) for n, share in enumerate(shares)]
        )
        while not pending.ready():
            pending.wait(0.2)
            if progress is not None:
                elapsed = min(seconds, time.perf_counter() - started)
                progress(elapsed, LoadReport(rate, seconds, sent=int(elapsed * rate)))
        parts = pending.get()
    merged = LoadReport(rate=rate, seconds=seconds)
    for part in parts:
        merged.latencies += part.latencies
        merged.statuses.update(part.statuses)
        merged.errors.update(part.errors)
        merged.sent += part.sent
        merged.elapsed = max(merged.elapsed, part.elapsed)
        merged.cpu_s += part.cpu_s
        merged.max_send_lag_s = max(merged.max_send_lag_s, part.max_send_lag_s)
    return merged


def _run_share(url: str, tenants: list[Tenant], options: dict[str, Any], n: int) -> LoadReport:
    import uvloop

    return uvloop.run(run_open_loop(url, tenants, seed_value=n + 1, **options))


def _split(tenants: list[Tenant], parts: int) -> list[list[Tenant]]:
    """Every tenant's orders dealt round-robin over `parts` (each keeps its restaurants)."""
    return [
        [Tenant(t.restaurant_id, t.staff_sub, t.token, t.orders[n::parts]) for t in tenants]
        for n in range(parts)
    ]
