"""The delivery client: one POST per attempt, a minimal HTTP/1.1 client on asyncio streams (httpx,
and then h11, cost several times the CPU per request of the whole rest of a delivery), keep-alive
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


MAX_HEAD_BYTES = 16384


class ProtocolError(Exception):
    """The receiver's answer is not HTTP/1.x we understand."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

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
        except (OSError, ProtocolError, _StaleConnection) as exc:
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
        lines = [
            f"POST {target.path} HTTP/1.1",
            f"host: {host}",
            "content-type: application/cloudevents+json",
            f"content-length: {len(body)}",
            f"user-agent: {USER_AGENT}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        if any("\r" in line or "\n" in line for line in lines):
            raise ProtocolError("a header value holds a line break")
        head = "\r\n".join(lines)
        connection.writer.write(head.encode("latin-1") + b"\r\n\r\n" + body)
        await connection.writer.drain()
        reader = connection.reader
        status, version, answer_headers = await _answer_head(reader, reused)
        retry_after = answer_headers.get("retry-after")
        keep = version == "HTTP/1.1" and answer_headers.get("connection", "").lower() != "close"
        length_header = answer_headers.get("content-length")
        if status in (204, 304):
            length: int | None = 0
        elif length_header is not None and "chunked" not in answer_headers.get(
            "transfer-encoding", ""
        ):
            try:
                length = int(length_header)
            except ValueError:
                raise ProtocolError("bad content-length") from None
        else:
            length = None  # chunked or until close: read a little, then drop the connection
        cap = self.limits.max_response_bytes
        if length is None or length > cap:
            await reader.read(cap)
            return status, retry_after, False
        if length:
            try:
                await reader.readexactly(length)
            except asyncio.IncompleteReadError:
                raise ProtocolError("the receiver closed the connection mid-body") from None
        return status, retry_after, keep


async def _answer_head(
    reader: asyncio.StreamReader, reused: bool
) -> tuple[int, str, dict[str, str]]:
    """The final answer's status, HTTP version and headers (1xx answers are skipped)."""
    while True:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if reused and not exc.partial:
                raise _StaleConnection("closed by the receiver while idle") from None
            raise ProtocolError("the receiver closed the connection mid-answer") from None
        except asyncio.LimitOverrunError:
            raise ProtocolError("answer head too long") from None
        status, version, headers = _parse_head(raw)
        if status >= 200:
            return status, version, headers


def _parse_head(raw: bytes) -> tuple[int, str, dict[str, str]]:
    """Status, version and headers (lower-cased names) of an answer's head."""
    if len(raw) > MAX_HEAD_BYTES:
        raise ProtocolError("answer head too long")
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1 status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError("malformed header line")
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), parts[0], headers
