"""The public event contract: each applied change is one CloudEvents 1.0 event (structured JSON
mode) on the events topic, keyed by order id. Downstream services, the webhook notifier, the SSE
stream and the CLI all read this and nothing else; `OrderEvent` stays the worker's internal record.

Versioned by `type` (`….v1`): a breaking change gets a new type, never a changed meaning. The JSON
Schema in `schemas/order-event.schema.json` is generated from these models and checked against its
earlier versions in `schemas/history/` (tests/unit/test_schema_compat.py). See
docs/consuming-events.md."""

from __future__ import annotations

from datetime import UTC
from typing import Final, Literal
from uuid import UUID

from pydantic import AwareDatetime, ConfigDict, Field, field_serializer, model_validator

from services.core.messages import Contract, OrderEvent
from services.core.statuses import OrderStatus

SPEC_VERSION: Literal["1.0"] = "1.0"
EVENT_SOURCE = "/order-status/status-worker"
EVENT_TYPE_CREATED: Final = "com.orderstatus.order.created.v1"
EVENT_TYPE_STATUS_CHANGED: Final = "com.orderstatus.order.status_changed.v1"
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"
DATA_CONTENT_TYPE: Literal["application/json"] = "application/json"
HEADER_CONTENT_TYPE = "content-type"

EventType = Literal["com.orderstatus.order.created.v1", "com.orderstatus.order.status_changed.v1"]
TYPE_OF_INTERNAL: dict[str, EventType] = {
    "order.created": EVENT_TYPE_CREATED,
    "order.status_changed": EVENT_TYPE_STATUS_CHANGED,
}


TOLERANT = ConfigDict(extra="ignore", frozen=True)
"""Members this version does not know are ignored, not refused: CloudEvents extension attributes,
and optional fields a later compatible version adds, must not break an older consumer."""


class OrderChangeData(Contract):
    """What changed: the order, its restaurant, the transition, the new version and who did it."""

    model_config = TOLERANT

    order_id: UUID
    restaurant_id: UUID
    from_status: OrderStatus | None = Field(description="null when the order was created")
    to_status: OrderStatus
    version: int = Field(ge=1, description="The order's version after this change; 1 on create")
    command_id: UUID
    actor: str = Field(description="The `sub` of the caller who issued the command")
    reason: str | None
    rid: str = Field(description="Request id, for logs across services; may be empty")


class OrderCloudEvent(Contract):
    """A CloudEvents 1.0 envelope; every field is always present. `id` is the command id: the same change always has the same
    id (also when the worker redoes a batch), so consumers dedupe by it or by (order, version)."""

    model_config = TOLERANT

    specversion: Literal["1.0"]
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: EventType
    subject: str = Field(min_length=1, description="The order id")
    time: AwareDatetime = Field(description="When the change was applied (the order's updated_at)")
    datacontenttype: Literal["application/json"]
    data: OrderChangeData

    @field_serializer("time")
    def _utc(self, time: AwareDatetime) -> str:
        """Always UTC with microseconds and `Z`, so times sort as text and compare across sources."""
        return time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    @model_validator(mode="after")
    def _subject_is_the_order(self) -> OrderCloudEvent:
        if self.subject != str(self.data.order_id):
            raise ValueError("subject must be the order id (data.order_id)")
        return self


def cloud_event_of(event: OrderEvent) -> OrderCloudEvent:
    """The public form of one applied change, from the worker's internal record."""
    return OrderCloudEvent(
        specversion=SPEC_VERSION,
        id=str(event.event_id),
        source=EVENT_SOURCE,
        type=TYPE_OF_INTERNAL[event.type],
        subject=str(event.order_id),
        time=event.occurred_at,
        datacontenttype=DATA_CONTENT_TYPE,
        data=OrderChangeData(
            order_id=event.order_id,
            restaurant_id=event.restaurant_id,
            from_status=event.from_status,
            to_status=event.to_status,
            version=event.version,
            command_id=event.event_id,
            actor=event.actor_sub,
            reason=event.reason,
            rid=event.rid,
        ),
    )


def encode_cloud_event(event: OrderCloudEvent) -> bytes:
    return event.model_dump_json().encode()


def decode_cloud_event(raw: bytes) -> OrderCloudEvent:
    """Raises ValueError (pydantic.ValidationError is one) on anything but a valid event."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise ValueError("an event value must be bytes")
    return OrderCloudEvent.model_validate_json(bytes(raw))
