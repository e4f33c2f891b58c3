"""Idempotency-Key (draft-ietf-httpapi-idempotency-key-header) and the record of commands the API
must find again. A key is scoped to its caller and remembered for IDEMPOTENCY_TTL."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import LiteralString
from uuid import UUID

from services.command_api.db import Pool, unavailable_as_store_error

IDEMPOTENCY_TTL = timedelta(hours=24)
KEY_MAX_LENGTH = 255

CLAIM_KEY: LiteralString = """
WITH expired AS (
    DELETE FROM command_requests
    WHERE caller = %(caller)s AND idempotency_key = %(key)s AND expires_at < now()
)
INSERT INTO command_requests
    (command_id, caller, order_id, idempotency_key, fingerprint, expires_at, issued_at)
VALUES (%(command_id)s, %(caller)s, %(order_id)s, %(key)s, %(fingerprint)s, now() + %(ttl)s,
        %(issued_at)s)
ON CONFLICT (caller, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING command_id
"""

KEY_HOLDER: LiteralString = """
SELECT command_id, order_id, fingerprint, published_at IS NOT NULL AS published, issued_at
FROM command_requests
WHERE caller = %(caller)s AND idempotency_key = %(key)s
"""

RELEASE_KEY: LiteralString = "DELETE FROM command_requests WHERE command_id = %(command_id)s"

MARK_PUBLISHED: LiteralString = """
UPDATE command_requests SET published_at = now()
WHERE command_id = %(command_id)s AND published_at IS NULL
"""

RECORD_COMMAND: LiteralString = """
INSERT INTO command_requests (command_id, caller, order_id, expires_at)
VALUES (%(command_id)s, %(caller)s, %(order_id)s, now() + %(ttl)s)
ON CONFLICT (command_id) DO NOTHING
"""

FIND_COMMAND: LiteralString = """
SELECT command_id, caller, order_id FROM command_requests WHERE command_id = %(command_id)s
"""

PURGE_EXPIRED: LiteralString = "DELETE FROM command_requests WHERE expires_at < now()"


@dataclass(frozen=True, slots=True)
class KeyHolder:
    command_id: UUID
    order_id: UUID
    fingerprint: str
    published: bool
    """False: the claimed command may never have reached Kafka (a retry publishes it)."""
    issued_at: datetime | None = None
    """The claimed command's issued_at (None for claims from before migration 0016): a retry
    republishes it as first issued, the inbox's key (migration 0015)."""


def fingerprint(method: str, path: str, body: str) -> str:
    return hashlib.sha256(f"{method}\n{path}\n{body}".encode()).hexdigest()


def valid_key(key: str) -> bool:
    return 0 < len(key) <= KEY_MAX_LENGTH and key.isprintable()


class CommandRequests:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def claim(
        self,
        *,
        caller: str,
        key: str,
        fingerprint: str,
        command_id: UUID,
        order_id: UUID,
        issued_at: datetime | None = None,
    ) -> KeyHolder | None:
        """None when this request now holds the key; else who held it first."""
        params = {
            "caller": caller,
            "key": key,
            "fingerprint": fingerprint,
            "command_id": command_id,
            "order_id": order_id,
            "ttl": IDEMPOTENCY_TTL,
            "issued_at": issued_at,
        }
        async with self.pool.connection() as conn:
            claimed = await (await conn.execute(CLAIM_KEY, params)).fetchone()
            if claimed is not None:
                return None
            row = await (await conn.execute(KEY_HOLDER, params)).fetchone()
        if row is None:  # the holder expired and was purged between the two statements
            return await self.claim(
                caller=caller,
                key=key,
                fingerprint=fingerprint,
                command_id=command_id,
                order_id=order_id,
                issued_at=issued_at,
            )
        return KeyHolder(
            row["command_id"],
            row["order_id"],
            row["fingerprint"],
            row["published"],
            row["issued_at"],
        )

    async def release(self, command_id: UUID) -> None:
        """Forgets a command Kafka never accepted (recorded for respond-async without a key)."""
        async with self.pool.connection() as conn:
            await conn.execute(RELEASE_KEY, {"command_id": command_id})

    async def mark_published(self, command_id: UUID) -> None:
        """Kafka has the claimed command: a retry waits for its outcome, never republishes.
        Raises StoreUnavailable."""
        async with unavailable_as_store_error(), self.pool.connection() as conn:
            await conn.execute(MARK_PUBLISHED, {"command_id": command_id})

    async def record(self, *, caller: str, command_id: UUID, order_id: UUID) -> None:
        """Remembers who issued a command, so they can look it up. Raises StoreUnavailable."""
        params = {
            "caller": caller,
            "command_id": command_id,
            "order_id": order_id,
            "ttl": IDEMPOTENCY_TTL,
        }
        async with unavailable_as_store_error(), self.pool.connection() as conn:
            await conn.execute(RECORD_COMMAND, params)

    async def caller_of(self, command_id: UUID) -> str | None:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(FIND_COMMAND, {"command_id": command_id})).fetchone()
        return row["caller"] if row is not None else None

    async def purge_expired(self) -> int:
        async with self.pool.connection() as conn:
            purged: int = (await conn.execute(PURGE_EXPIRED)).rowcount
            return purged
