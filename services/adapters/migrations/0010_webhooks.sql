-- Webhook endpoints of restaurants and the notifier's delivery state (services/notifier/).
-- Who may touch which row is migration 0011.
--
-- webhook_deliveries: one row per (endpoint, event), written by the notifier in the same
-- transaction for a whole batch of events before it commits its Kafka offsets, so a restarted
-- notifier re-reads at most a batch whose rows are already there (ON CONFLICT DO NOTHING).
-- An order's deliveries to one endpoint go out in `version` order: of each (endpoint, order) at
-- most one delivery is `pending` (the head, which the dispatcher sends); the later ones are
-- `waiting` and the lowest is promoted when the head is delivered or given up. Writers of these
-- states take one advisory lock per transaction, so a head never finishes unseen by an insert.

CREATE TABLE webhook_endpoints (
    id                 uuid        PRIMARY KEY,
    restaurant_id      uuid        NOT NULL,
    url                text        NOT NULL CHECK (length(url) BETWEEN 8 AND 2000),
    event_types        text[],     -- NULL: every type
    description        text        CHECK (length(description) <= 500),
    secret             text        NOT NULL,
    previous_secret    text,
    previous_secret_expires_at timestamptz,
    status             text        NOT NULL DEFAULT 'enabled'
                                   CHECK (status IN ('enabled', 'disabled')),
    disabled_reason    text,
    disabled_at        timestamptz,
    failing_since      timestamptz,  -- first failure since the last success
    created_at         timestamptz NOT NULL DEFAULT now(),
    created_by         text        NOT NULL
);

CREATE INDEX webhook_endpoints_restaurant_idx ON webhook_endpoints (restaurant_id);

CREATE TABLE webhook_deliveries (
    id              bigserial   PRIMARY KEY,
    endpoint_id     uuid        NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    restaurant_id   uuid        NOT NULL,
    event_id        text        NOT NULL,
    event_type      text        NOT NULL,
    order_id        uuid        NOT NULL,
    version         integer     NOT NULL,
    body            bytea       NOT NULL,  -- the CloudEvent as it was on the topic
    event_time      timestamptz NOT NULL,  -- when the change was applied
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'waiting', 'delivered', 'failed', 'held')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (endpoint_id, event_id)
);

-- What is due; and which head to promote next.
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_head_idx ON webhook_deliveries (endpoint_id, order_id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_waiting_idx ON webhook_deliveries (endpoint_id, order_id, version)
    WHERE status = 'waiting';
CREATE INDEX webhook_deliveries_endpoint_created_idx ON webhook_deliveries (endpoint_id, created_at);

CREATE TABLE webhook_attempts (
    id             bigserial   PRIMARY KEY,
    delivery_id    bigint      NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    endpoint_id    uuid        NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    restaurant_id  uuid        NOT NULL,
    event_id       text        NOT NULL,
    order_id       uuid        NOT NULL,
    attempted_at   timestamptz NOT NULL,
    status_code    integer,
    latency_ms     double precision NOT NULL,
    error          text,
    next_retry_at  timestamptz
);

CREATE INDEX webhook_attempts_endpoint_idx ON webhook_attempts (endpoint_id, attempted_at DESC);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id);
