"""The load: POS "terminals" walking orders through their statuses over HTTP, each request under its
own Idempotency-Key so it can be retried through any fault without becoming a second command, and
every answer recorded for the checker.

A terminal creates an order, then moves it step by step (mostly to completed; some are rejected or
cancelled on the way), usually with the expected_version it last saw, sometimes without one, and now
and then first with a deliberately stale version to provoke a 409. Some requests ask for
`Prefer: respond-async` and look the outcome up with GET /commands/{id}; so does a request that
still has no outcome when its retries are used up."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from services.core.statuses import FINAL_STATUSES, OrderStatus

RETRYABLE = frozenset({500, 502, 503, 504})
"""Answers after which the same request (same key and body) is sent again."""
MAX_ATTEMPTS = 40
REQUEST_BUDGET_S = 90.0
"""How long one request is retried before its outcome is looked up instead."""
LOOKUP_BUDGET_S = 120.0
HTTP_TIMEOUT_S = 20.0

HAPPY_PATH = (
    OrderStatus.ACCEPTED,
    OrderStatus.PREPARING,
    OrderStatus.READY,
    OrderStatus.COMPLETED,
)


# ---- what a terminal does with one order (pure) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    status: OrderStatus
    with_version: bool
    """Send the expected_version last seen (else none: last writer wins within the state machine)."""
    stale_probe: bool
    """Send the step first with a stale expected_version, expecting a 409 stale-version."""
    respond_async: bool


@dataclass(frozen=True, slots=True)
class OrderPlan:
    create_async: bool
    steps: tuple[Step, ...]
    server_minted_id: bool = False
    """POST /orders without order_id: the API mints the id, so a retry that is not deduplicated
    would create a second order (the checker counts those)."""


def order_plan(rng: random.Random) -> OrderPlan:
    """A walk from pending to a final status: mostly the happy path, some rejected or cancelled."""
    roll = rng.random()
    if roll < 0.06:
        statuses: tuple[OrderStatus, ...] = (OrderStatus.REJECTED,)
    elif roll < 0.18:
        statuses = (*HAPPY_PATH[: rng.randrange(0, 3)], OrderStatus.CANCELLED)
    else:
        statuses = HAPPY_PATH
    steps = tuple(
        Step(
            status=status,
            with_version=rng.random() < 0.75,
            stale_probe=rng.random() < 0.06,
            respond_async=rng.random() < 0.08,
        )
        for status in statuses
    )
    return OrderPlan(
        create_async=rng.random() < 0.08, steps=steps, server_minted_id=rng.random() < 0.3
    )


# ---- what the client saw ------------------------------------------------------------------------


@dataclass(slots=True)
class Attempt:
    rid: str
    status: int | None
    """HTTP status, or None for a connection error or client timeout."""
    command_id: str | None
    sent_at: float = 0.0
    """Unix time the attempt was sent."""
    latency_s: float = 0.0
    """Until its answer (or its transport error) arrived."""

    @property
    def answered_at(self) -> float:
        return self.sent_at + self.latency_s

    @property
    def label(self) -> str:
        return "conn-error" if self.status is None else str(self.status)


@dataclass(slots=True)
class KeyedRequest:
    """One command request under one Idempotency-Key, with all its attempts and its final answer."""

    key: str
    terminal: int
    seq: int
    """Issue order across the run: a terminal sends its next request only after this one ended."""
    order_id: str
    command_type: str
    status: str | None
    expected_version: int | None
    deliberately_stale: bool
    respond_async: bool
    attempts: list[Attempt] = field(default_factory=list)
    command_ids: set[str] = field(default_factory=set)
    """Every command id the API named for this key (more than one would be a broken key)."""
    final_status: int | None = None
    """The answer's status, or the `status_code` GET /commands/{id} reported; None: none known."""
    answer: dict[str, Any] | None = None
    looked_up: bool = False

    @property
    def command_id(self) -> str | None:
        return min(self.command_ids) if self.command_ids else None


@dataclass
class AnswerLog:
    requests: list[KeyedRequest] = field(default_factory=list)
    resolved: int = 0
    """Requests that ended with a known outcome: progress, for the fault loop's liveness check."""
    last_progress: float = field(default_factory=time.monotonic)
    statuses: Counter[str] = field(default_factory=Counter)
    """Every attempt's answer, by status ("conn-error" for transport failures)."""

    def accepted(self) -> int:
        return sum(1 for r in self.requests if r.command_ids)

    def note_resolved(self) -> None:
        self.resolved += 1
        self.last_progress = time.monotonic()


@dataclass(frozen=True, slots=True)
class ClientView:
    """What the terminals saw in windows of time (a leader moving): the command requests' answers
    that arrived in them, by status, their latency, and the longest stretch without a 2xx."""

    windows: int
    window_s: float
    """The windows' length, summed."""
    answers: dict[str, int]
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float | None
    longest_gap_2xx_s: float
    """Longest time within a window between two 2xx answers (or a window's edge and one)."""


def client_view(attempts: Iterable[Attempt], windows: Sequence[tuple[float, float]]) -> ClientView:
    """The figures of the attempts answered within any of the windows ([start, end], Unix times;
    the windows should not overlap, or an attempt counts in each)."""
    answered = sorted(attempts, key=lambda a: a.answered_at)
    times = [a.answered_at for a in answered]
    inside: list[Attempt] = []
    longest_gap = 0.0
    for start, end in windows:
        mine = answered[bisect.bisect_left(times, start) : bisect.bisect_right(times, end)]
        inside += mine
        edges = [start, *(a.answered_at for a in mine if a.status and 200 <= a.status < 300), end]
        longest_gap = max(longest_gap, *(b - a for a, b in itertools.pairwise(edges)))
    latencies = sorted(a.latency_s * 1000 for a in inside)

    def quantile(q: float) -> float | None:
        if not latencies:
            return None
        return latencies[min(len(latencies) - 1, math.ceil(q * len(latencies)) - 1)]

    return ClientView(
        windows=len(windows),
        window_s=sum(end - start for start, end in windows),
        answers=dict(sorted(Counter(a.label for a in inside).items())),
        p50_ms=quantile(0.50),
        p95_ms=quantile(0.95),
        max_ms=latencies[-1] if latencies else None,
        longest_gap_2xx_s=longest_gap,
    )


def attempts_of(requests: Iterable[KeyedRequest]) -> Iterator[Attempt]:
    for request in requests:
        yield from request.attempts


# ---- the terminals ------------------------------------------------------------------------------


class Endpoints:
    """The API processes the terminals talk to: each attempt goes to one of them at random, so a
    process killed or removed mid-request is retried on another. The fleet updates the list."""

    def __init__(self, *urls: str) -> None:
        self._urls = tuple(urls)

    def set(self, urls: Iterable[str]) -> None:
        self._urls = tuple(urls)  # one reference swap: safe against the terminals reading it

    @property
    def urls(self) -> tuple[str, ...]:
        return self._urls

    def url(self, path: str, rng: random.Random) -> str:
        urls = self._urls
        return f"{urls[0] if len(urls) == 1 else rng.choice(urls)}{path}"


class Terminal:
    def __init__(
        self,
        number: int,
        client: httpx.AsyncClient,
        endpoints: Endpoints,
        token: str,
        restaurants: list[uuid.UUID],
        log: AnswerLog,
        run_tag: str,
        seed: int,
    ) -> None:
        self.number = number
        self.client = client
        self.endpoints = endpoints
        self.auth = {"Authorization": f"Bearer {token}"}
        self.restaurants = restaurants
        self.log = log
        self.run_tag = run_tag
        self.rng = random.Random(seed)
        self.sent = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.walk_order(stop)

    async def walk_order(self, stop: asyncio.Event) -> None:
        plan = order_plan(self.rng)
        body = {"restaurant_id": str(self.rng.choice(self.restaurants))}
        order_id = ""
        if not plan.server_minted_id:
            body["order_id"] = order_id = str(uuid.uuid4())
        created = await self.send("POST", "/orders", body, order_id, async_=plan.create_async)
        if not order_id:
            order_id = str((created.answer or {}).get("order_id") or "")
            if not order_id:
                return  # no known final answer (counted as unresolved): nothing to walk
            created.order_id = order_id
        version = _version_after(created)
        if version is None:
            version = await self.current_version(order_id)
            if version is None:
                return  # the order was never created: nothing to walk
        for step in plan.steps:
            if stop.is_set():
                return
            if step.stale_probe:
                stale = version - 1 if version > 1 else version + 1
                probe = await self.send(
                    "PATCH",
                    f"/orders/{order_id}/status",
                    {"status": step.status.value, "expected_version": stale},
                    order_id,
                    async_=False,
                    deliberately_stale=True,
                )
                version = _version_after(probe) or await self.current_version(order_id) or version
            change: dict[str, Any] = {"status": step.status.value}
            if step.with_version:
                change["expected_version"] = version
            answered = await self.send(
                "PATCH", f"/orders/{order_id}/status", change, order_id, async_=step.respond_async
            )
            now = _version_after(answered)
            if now is None:
                now = await self.current_version(order_id)
                if now is None:
                    return
            version = now
            if answered.answer and answered.answer.get("current_status") in FINAL_STATUSES:
                return  # a 409 says the order is already final

    async def send(
        self,
        method: str,
        path: str,
        body: dict[str, Any],
        order_id: str,
        *,
        async_: bool,
        deliberately_stale: bool = False,
    ) -> KeyedRequest:
        self.sent += 1
        key = f"{self.run_tag}-t{self.number}-{self.sent}"
        request = KeyedRequest(
            key=key,
            terminal=self.number,
            seq=len(self.log.requests),
            order_id=order_id,
            command_type="create_order" if method == "POST" else "change_status",
            status=body.get("status"),
            expected_version=body.get("expected_version"),
            deliberately_stale=deliberately_stale,
            respond_async=async_,
        )
        self.log.requests.append(request)
        headers = {**self.auth, "Idempotency-Key": f'"{key}"'}
        if async_:
            headers["Prefer"] = "respond-async"
        deadline = time.monotonic() + REQUEST_BUDGET_S
        for attempt in range(MAX_ATTEMPTS):
            rid = f"{key}.{attempt}"
            sent_at, started = time.time(), time.monotonic()
            try:
                response = await self.client.request(
                    method,
                    self.endpoints.url(path, self.rng),
                    json=body,
                    headers={**headers, "X-Request-ID": rid},
                )
            except httpx.TransportError:
                took = time.monotonic() - started
                request.attempts.append(Attempt(rid, None, None, sent_at, took))
                self.log.statuses["conn-error"] += 1
            else:
                took = time.monotonic() - started
                answer = _json(response)
                command_id = response.headers.get("x-command-id") or answer.get("command_id")
                request.attempts.append(
                    Attempt(rid, response.status_code, command_id, sent_at, took)
                )
                self.log.statuses[str(response.status_code)] += 1
                if command_id:
                    request.command_ids.add(str(command_id))
                if response.status_code == 202:
                    break
                if response.status_code not in RETRYABLE:
                    request.final_status, request.answer = response.status_code, answer
                    self.log.note_resolved()
                    return request
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(_backoff(attempt, self.rng))
        if request.command_id is not None:
            await self.look_up(request)
        return request

    async def look_up(self, request: KeyedRequest) -> None:
        """GET /commands/{id} until the outcome is known (or the budget is spent)."""
        request.looked_up = True
        deadline = time.monotonic() + LOOKUP_BUDGET_S
        attempt = 0
        while time.monotonic() < deadline:
            try:
                response = await self.client.get(
                    self.endpoints.url(f"/commands/{request.command_id}", self.rng),
                    headers=self.auth,
                )
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 200:
                answer = _json(response)
                if answer.get("state") == "completed":
                    request.final_status = int(answer["status_code"])
                    request.answer = answer.get("response")
                    self.log.note_resolved()
                    return
            elif response is not None and response.status_code == 404:
                request.final_status, request.answer = 404, _json(response)
                return
            attempt += 1
            await asyncio.sleep(min(0.1 * 2.0**attempt, 1.0))

    async def current_version(self, order_id: str) -> int | None:
        """The order's version as GET /orders/{id} shows it; None when it does not exist."""
        deadline = time.monotonic() + REQUEST_BUDGET_S
        attempt = 0
        while time.monotonic() < deadline:
            try:
                response = await self.client.get(
                    self.endpoints.url(f"/orders/{order_id}", self.rng), headers=self.auth
                )
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 200:
                return int(_json(response)["version"])
            if response is not None and response.status_code == 404:
                return None
            attempt += 1
            await asyncio.sleep(_backoff(attempt, self.rng))
        return None


def _version_after(request: KeyedRequest) -> int | None:
    """The order's version the final answer shows: the new one (2xx) or the current one (409)."""
    answer = request.answer or {}
    if request.final_status in (200, 201):
        return int(answer["version"])
    if request.final_status == 409 and answer.get("current_version") is not None:
        return int(answer["current_version"])
    return None


def _backoff(attempt: int, rng: random.Random) -> float:
    return min(0.1 * 2.0**attempt, 1.5) * rng.uniform(0.5, 1.0)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def drive(
    endpoints: Endpoints,
    tokens: list[str],
    restaurants: list[uuid.UUID],
    log: AnswerLog,
    stop: asyncio.Event,
    *,
    run_tag: str,
    seed: int,
) -> None:
    """Runs one terminal per token until `stop`; each finishes the request in hand."""
    limits = httpx.Limits(max_connections=len(tokens) * 2, max_keepalive_connections=len(tokens))
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, limits=limits) as client:
        terminals = [
            Terminal(n, client, endpoints, token, restaurants, log, run_tag, seed * 1000 + n)
            for n, token in enumerate(tokens)
        ]
        await asyncio.gather(*(t.run(stop) for t in terminals))
