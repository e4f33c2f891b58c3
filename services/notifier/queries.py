"""Named SQL of the webhook tables (migrations 0010, 0011): the notifier's, as the services' role,
and the API's, as the caller (row-level security decides which endpoints the caller sees)."""

from __future__ import annotations

# ---- the notifier ---------------------------------------------------------------------------------

# Taken by every transaction that changes which delivery is an (endpoint, order)'s head: recording
# events, recording attempts, recover. Serialised, an insert always sees a head that just finished.
LOCK_HEADS = "SELECT pg_advisory_xact_lock(1248622345)"

# Batches are columns of arrays, sent in binary (%b): in text form every element is quoted and
# escaped in Python, which held the event loop for ms per batch (JSON bodies are full of quotes).

# A batch of events, a delivery per (event, endpoint of its restaurant that wants its type); a
# disabled endpoint's are kept held (for recover). One statement: the endpoints are read under
# LOCK_HEADS, in the transaction's round trip. Already recorded (a batch re-read): left as is.
RECORD_DELIVERIES = """
WITH events AS (
    SELECT * FROM unnest(
        %(restaurant_ids)b::uuid[], %(event_ids)b::text[], %(event_types)b::text[],
        %(order_ids)b::uuid[], %(versions)b::int[], %(bodies)b::bytea[],
        %(event_times)b::timestamptz[]
    ) AS ev (restaurant_id, event_id, event_type, order_id, version, body, event_time)
)
INSERT INTO webhook_deliveries
    (endpoint_id, restaurant_id, event_id, event_type, order_id, version, body, event_time, status)
SELECT e.id, ev.restaurant_id, ev.event_id, ev.event_type, ev.order_id, ev.version, ev.body,
       ev.event_time, CASE WHEN e.status = 'enabled' THEN 'waiting' ELSE 'held' END
FROM events AS ev
JOIN webhook_endpoints AS e ON e.restaurant_id = ev.restaurant_id
WHERE e.event_types IS NULL OR cardinality(e.event_types) = 0 OR ev.event_type = ANY(e.event_types)
ON CONFLICT (endpoint_id, event_id) DO NOTHING
"""

# Of each given (endpoint, order) without a pending head, the lowest waiting version becomes it;
# returned with what sending it needs, so the dispatcher can start it without asking again.
_PROMOTE_PAIRS = """
), heads AS (
    SELECT (
        SELECT w.id FROM webhook_deliveries AS w
        WHERE w.endpoint_id = pairs.endpoint_id AND w.order_id = pairs.order_id
          AND w.status = 'waiting'
        ORDER BY w.version
        LIMIT 1
    ) AS id
    FROM pairs
    WHERE NOT EXISTS (
        SELECT 1 FROM webhook_deliveries AS head
        WHERE head.endpoint_id = pairs.endpoint_id AND head.order_id = pairs.order_id
          AND head.status = 'pending'
    )
)
UPDATE webhook_deliveries AS d
SET status = 'pending', next_attempt_at = now()
FROM heads, webhook_endpoints AS e
WHERE d.id = heads.id AND e.id = d.endpoint_id
RETURNING d.id, d.endpoint_id, d.event_id, d.order_id, d.version, d.body, d.attempts,
          d.event_time, e.url, e.secret, e.previous_secret, e.previous_secret_expires_at,
          e.status AS endpoint_status
"""

PROMOTE_HEADS = (
    """
WITH pairs AS (
    SELECT DISTINCT endpoint_id, order_id
    FROM unnest(%(endpoint_ids)b::uuid[], %(order_ids)b::uuid[]) AS p (endpoint_id, order_id)"""
    + _PROMOTE_PAIRS
)

# The same for the orders of a batch of events: every endpoint of the order's restaurant.
PROMOTE_HEADS_OF_ORDERS = (
    """
WITH pairs AS (
    SELECT DISTINCT e.id AS endpoint_id, o.order_id
    FROM unnest(%(restaurant_ids)b::uuid[], %(order_ids)b::uuid[]) AS o (restaurant_id, order_id)
    JOIN webhook_endpoints AS e ON e.restaurant_id = o.restaurant_id"""
    + _PROMOTE_PAIRS
)

# Heads due now, oldest first; not those in flight, nor of endpoints whose host has no room.
DUE_DELIVERIES = """
SELECT d.id, d.endpoint_id, d.event_id, d.order_id, d.version, d.body, d.attempts, d.event_time,
       e.url, e.secret, e.previous_secret, e.previous_secret_expires_at
FROM webhook_deliveries AS d
JOIN webhook_endpoints AS e ON e.id = d.endpoint_id
WHERE d.status = 'pending'
  AND d.next_attempt_at <= now()
  AND e.status = 'enabled'
  AND d.id <> ALL(%(in_flight)s::bigint[])
  AND d.endpoint_id <> ALL(%(busy_endpoints)s::uuid[])
ORDER BY d.next_attempt_at
LIMIT %(limit)s
"""

# A batch of finished attempts, set-based (one statement each however many): columns as arrays.
RECORD_ATTEMPTS = """
INSERT INTO webhook_attempts
    (delivery_id, endpoint_id, restaurant_id, event_id, order_id, attempted_at, status_code,
     latency_ms, error, next_retry_at)
SELECT d.id, d.endpoint_id, d.restaurant_id, d.event_id, d.order_id, a.attempted_at,
       a.status_code, a.latency_ms, a.error, a.next_retry_at
FROM unnest(
    %(delivery_ids)b::bigint[], %(attempted_ats)b::timestamptz[], %(status_codes)b::int[],
    %(latencies)b::float8[], %(errors)b::text[], %(next_retry_ats)b::timestamptz[]
) AS a (delivery_id, attempted_at, status_code, latency_ms, error, next_retry_at)
JOIN webhook_deliveries AS d ON d.id = a.delivery_id
"""

# An attempt in flight when its endpoint was disabled: a retry verdict leaves it held (for recover).
UPDATE_DELIVERIES = """
UPDATE webhook_deliveries AS d
SET status = CASE WHEN d.status = 'held' AND a.status = 'pending' THEN 'held' ELSE a.status END,
    attempts = d.attempts + 1,
    next_attempt_at = coalesce(a.next_retry_at, d.next_attempt_at),
    delivered_at = CASE WHEN a.status = 'delivered' THEN a.attempted_at END
FROM unnest(
    %(delivery_ids)b::bigint[], %(statuses)b::text[], %(attempted_ats)b::timestamptz[],
    %(next_retry_ats)b::timestamptz[]
) AS a (delivery_id, status, attempted_at, next_retry_at)
WHERE d.id = a.delivery_id AND d.status IN ('pending', 'held')
"""

ENDPOINTS_SUCCEEDED = """
UPDATE webhook_endpoints SET failing_since = NULL
WHERE id = ANY(%(ids)s::uuid[]) AND failing_since IS NOT NULL
"""

ENDPOINTS_FAILED = """
UPDATE webhook_endpoints SET failing_since = %(at)s
WHERE id = ANY(%(ids)s::uuid[]) AND failing_since IS NULL
"""

DISABLE_GONE = """
UPDATE webhook_endpoints
SET status = 'disabled', disabled_reason = 'gone: the receiver answered 410', disabled_at = now()
WHERE id = ANY(%(ids)s::uuid[]) AND status = 'enabled'
RETURNING id
"""

DISABLE_FAILING = """
UPDATE webhook_endpoints
SET status = 'disabled', disabled_at = now(),
    disabled_reason = 'failing since ' || to_char(failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
WHERE id = ANY(%(ids)s::uuid[])
  AND status = 'enabled'
  AND failing_since <= now() - make_interval(secs => %(after_s)s)
RETURNING id
"""

HOLD_PENDING = """
UPDATE webhook_deliveries SET status = 'held'
WHERE endpoint_id = ANY(%(ids)s::uuid[]) AND status IN ('pending', 'waiting')
"""

BACKLOG = """
SELECT count(*) AS pending,
       count(*) FILTER (WHERE attempts > 0) AS retrying,
       coalesce(extract(epoch FROM now() - min(event_time)), 0)::float8 AS oldest_s
FROM webhook_deliveries
WHERE status IN ('pending', 'waiting')
"""

# ---- the API, as the caller -----------------------------------------------------------------------

ENDPOINT_COLUMNS = """id, restaurant_id, url, event_types, description, status, disabled_reason,
    disabled_at, created_at, (previous_secret_expires_at > now()) IS TRUE AS rotating"""

CREATE_ENDPOINT = f"""
INSERT INTO webhook_endpoints (id, restaurant_id, url, event_types, description, secret, created_by)
VALUES (%(id)s, %(restaurant_id)s, %(url)s, %(event_types)s, %(description)s, %(secret)s, %(actor)s)
RETURNING {ENDPOINT_COLUMNS}
"""

ENDPOINTS_OF_RESTAURANT = f"""
SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
WHERE restaurant_id = %(restaurant_id)s
ORDER BY created_at, id
"""

ENDPOINT_BY_ID = f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = %(id)s"

DELETE_ENDPOINT = "DELETE FROM webhook_endpoints WHERE id = %(id)s RETURNING id"

ROTATE_SECRET = f"""
UPDATE webhook_endpoints
SET previous_secret = secret,
    previous_secret_expires_at = now() + make_interval(secs => %(keep_s)s),
    secret = %(secret)s
WHERE id = %(id)s
RETURNING {ENDPOINT_COLUMNS}
"""

ATTEMPTS_OF_ENDPOINT = """
SELECT id, event_id, order_id, attempted_at, status_code, latency_ms, error, next_retry_at
FROM webhook_attempts
WHERE endpoint_id = %(id)s
ORDER BY attempted_at DESC, id DESC
LIMIT %(limit)s
"""

REQUEUE_SINCE = """
UPDATE webhook_deliveries
SET status = 'waiting', next_attempt_at = now(), attempts = 0
WHERE endpoint_id = %(id)s AND created_at >= %(since)s AND status IN ('failed', 'held')
RETURNING endpoint_id, order_id
"""

REENABLE_ENDPOINT = f"""
UPDATE webhook_endpoints
SET status = 'enabled', disabled_reason = NULL, disabled_at = NULL, failing_since = NULL
WHERE id = %(id)s
RETURNING {ENDPOINT_COLUMNS}
"""
