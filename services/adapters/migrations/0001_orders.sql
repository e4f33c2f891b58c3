-- Orders, their status history, the worker's command inbox, and analytics events.
-- Table, column and index names are the runbook's contract (docs/runbook.md).

CREATE TABLE orders (
    id            uuid PRIMARY KEY,
    restaurant_id uuid        NOT NULL,
    status        text        NOT NULL CHECK (status IN
                    ('pending','accepted','rejected','preparing','ready','completed','cancelled')),
    version       integer     NOT NULL CHECK (version >= 1),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- The runbook's "verify orders_status_created_idx exists": open orders by status and age.
CREATE INDEX orders_status_created_idx ON orders (status, created_at);
CREATE INDEX orders_restaurant_created_idx ON orders (restaurant_id, created_at);

-- One row per applied status change (creation is not a change: it has no from_status).
CREATE TABLE order_status_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id      uuid        NOT NULL REFERENCES orders (id),
    restaurant_id uuid        NOT NULL,
    from_status   text        NOT NULL,
    to_status     text        NOT NULL,
    version       integer     NOT NULL,
    command_id    uuid        NOT NULL UNIQUE,
    actor         text        NOT NULL,
    reason        text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, version)
);

CREATE INDEX order_status_events_created_idx ON order_status_events (created_at);
CREATE INDEX order_status_events_restaurant_created_idx
    ON order_status_events (restaurant_id, created_at);

-- The worker's inbox: each command id once, with the outcome it got, written in the same
-- transaction as the change, so a redelivered command changes nothing and republishes this.
CREATE TABLE command_outcomes (
    command_id      uuid PRIMARY KEY,
    order_id        uuid        NOT NULL,
    restaurant_id   uuid,
    command_type    text        NOT NULL,
    outcome         text        NOT NULL,
    result          jsonb       NOT NULL,
    event           jsonb,
    source_partition integer,
    source_offset   bigint,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX command_outcomes_created_idx ON command_outcomes (created_at);
CREATE INDEX command_outcomes_order_idx ON command_outcomes (order_id, created_at);

-- Analytics events the runbook counts, e.g. type = 'order_status_conflict'.
CREATE TABLE widget_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type          text        NOT NULL,
    restaurant_id uuid,
    order_id      uuid,
    command_id    uuid,
    payload       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX widget_events_type_created_idx ON widget_events (type, created_at);
