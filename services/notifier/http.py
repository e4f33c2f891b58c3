"""The delivery client: one POST per attempt with an async HTTP client, a connection pool per
receiving host (so a hung receiver uses up only its own pool), the address checked before
connecting and connected to as checked, no redirects, connect and total timeouts, and at most a few
KiB of the response read."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import httpx

from services.notifier.addresses import (
    IPAddress,
    IPNetwork,
    RefusedURL,
    Target,
    first_allowed,
    target_of,
)
from services.notifier.schedule import AttemptResult, result_of_status

USER_AGENT = "orderstatus-notifier/1"


@dataclass(frozen=True)
class AttemptOutcome:
    result: AttemptResult
    latency_ms: float
    status_code: int | None = None
    error: str | None = None
    retry_after: str | None = None


@dataclass(frozen=True)
class DeliveryLimits:
    connect_timeout_s: float
    total_timeout_s: float
    max_response_bytes: int
    per_host_connections: int


async def resolve(host: str, port: int) -> list[IPAddress]:
    """The host's addresses (an IP literal is its own answer)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0]) for info in infos]


async def checked_address(url: str, allowed: Iterable[IPNetwork]) -> tuple[Target, IPAddress]:
    """The URL's parts and the address to connect to, or RefusedURL (the reason says why)."""
    target = target_of(url)
    try:
        addresses = await resolve(target.host, target.port)
    except OSError as exc:
        raise RefusedURL(f"the host does not resolve: {exc.strerror or exc}") from None
    return target, first_allowed(addresses, allowed)


def host_key(url: str) -> str:
    """Which pool (and which share of the in-flight budget) a URL's deliveries use."""
    try:
        target = target_of(url)
    except RefusedURL:
        return url
    return f"{target.scheme}://{target.host}:{target.port}"


class DeliveryClient:
    """Holds one httpx pool per (scheme, host, port, address)."""

    def __init__(self, limits: DeliveryLimits, allowed: Iterable[IPNetwork]) -> None:
        self.limits = limits
        self.allowed = tuple(allowed)
        self._pools: dict[tuple[str, str, int, str], httpx.AsyncClient] = {}

    def _pool(self, target: Target, address: IPAddress) -> httpx.AsyncClient:
        key = (target.scheme, target.host, target.port, str(address))
        pool = self._pools.get(key)
        if pool is None:
            size = self.limits.per_host_connections
            pool = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,  # no proxy from the environment: we connect where we checked
                timeout=httpx.Timeout(
                    self.limits.total_timeout_s, connect=self.limits.connect_timeout_s
                ),
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            )
            self._pools[key] = pool
        return pool

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
        self._pools.clear()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptOutcome:
        """One attempt; never raises for anything the receiver or the network does."""
        started = time.perf_counter()

        def elapsed() -> float:
            return round((time.perf_counter() - started) * 1000, 2)

        try:
            async with asyncio.timeout(self.limits.total_timeout_s):
                target, address = await checked_address(url, self.allowed)
                return await self._send(target, address, body, headers, elapsed)
        except RefusedURL as exc:
            return AttemptOutcome(AttemptResult.REFUSED, elapsed(), error=str(exc))
        except (TimeoutError, httpx.TimeoutException):
            return AttemptOutcome(AttemptResult.TIMEOUT, elapsed(), error="timed out")
        except (httpx.HTTPError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
            return AttemptOutcome(AttemptResult.NETWORK_ERROR, elapsed(), error=error)

    async def _send(
        self,
        target: Target,
        address: IPAddress,
        body: bytes,
        headers: Mapping[str, str],
        elapsed: Callable[[], float],
    ) -> AttemptOutcome:
        literal = f"[{address}]" if address.version == 6 else str(address)
        default_port = 443 if target.scheme == "https" else 80
        host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
        request_headers = {
            **headers,
            "host": host_header,
            "content-type": "application/cloudevents+json",
            "user-agent": USER_AGENT,
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        pool = self._pool(target, address)
        request = pool.build_request(
            "POST",
            f"{target.scheme}://{literal}:{target.port}{target.path}",
            content=body,
            headers=request_headers,
            extensions=extensions,
        )
        response = await pool.send(request, stream=True)
        try:
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= self.limits.max_response_bytes:
                    break  # the rest is not ours to wait for
        finally:
            await response.aclose()
        return AttemptOutcome(
            result_of_status(response.status_code),
            elapsed(),
            status_code=response.status_code,
            retry_after=response.headers.get("retry-after"),
            error=None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}",
        )
