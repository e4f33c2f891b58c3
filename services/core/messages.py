"""Wire contracts: commands (API -> worker), results and events (worker -> everyone).

Every message carries `schema_version`; JSON Schemas in `schemas/` are generated from these models
(`orderstatus schemas`) and a unit test keeps them in step."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from services.core.statuses import OrderStatus

SCHEMA_VERSION: Literal[1] = 1
REASON_MAX_LENGTH = 500
TEXT_PATTERN = r"^[^\x00]*$"
"""PostgreSQL text cannot hold NUL: such input is refused at the door, not deep in the worker."""


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Role(StrEnum):
    AUTHENTICATED = "authenticated"
    SERVICE_ROLE = "service_role"


class Actor(Contract):
    """Who issued a command: the verified JWT claims that authorisation needs, carried to the worker.

    PostgreSQL decides what an actor may do (row-level security, docs/security.md):
    `restaurant_ids`, when non-empty, narrows the token to those restaurants; within that, staff
    (`authenticated`) act for the restaurants `restaurant_staff` grants them, `service_role` for
    any."""

    sub: str = Field(min_length=1, max_length=200, pattern=TEXT_PATTERN)
    role: Role
    restaurant_ids: tuple[UUID, ...] = ()


class CommandBase(Contract):
    schema_version: Literal[1] = SCHEMA_VERSION
    command_id: UUID
    order_id: UUID
    actor: Actor
    rid: str = Field("", max_length=200, description="Request id, for logs across services")
    # Aware only: the worker subtracts it from its own UTC clock.
    issued_at: AwareDatetime


class CreateOrder(CommandBase):
    type: Literal["create_order"] = "create_order"
    restaurant_id: UUID


class ChangeStatus(CommandBase):
    type: Literal["change_status"] = "change_status"
    status: OrderStatus
    expected_version: int | None = Field(None, ge=1)
    reason: str | None = Field(None, max_length=REASON_MAX_LENGTH, pattern=TEXT_PATTERN)


Command = Annotated[CreateOrder | ChangeStatus, Field(discriminator="type")]
COMMAND_ADAPTER: TypeAdapter[CreateOrder | ChangeStatus] = TypeAdapter(Command)


class Outcome(StrEnum):
    APPLIED = "applied"
    CONFLICT = "conflict"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    INVALID = "invalid"
    ERROR = "error"


class ConflictType(StrEnum):
    STALE_VERSION = "stale-version"
    INVALID_TRANSITION = "invalid-transition"
    ORDER_EXISTS = "order-exists"


class OrderView(Contract):
    order_id: UUID
    restaurant_id: UUID
    status: OrderStatus
    version: int
    updated_at: datetime


class CommandResult(Contract):
    """The one outcome of one command. `order` is the state after it (or the current state on 409)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    command_id: UUID
    order_id: UUID
    command_type: Literal["create_order", "change_status", "unknown"]
    outcome: Outcome
    conflict: ConflictType | None = None
    order: OrderView | None = None
    detail: str = ""
    rid: str = ""
    processed_at: datetime


class OrderEvent(Contract):
    """The worker's record of one applied change, kept in the inbox (`command_outcomes.event`).
    The events topic carries its public form, a CloudEvent (services/core/events.py)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: UUID
    type: Literal["order.created", "order.status_changed"]
    order_id: UUID
    restaurant_id: UUID
    from_status: OrderStatus | None
    to_status: OrderStatus
    version: int
    actor_sub: str
    reason: str | None = None
    rid: str = ""
    occurred_at: datetime


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json().encode()


def decode_command(raw: bytes | None) -> CreateOrder | ChangeStatus:
    """Raises pydantic.ValidationError (or ValueError for a missing value) on anything malformed."""
    if raw is None:
        raise ValueError("empty message value")
    return COMMAND_ADAPTER.validate_json(raw)


def decode_result(raw: bytes) -> CommandResult:
    return CommandResult.model_validate_json(raw)


def decode_event(raw: bytes) -> OrderEvent:
    return OrderEvent.model_validate_json(raw)
