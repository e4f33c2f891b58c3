-- Commands the API must be able to find again: those sent with an Idempotency-Key, those sent
-- asynchronously (Prefer: respond-async) and those whose outcome did not arrive in time (504).
-- The synchronous hot path writes nothing here.
CREATE TABLE command_requests (
    command_id      uuid PRIMARY KEY,
    caller          text        NOT NULL,
    order_id        uuid        NOT NULL,
    idempotency_key text,
    fingerprint     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);

-- A key is scoped to its caller; an expired key may be claimed again.
CREATE UNIQUE INDEX command_requests_caller_key_idx
    ON command_requests (caller, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX command_requests_expires_idx ON command_requests (expires_at);
