"""Routes for staff apps and kitchen screens, which otherwise could only poll one order at a time:

- `GET /orders?restaurant_id=…&status=…&cursor=…&limit=…`: a restaurant's open orders (or those in
  the given statuses) by status and age, keyset-paginated;
- `GET /restaurants/{restaurant_id}/events/stream`: its order events live, as Server-Sent Events
  from the events topic (the CloudEvent as `data`), resumable with `Last-Event-ID`.

Both read as the caller: the caller must be allowed to act for the restaurant (the policies' own
rule, checked in PostgreSQL; 403 otherwise), and orders are read under row-level security. A stream
re-checks that every heartbeat and ends once the caller's access is revoked or its token expired."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated
from uuid import UUID

import jwt
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from services.command_api.event_hub import Delivery, EventHub, Subscription
from services.command_api.feed_db import FeedReads
from services.command_api.feed_tokens import (
    CURSOR_PATTERN,
    POSITIONS_MAX_LENGTH,
    OrderCursor,
    decode_cursor,
    decode_positions,
    encode_cursor,
    encode_positions,
    merged,
)
from services.command_api.http import ActorDep, app_state, reads_of
from services.command_api.problems import PROBLEM_RESPONSES, ProblemError
from services.core.messages import Actor
from services.core.statuses import TRANSITIONS, OrderStatus

OPEN_STATUSES = tuple(status for status in OrderStatus if TRANSITIONS[status])
"""Statuses an order can still leave: what a kitchen screen shows by default."""
RETRY_MS = 2000
"""How long an EventSource waits before it reconnects (with Last-Event-ID)."""
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

router = APIRouter()


class ListedOrder(BaseModel):
    order_id: UUID
    restaurant_id: UUID
    status: OrderStatus
    version: int
    created_at: datetime
    updated_at: datetime


class OrderPage(BaseModel):
    orders: list[ListedOrder]
    next_cursor: str | None
    """Pass as `cursor` for the next page; null on the last one."""


def hub_of(request: Request) -> EventHub:
    return app_state(request, "event_hub", EventHub)


def feed_of(request: Request) -> FeedReads:
    return FeedReads(reads_of(request).read_pool)  # may lag: DATABASE_READ_URL


async def _require_access(feed: FeedReads, restaurant_id: UUID, actor: Actor) -> None:
    if not await feed.may_act_for(restaurant_id, actor):
        raise ProblemError(
            403, "restaurant-forbidden", "Not allowed for this restaurant", str(restaurant_id)
        )


@router.get("/orders", response_model=OrderPage, responses=PROBLEM_RESPONSES)
async def list_orders(
    request: Request,
    actor: ActorDep,
    restaurant_id: UUID,
    status: Annotated[list[OrderStatus] | None, Query()] = None,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> OrderPage:
    """Open orders by status, then oldest first. `status` may repeat; default: every open one."""
    feed = feed_of(request)
    await _require_access(feed, restaurant_id, actor)
    try:
        after = decode_cursor(cursor) if cursor else None
    except ValueError:
        raise ProblemError(422, "invalid-cursor", "Invalid cursor", "Use a next_cursor.") from None
    statuses = sorted(set(status or OPEN_STATUSES))
    rows = await feed.open_orders(restaurant_id, statuses, after, limit + 1, actor)
    page = [
        ListedOrder(order_id=row.pop("id"), **row)  # the row's other columns are the fields
        for row in rows[:limit]
    ]
    last = page[-1] if len(rows) > limit else None
    return OrderPage(
        orders=page,
        next_cursor=encode_cursor(OrderCursor(last.status, last.created_at, last.order_id))
        if last
        else None,
    )


@router.get(
    "/restaurants/{restaurant_id}/events/stream",
    responses={
        **PROBLEM_RESPONSES,
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
    },
    response_class=StreamingResponse,
)
async def event_stream(
    restaurant_id: UUID,
    request: Request,
    actor: ActorDep,
    last_event_id: Annotated[str, Header(max_length=POSITIONS_MAX_LENGTH)] = "",
) -> StreamingResponse:
    """Each event: `id` (where to resume) and `data` (the CloudEvent, docs/consuming-events.md)."""
    feed = feed_of(request)
    await _require_access(feed, restaurant_id, actor)
    try:
        floor = decode_positions(last_event_id) if last_event_id else None
    except ValueError:
        raise ProblemError(
            422, "invalid-last-event-id", "Invalid Last-Event-ID", "Send an id this stream sent."
        ) from None
    hub = hub_of(request)
    if not hub.ready:
        raise ProblemError(
            503, "stream-unavailable", "Event stream unavailable", headers={"Retry-After": "2"}
        )
    subscription = hub.subscribe(restaurant_id, floor)
    ends_at = _token_expiry(request)
    frames = _frames(hub, subscription, feed, actor, ends_at, resumed=floor is not None)
    return StreamingResponse(frames, media_type="text/event-stream", headers=SSE_HEADERS)


def _token_expiry(request: Request) -> float:
    """The bearer token's `exp` (already verified by `authenticated`): no stream outlives it."""
    token = request.headers["authorization"].partition(" ")[2].strip()
    return float(jwt.decode(token, options={"verify_signature": False})["exp"])


async def _frames(
    hub: EventHub,
    subscription: Subscription,
    feed: FeedReads,
    actor: Actor,
    ends_at: float,
    resumed: bool,
) -> AsyncIterator[str]:
    heartbeat_s = hub.settings.api_event_stream_heartbeat_s
    try:
        yield f"retry: {RETRY_MS}\n\n"
        if resumed:
            async for delivery in hub.catch_up(subscription):
                yield _frame(delivery)
        # From here on the live events: tell the client where that is, in case none comes.
        yield f"id: {encode_positions(merged(subscription.start, subscription.floor))}\n\n"
        while not subscription.ended:
            try:
                delivery = await asyncio.wait_for(subscription.queue.get(), heartbeat_s)
            except TimeoutError:
                if time.time() >= ends_at or not await feed.may_act_for(
                    subscription.restaurant_id, actor
                ):
                    return  # the client reconnects with a valid token, or is refused
                # Nothing queued: everything handed out so far has been sent.
                at = encode_positions(merged(hub.position(), subscription.floor))
                yield f": keep-alive\nid: {at}\n\n"
                continue
            yield _frame(delivery)
    finally:
        hub.unsubscribe(subscription)


def _frame(delivery: Delivery) -> str:
    return f"id: {delivery.resume_at}\ndata: {delivery.data}\n\n"
