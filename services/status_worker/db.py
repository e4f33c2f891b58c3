"""PostgreSQL adapter of the worker: its one connection, and the unit of work (one transaction over
a batch, in which each command is looked up and written as its caller)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg

from services.adapters.tenancy import acting_as
from services.core.messages import Actor
from services.status_worker import queries
from services.status_worker.repository import INBOX_LOOKBACK, GuardTrips, Repository


class WorkerDatabase:
    """One connection, reopened after a failure. Server-side prepared statements kick in by reuse."""

    def __init__(self, url: str, inbox_lookback: timedelta = INBOX_LOOKBACK) -> None:
        self.url = url
        self.inbox_lookback = inbox_lookback
        self._conn: psycopg.Connection[Any] | None = None

    def connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url, autocommit=False, connect_timeout=5)
        return self._conn

    def reset(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None

    def ping(self) -> None:
        conn = self.connection()
        conn.execute(queries.PING)
        conn.rollback()

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self.connection(), self.inbox_lookback)

    def guard_trips(self, group_id: str, worker_id: str) -> GuardTrips:
        return GuardTrips(self.connection(), group_id, worker_id)


class UnitOfWork:
    """One transaction (`with uow:` commits, or rolls back on an exception); `acting_as` runs a
    block as a command's caller so row-level security decides; `savepoint` isolates one command;
    `pipeline` batches a command's statements into few round trips."""

    def __init__(
        self, conn: psycopg.Connection[Any], inbox_lookback: timedelta = INBOX_LOOKBACK
    ) -> None:
        self.conn = conn
        self.repository = Repository(conn, inbox_lookback)
        self._transaction: contextlib.AbstractContextManager[Any] | None = None

    def __enter__(self) -> UnitOfWork:
        self._transaction = self.conn.transaction()
        self._transaction.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._transaction is not None
        self._transaction.__exit__(*exc)
        self._transaction = None

    def acting_as(self, actor: Actor) -> contextlib.AbstractContextManager[None]:
        return acting_as(self.conn, actor)

    def savepoint(self) -> contextlib.AbstractContextManager[Any]:
        return self.conn.transaction()

    @contextlib.contextmanager
    def pipeline(self) -> Iterator[None]:
        with self.conn.pipeline():
            yield
