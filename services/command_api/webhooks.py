"""Webhook endpoint routes (`/webhooks/endpoints`): a restaurant's staff or a service token
registers receivers of its order events, rotates their secrets, reads their attempts and resends
after an outage. The notifier (services/notifier/) delivers; row-level security decides who sees
what (an endpoint of another restaurant reads as absent: 404)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.command_api.http import ActorDep, reads_of, settings_of
from services.command_api.problems import PROBLEM_RESPONSES, ProblemError
from services.notifier.addresses import RefusedURL, parse_allowed
from services.notifier.endpoints import EndpointStore, NotPermitted
from services.notifier.http import checked_address
from services.notifier.signing import new_secret

EVENT_TYPE_PATTERN = r"^[a-z0-9]+(\.[a-z0-9_]+)+$"


class EndpointBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    restaurant_id: UUID
    url: str = Field(min_length=8, max_length=2000)
    event_types: list[Annotated[str, Field(max_length=200, pattern=EVENT_TYPE_PATTERN)]] | None = (
        Field(None, max_length=20, description="Only these CloudEvent types; absent: all")
    )
    description: str | None = Field(None, max_length=500)


class RecoverBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: datetime


class Endpoint(BaseModel):
    id: UUID
    restaurant_id: UUID
    url: str
    event_types: list[str] | None
    description: str | None
    status: str
    disabled_reason: str | None
    disabled_at: datetime | None
    created_at: datetime
    rotating: bool = Field(description="A previous secret still signs (after rotate-secret)")


class EndpointWithSecret(Endpoint):
    secret: str = Field(description="whsec_…: shown only here; verify signatures with it")


class Attempt(BaseModel):
    id: int
    event_id: str
    order_id: UUID
    attempted_at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None
    next_retry_at: datetime | None


class Recovered(BaseModel):
    endpoint: Endpoint
    requeued: int


router = APIRouter(prefix="/webhooks/endpoints", tags=["webhooks"])


def _store(request: Request) -> EndpointStore:
    return EndpointStore(reads_of(request).pool)


def _not_found() -> ProblemError:
    return ProblemError(404, "webhook-endpoint-not-found", "Webhook endpoint not found")


def _forbidden() -> ProblemError:
    return ProblemError(
        403, "forbidden", "Forbidden", "You may not manage webhooks of this restaurant."
    )


@router.post("", status_code=201, response_model=EndpointWithSecret, responses=PROBLEM_RESPONSES)
async def create_endpoint(body: EndpointBody, request: Request, actor: ActorDep) -> Any:
    allowed = parse_allowed(settings_of(request).webhook_allowed_cidrs)
    try:
        await checked_address(body.url, allowed)
    except RefusedURL as exc:
        raise ProblemError(422, "webhook-url-refused", "Webhook URL refused", str(exc)) from None
    secret = new_secret()
    try:
        row = await _store(request).create(
            actor,
            endpoint_id=uuid4(),
            restaurant_id=body.restaurant_id,
            url=body.url,
            event_types=body.event_types,
            description=body.description,
            secret=secret,
        )
    except NotPermitted:
        raise _forbidden() from None
    return EndpointWithSecret(**row, secret=secret)


@router.get("", response_model=list[Endpoint], responses=PROBLEM_RESPONSES)
async def list_endpoints(restaurant_id: UUID, request: Request, actor: ActorDep) -> Any:
    return [Endpoint(**row) for row in await _store(request).of_restaurant(actor, restaurant_id)]


@router.delete("/{endpoint_id}", status_code=204, responses=PROBLEM_RESPONSES)
async def delete_endpoint(endpoint_id: UUID, request: Request, actor: ActorDep) -> Response:
    try:
        deleted = await _store(request).delete(actor, endpoint_id)
    except NotPermitted:
        raise _forbidden() from None
    if not deleted:
        raise _not_found()
    return Response(status_code=204)


@router.post(
    "/{endpoint_id}/rotate-secret", response_model=EndpointWithSecret, responses=PROBLEM_RESPONSES
)
async def rotate_secret(endpoint_id: UUID, request: Request, actor: ActorDep) -> Any:
    secret = new_secret()
    keep = settings_of(request).webhook_previous_secret_s
    try:
        row = await _store(request).rotate_secret(actor, endpoint_id, secret, keep)
    except NotPermitted:
        raise _forbidden() from None
    if row is None:
        raise _not_found()
    return EndpointWithSecret(**row, secret=secret)


@router.get("/{endpoint_id}/attempts", response_model=list[Attempt], responses=PROBLEM_RESPONSES)
async def endpoint_attempts(
    endpoint_id: UUID,
    request: Request,
    actor: ActorDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    rows = await _store(request).attempts(actor, endpoint_id, limit)
    if rows is None:
        raise _not_found()
    return [Attempt(**row) for row in rows]


@router.post(
    "/{endpoint_id}/recover", status_code=202, response_model=Recovered, responses=PROBLEM_RESPONSES
)
async def recover(endpoint_id: UUID, body: RecoverBody, request: Request, actor: ActorDep) -> Any:
    try:
        found = await _store(request).recover(actor, endpoint_id, body.since)
    except NotPermitted:
        raise _forbidden() from None
    if found is None:
        raise _not_found()
    row, requeued = found
    return Recovered(endpoint=Endpoint(**row), requeued=requeued)
