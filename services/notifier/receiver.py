"""A small webhook receiver: a minimal HTTP/1.1 server on asyncio (keep-alive, Content-Length
bodies) that hands each POST to a handler. `orderstatus webhook-receiver` verifies signatures and
prints what arrives; the tests and the benchmark give it handlers that fail, hang or count."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from services.notifier.signing import InvalidSignature, verify

MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Answer:
    status: int = 204
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


Handler = Callable[[Delivery], Awaitable[Answer]]

_REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized"}


async def _serve_connection(
    handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            _method, path, _version = lines[0].split(" ", 2)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if length > MAX_BODY:
                return
            body = await reader.readexactly(length) if length else b""
            answer = await handler(Delivery(path, headers, body))
            reason = _REASONS.get(answer.status, "Status")
            out = [f"HTTP/1.1 {answer.status} {reason}", f"content-length: {len(answer.body)}"]
            out += [f"{k}: {v}" for k, v in answer.headers]
            writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + answer.body)
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                return
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
        return
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def start_receiver(handler: Handler, host: str, port: int) -> asyncio.Server:
    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A kept-alive connection cancelled when the receiver shuts down ends here: asyncio's
        # stream callback would otherwise print the cancellation as an error (Python 3.11).
        with contextlib.suppress(asyncio.CancelledError):
            await _serve_connection(handler, reader, writer)

    return await asyncio.start_server(on_connection, host, port, backlog=1024)


@contextlib.contextmanager
def receiver_in_thread(handler: Handler, host: str = "127.0.0.1") -> Iterator[int]:
    """Runs a receiver on its own event loop in a daemon thread; yields its port."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    # Started from the thread's loop, so a caller that runs a loop of its own (the demo) may use it.
    server = asyncio.run_coroutine_threadsafe(start_receiver(handler, host, 0), loop).result(10)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:

        async def shut() -> None:
            server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shut(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def describe(delivery: Delivery, secret: str) -> tuple[bool, str]:
    """Verifies one delivery; the line `orderstatus webhook-receiver` prints for it."""
    try:
        msg_id = verify(secret, delivery.headers, delivery.body, time.time())
    except InvalidSignature as exc:
        return False, f"REJECTED {delivery.headers.get('webhook-id', '?')}: {exc}"
    try:
        event = json.loads(delivery.body)
        data = event.get("data", {})
        what = (
            f"{event.get('type', '?')} order {str(data.get('order_id', '?'))[:8]} "
            f"v{data.get('version', '?')} {data.get('from_status') or '-'} -> {data.get('to_status', '?')}"
        )
    except (ValueError, AttributeError):
        what = f"{len(delivery.body)} bytes (not JSON)"
    return True, f"verified {msg_id}: {what}"


async def run_receiver(secret: str, host: str, port: int) -> None:
    async def handle(delivery: Delivery) -> Answer:
        ok, line = describe(delivery, secret)
        print(line, flush=True)
        return Answer(204) if ok else Answer(401, body=b"invalid signature")

    server = await start_receiver(handle, host, port)
    print(f"webhook receiver listening on http://{host}:{port}/", flush=True)
    async with server:
        await server.serve_forever()
