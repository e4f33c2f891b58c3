"""DATABASE_READ_URL against a real streaming replica (tests/pg_replica.py: a primary and a
`pg_basebackup -R` standby of this test's own, on free ports): the API's order reads are served by
the replica, command outcomes by the primary. Replay on the replica is paused to tell the two
apart: what the primary has and the replica does not yet is visible only through the primary."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from services.adapters.migrate import apply_migrations
from services.adapters.settings import Settings
from services.adapters.tenancy import APP_ROLE, grant_staff
from services.command_api.db import OrderReads, order_reads
from services.core.messages import Actor, Role
from tests.pg_replica import StreamingPair


@pytest.fixture(scope="module")
def pair() -> Iterator[StreamingPair]:
    pair = StreamingPair()
    try:
        pair.start()
        with psycopg.connect(pair.url(pair.primary_port), autocommit=True) as superuser:
            superuser.execute("CREATE ROLE orderstatus LOGIN CREATEDB CREATEROLE")
            superuser.execute("CREATE DATABASE orderstatus OWNER orderstatus")
        apply_migrations(pair.url(pair.primary_port, "orderstatus", "orderstatus"))
        pair.wait_replayed()
        yield pair
    finally:
        pair.stop()


def settings_of(pair: StreamingPair) -> Settings:
    return Settings(
        database_url=pair.url(pair.primary_port, APP_ROLE, "orderstatus"),
        database_admin_url=pair.url(pair.primary_port, "orderstatus", "orderstatus"),
        database_read_url=pair.url(pair.replica_port, APP_ROLE, "orderstatus"),
    )


async def read(
    reads: OrderReads, order_id: uuid.UUID, command_id: uuid.UUID, actor: Actor, replica_url: str
) -> Any:
    """The order's version read, whether the outcome was found, and whether the services' login
    had a session on the replica meanwhile (pg_stat_activity there)."""
    await reads.open()
    try:
        order = await reads.order(order_id, actor)
        outcome = await reads.command_result(command_id, actor)
        on_replica = app_sessions(replica_url) > 0
        return (order.version if order else None), (outcome is not None), on_replica
    finally:
        await reads.close()


def app_sessions(url: str) -> int:
    """Client sessions of the services' login role on that server."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            """SELECT count(*) FROM pg_stat_activity
               WHERE usename = %s AND datname = 'orderstatus' AND backend_type = 'client backend'""",
            (APP_ROLE,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_order_reads_come_from_the_replica_and_outcomes_from_the_primary(
    pair: StreamingPair,
) -> None:
    settings = settings_of(pair)
    restaurant, order_id, command_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    actor = Actor(sub="alice", role=Role.AUTHENTICATED)
    with psycopg.connect(settings.admin_url, autocommit=True) as owner:
        grant_staff(owner, user_id="alice", restaurant_id=restaurant)
        owner.execute(
            """INSERT INTO orders (id, restaurant_id, status, version)
               VALUES (%s, %s, 'pending', 1)""",
            (order_id, restaurant),
        )
    pair.wait_replayed()
    pair.pause_replay()
    try:
        with psycopg.connect(settings.admin_url, autocommit=True) as owner:
            owner.execute(
                "UPDATE orders SET status = 'accepted', version = 2 WHERE id = %s", (order_id,)
            )
            owner.execute(
                """INSERT INTO command_outcomes (command_id, order_id, restaurant_id, command_type,
                   outcome, result, actor_sub, actor_role)
                   VALUES (%s, %s, %s, 'change_status', 'applied', %s, 'alice', 'authenticated')""",
                (command_id, order_id, restaurant, _result(command_id, order_id)),
            )
        reads = order_reads(settings.database_url, settings.database_read_url)
        assert reads.read_pool is not reads.pool
        # The replica has not replayed the change: the order read is its version 1; the outcome,
        # written after the pause, is found, so it was read on the primary.
        replica_url = pair.url(pair.replica_port)
        assert asyncio.run(read(reads, order_id, command_id, actor, replica_url)) == (1, True, True)
    finally:
        pair.pause_replay(False)
    pair.wait_replayed()
    reads = order_reads(settings.database_url, settings.database_read_url)
    assert asyncio.run(read(reads, order_id, command_id, actor, pair.url(pair.replica_port))) == (
        2,
        True,
        True,
    )


def test_without_a_read_url_everything_is_read_on_the_primary(pair: StreamingPair) -> None:
    settings = settings_of(pair).model_copy(update={"database_read_url": None})
    reads = order_reads(settings.database_url, settings.database_read_url)
    assert reads.read_pool is reads.pool

    async def hold() -> tuple[int, int]:
        await reads.open()
        try:
            await reads.order(uuid.uuid4(), Actor(sub="bob", role=Role.AUTHENTICATED))
            return (
                app_sessions(pair.url(pair.primary_port)),
                app_sessions(pair.url(pair.replica_port)),
            )
        finally:
            await reads.close()

    primary, replica = asyncio.run(hold())
    assert primary >= 1 and replica == 0


def _result(command_id: uuid.UUID, order_id: uuid.UUID) -> Jsonb:
    return Jsonb(
        {
            "command_id": str(command_id),
            "order_id": str(order_id),
            "command_type": "change_status",
            "outcome": "applied",
            "processed_at": "2026-01-01T00:00:00Z",
        }
    )
