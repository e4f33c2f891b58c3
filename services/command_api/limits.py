"""Request size limits, checked before routing, authentication or JSON parsing: headers larger than
API_MAX_HEADER_BYTES get 431, bodies larger than API_MAX_BODY_BYTES get 413 (by Content-Length
before a byte is read, or as soon as a streamed body passes the limit).

uvicorn's httptools parser has no header limit of its own, so this is the API's; a proxy in front
should cap both as well (docs/security.md)."""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM_JSON = b"application/problem+json"


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
    body = orjson.dumps({"type": f"/problems/{kind}", "title": title, "status": status})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
