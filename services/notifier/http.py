"""The delivery client: one POST per attempt, HTTP/1.1 on asyncio streams with h11 (httpx costs
about ten times the CPU per request, which capped a core at a few hundred deliveries/s), keep-alive
connections pooled per receiving host (the dispatcher bounds each host's share, so a hung receiver
uses up only its own), the address checked before connecting and connected to as checked, no
redirects (a 3xx is an answer), connect and total timeouts, at most a few KiB of an answer read."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import h11

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


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        self.writer.close()


class _StaleConnection(Exception):
    """A kept-alive connection the receiver had closed: try once more on a fresh one."""


class DeliveryClient:
    """Keeps idle connections per (scheme, host, port, address)."""

    def __init__(self, limits: DeliveryLimits, allowed: Iterable[IPNetwork]) -> None:
        self.limits = limits
        self.allowed = tuple(allowed)
        self._idle: dict[tuple[str, str, int, str], list[_Connection]] = {}
        self._tls = ssl.create_default_context()

    async def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptOutcome:
        """One attempt; never raises for anything the receiver or the network does."""
        started = time.perf_counter()

        def elapsed() -> float:
            return round((time.perf_counter() - started) * 1000, 2)

        try:
            async with asyncio.timeout(self.limits.total_timeout_s):
                target, address = await checked_address(url, self.allowed)
                try:
                    status, retry_after = await self._exchange(target, address, body, headers, True)
                except _StaleConnection:
                    status, retry_after = await self._exchange(
                        target, address, body, headers, False
                    )
        except RefusedURL as exc:
            return AttemptOutcome(AttemptResult.REFUSED, elapsed(), error=str(exc))
        except TimeoutError:
            return AttemptOutcome(AttemptResult.TIMEOUT, elapsed(), error="timed out")
        except (OSError, h11.ProtocolError, _StaleConnection) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
            return AttemptOutcome(AttemptResult.NETWORK_ERROR, elapsed(), error=error)
        return AttemptOutcome(
            result_of_status(status),
            elapsed(),
            status_code=status,
            retry_after=retry_after,
            error=None if 200 <= status < 300 else f"HTTP {status}",
        )

    async def _connect(self, target: Target, address: IPAddress) -> _Connection:
        async with asyncio.timeout(self.limits.connect_timeout_s):
            reader, writer = await asyncio.open_connection(
                str(address),
                target.port,
                ssl=self._tls if target.scheme == "https" else None,
                server_hostname=target.host if target.scheme == "https" else None,
            )
        return _Connection(reader, writer)

    async def _exchange(
        self,
        target: Target,
        address: IPAddress,
        body: bytes,
        headers: Mapping[str, str],
        may_reuse: bool,
    ) -> tuple[int, str | None]:
        key = (target.scheme, target.host, target.port, str(address))
        idle = self._idle.setdefault(key, [])
        connection: _Connection | None = None
        while may_reuse and idle and connection is None:
            candidate = idle.pop()
            if candidate.reader.at_eof() or candidate.writer.is_closing():
                candidate.close()
            else:
                connection = candidate
        reused = connection is not None
        if connection is None:
            connection = await self._connect(target, address)
        keep = False
        try:
            status, retry_after, keep = await self._request(
                connection, target, body, headers, reused
            )
            return status, retry_after
        finally:
            if keep and len(idle) < self.limits.per_host_connections:
                idle.append(connection)
            else:
                connection.close()

    async def _request(
        self,
        connection: _Connection,
        target: Target,
        body: bytes,
        headers: Mapping[str, str],
        reused: bool,
    ) -> tuple[int, str | None, bool]:
        """(status, Retry-After, whether the connection can carry another request)."""
        default_port = 443 if target.scheme == "https" else 80
        host = target.host if target.port == default_port else f"{target.host}:{target.port}"
        conn = connection.h11
        request = h11.Request(
            method="POST",
            target=target.path,
            headers=[
                ("host", host),
                ("content-type", "application/cloudevents+json"),
                ("content-length", str(len(body))),
                ("user-agent", USER_AGENT),
                *headers.items(),
            ],
        )
        out = conn.send(request) or b""
        out += conn.send(h11.Data(data=body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        connection.writer.write(out)
        await connection.writer.drain()
        status: int | None = None
        retry_after: str | None = None
        read = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                chunk = await connection.reader.read(16384)
                if not chunk and status is None and reused:
                    raise _StaleConnection("closed by the receiver while idle")
                conn.receive_data(chunk)
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                for name, value in event.headers:
                    if name == b"retry-after":
                        retry_after = value.decode("latin-1")
                continue
            if isinstance(event, h11.Data):
                read += len(event.data)
                if read >= self.limits.max_response_bytes:
                    assert status is not None
                    return status, retry_after, False  # the rest is not ours to wait for
                continue
            if isinstance(event, h11.EndOfMessage):
                assert status is not None
                reusable = conn.our_state is h11.DONE and conn.their_state is h11.DONE
                if reusable:
                    conn.start_next_cycle()
                return status, retry_after, reusable
            if isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("the receiver closed the connection")
