"""Request limits. Sizes, checked before routing, authentication or JSON parsing: headers larger
than API_MAX_HEADER_BYTES get 431, bodies larger than API_MAX_BODY_BYTES get 413 (by Content-Length
before a byte is read, or as soon as a streamed body passes the limit). Time: a connection must
send a complete request head within API_HEADER_TIMEOUT_S of opening (or of starting the next
request on a kept-alive connection), else it is closed (slowloris).

uvicorn's httptools parser has neither a header limit nor a header timeout of its own (its
keep-alive timer is cancelled by any byte received), so these are the API's; a proxy in front
should enforce both as well (docs/security.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.command_api.problems import PROBLEM_JSON, Problem


class RequestLimits:
    """Pure ASGI middleware."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        header_bytes = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
        header_bytes += sum(len(name) + len(value) + 4 for name, value in headers)
        if header_bytes > self.max_header_bytes:
            await _reject(send, 431, "headers-too-large", "Request header fields too large")
            return
        declared = _content_length(headers)
        if declared is not None and declared > self.max_body_bytes:
            await _reject(send, 413, "body-too-large", "Request body too large")
            return

        received = 0
        rejected = responded = False

        async def counting_receive() -> Message:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # Answer now and tell the app the client is gone: it stops reading, and
                    # whatever it answers to that is dropped below.
                    rejected = True
                    if not responded:
                        await _reject(send, 413, "body-too-large", "Request body too large")
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal responded
            if not rejected:
                responded = True
                await send(message)

        await self.app(scope, counting_receive, guarded_send)


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _reject(send: Send, status: int, kind: str, title: str) -> None:
    """Answers before routing (no Request exists yet): the problems module's body, sent raw."""
    body = orjson.dumps(Problem(status, kind, title).body(None))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request head is not complete
    `head_timeout_s` after the connection opened or after the request's first byte. A class of its
    own module, not one made per call, so uvicorn can name it (`http=HEADER_TIMEOUT_PROTOCOL`) in
    the processes it spawns for API_PROCESSES > 1; each reads API_HEADER_TIMEOUT_S on first use."""

    head_timeout_s: float | None = None
    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_head_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self._timeout_s(), self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    @classmethod
    def _timeout_s(cls) -> float:
        if cls.head_timeout_s is None:
            from services.adapters.settings import Settings

            cls.head_timeout_s = Settings().api_header_timeout_s
        return cls.head_timeout_s


HEADER_TIMEOUT_PROTOCOL = f"{__name__}:{HeaderTimeoutProtocol.__name__}"
"""The protocol as uvicorn imports it (`http=`): the same in every process it spawns."""
