"""The doctor's webhook check: how far behind the notifier's deliveries are, and which endpoints it
disabled (docs/webhooks.md, alert WebhookDeliveriesDelayed)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from services.adapters.settings import Settings
from services.ops.verdicts import Judged, Verdict

DELAYED_AFTER_S = 900.0
"""As the alert: the oldest undelivered event older than this is a warning."""

WEBHOOK_STATE = """
SELECT (SELECT count(*) FROM webhook_deliveries WHERE status IN ('pending', 'waiting')) AS undelivered,
       (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending' AND attempts > 0) AS retrying,
       (SELECT coalesce(extract(epoch FROM now() - min(event_time)), 0)::float8
        FROM webhook_deliveries WHERE status IN ('pending', 'waiting')) AS oldest_s,
       (SELECT count(*) FROM webhook_endpoints WHERE status = 'disabled') AS disabled,
       (SELECT count(*) FROM webhook_endpoints) AS endpoints
"""


def judge_webhooks(state: dict[str, Any]) -> Judged:
    endpoints, disabled = int(state["endpoints"]), int(state["disabled"])
    oldest, undelivered = float(state["oldest_s"]), int(state["undelivered"])
    if endpoints == 0:
        return Judged(Verdict.INFO, "no webhook endpoint registered")
    behind = f"{undelivered} undelivered ({int(state['retrying'])} retrying), oldest {oldest:.0f} s"
    if oldest > DELAYED_AFTER_S:
        return Judged(Verdict.WARN, f"deliveries delayed: {behind}")
    if disabled:
        return Judged(Verdict.WARN, f"{disabled} of {endpoints} endpoints disabled; {behind}")
    return Judged(Verdict.OK, f"{endpoints} endpoints; {behind}")


def webhook_state(settings: Settings) -> dict[str, Any]:
    with psycopg.connect(settings.admin_url, connect_timeout=5, row_factory=dict_row) as conn:
        row = conn.execute(WEBHOOK_STATE).fetchone()
    assert row is not None
    return row
