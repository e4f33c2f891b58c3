"""Sentry for both services, named as the runbook searches, and trace propagation through Kafka.

Off when SENTRY_DSN is unset: every function here is then a cheap no-op.
- `order-status-conflict` / `order-status-forbidden`: one message per 409 / 403 answered by the API.
- `order-status-exception`: every exception event (with its stack trace) of either service.
- `order-status-success`: the API transaction of an applied status change, with `duration_ms`.
- One trace: the API's transaction -> `sentry-trace`/`baggage` Kafka headers on the command ->
  the worker's `queue.process` transaction for that command (same trace id, child of the API)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.types import Event, Hint

from services.adapters.settings import Settings
from services.core.messages import Outcome
from services.core.outcomes import OUTCOME_NAMES

CONFLICT = OUTCOME_NAMES[Outcome.CONFLICT].sentry_name
FORBIDDEN = OUTCOME_NAMES[Outcome.FORBIDDEN].sentry_name
EXCEPTION = OUTCOME_NAMES[Outcome.ERROR].sentry_name
SUCCESS = OUTCOME_NAMES[Outcome.APPLIED].sentry_name
WORKER_TRANSACTION = "order-status-command"

MESSAGE_OF_EVENT = {
    names.evt: names.sentry_name for names in OUTCOME_NAMES.values() if names.sentry_message
}
"""The API's log `evt` of an answer -> the Sentry message sent for it."""

TRACE_HEADERS = ("sentry-trace", "baggage")

HeaderValue = str | bytes | None
Headers = Sequence[tuple[str, HeaderValue]] | Mapping[str, HeaderValue]


def init_sentry(settings: Settings, service: str) -> bool:
    """Starts the SDK when SENTRY_DSN is set; returns whether it did."""
    if not settings.sentry_dsn:
        return False
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.environment,
        release=settings.sentry_release,
        server_name=service,
        sample_rate=settings.sentry_sample_rate,
        traces_sample_rate=settings.sentry_traces_sample_rate,
        send_default_pii=False,
        before_send=name_runbook_events,
        integrations=[LoggingIntegration(level=logging.INFO, event_level=logging.ERROR)],
    )
    sentry_sdk.set_tag("service", service)
    return True


def active() -> bool:
    return sentry_sdk.get_client().is_active()


def name_runbook_events(event: Event, hint: Hint) -> Event | None:
    """Every exception becomes `order-status-exception` (stack trace kept). A logged outcome line
    without an exception is dropped: its exception, if any, was captured where it was raised."""
    record = hint.get("log_record")
    if "exception" in event:
        original = event.get("logentry", {}).get("formatted") if "logentry" in event else None
        event["logentry"] = {"message": EXCEPTION, "formatted": EXCEPTION, "params": []}
        event["fingerprint"] = [EXCEPTION, "{{ default }}"]
        event.setdefault("tags", {})["runbook_event"] = EXCEPTION
        if original:
            event.setdefault("extra", {})["log_message"] = original
        return event
    if record is not None and str(getattr(record, "evt", "")).startswith("order_status_"):
        return None
    return event


def report_answer(
    *,
    evt: str | None,
    route: str,
    method: str,
    status: int,
    duration_ms: float,
    context: Mapping[str, Any],
) -> None:
    """Called by the API once per answered request."""
    if not active():
        return
    transaction = sentry_sdk.get_current_scope().transaction
    if transaction is not None:
        transaction.set_data("duration_ms", duration_ms)
        if context.get("rid"):
            transaction.set_tag("rid", str(context["rid"]))
        if evt:
            transaction.set_tag("evt", evt)
        if (
            evt == OUTCOME_NAMES[Outcome.APPLIED].evt
            and method == "PATCH"
            and route.endswith("/status")
        ):
            transaction.name = SUCCESS
            transaction.source = "custom"
    message = MESSAGE_OF_EVENT.get(evt or "")
    if message is None:
        return
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("runbook_event", message)
        scope.set_tag("http.status_code", str(status))
        for key in ("rid", "order_id", "restaurant_id", "command_id"):
            if context.get(key):
                scope.set_tag(key, str(context[key]))
        scope.set_context("order", {k: str(v) for k, v in context.items() if v is not None})
        sentry_sdk.capture_message(message, level="warning")


def trace_headers() -> list[tuple[str, bytes]]:
    """Kafka headers continuing the current trace in whoever consumes the message."""
    if not active():
        return []
    values = (sentry_sdk.get_traceparent(), sentry_sdk.get_baggage())
    return [
        (name, value.encode()) for name, value in zip(TRACE_HEADERS, values, strict=True) if value
    ]


def carried_trace(headers: Headers | None) -> dict[str, str]:
    """The trace headers among a Kafka message's headers, as continue_trace wants them."""
    carried: dict[str, str] = {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for name, value in pairs:
        if name in TRACE_HEADERS and value:
            carried[name] = value.decode(errors="replace") if isinstance(value, bytes) else value
    return carried


def trace_command(
    headers: Headers | None, *, started: datetime, ok: bool, data: Mapping[str, Any]
) -> None:
    """A worker transaction for one processed command, in the trace its headers carry."""
    if not active():
        return
    with sentry_sdk.isolation_scope():
        transaction = sentry_sdk.continue_trace(
            carried_trace(headers), op="queue.process", name=WORKER_TRANSACTION, source="task"
        )
        with sentry_sdk.start_transaction(transaction, start_timestamp=started) as span:
            span.set_status("ok" if ok else "internal_error")
            for key, value in data.items():
                span.set_data(key, value)
