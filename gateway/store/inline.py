"""SQLite statements run inline on the event loop's thread.

A SQLite statement on a local WAL database takes tens of microseconds; sending it to
aiosqlite's worker thread and back costs several hundred (measured: 0.47 ms against
0.09 ms per primary-key SELECT), and an inbound text is about ten statements. So the
store runs SQLite transactions through a synchronous pysqlite connection wrapped in the
small part of ``AsyncConnection``'s surface that ``SqlStoreTx`` uses; the store's
prebuilt statements skip SQLAlchemy's execution machinery there (``prepared``).

The one wait that could block the loop is another *process* holding the write lock, so
these connections have no busy timeout: ``BEGIN IMMEDIATE`` fails at once and the store
retries it asynchronously (``begin_immediate``) until its own deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.pool import StaticPool

from gateway.store.prepared import Prepared, PreparedStatements

LOCK_WAIT_SECONDS = 15.0


class InlineConnection:
    """The async surface of a connection that ``SqlStoreTx`` needs, done synchronously."""

    def __init__(self, connection: sa.Connection, prepared: PreparedStatements) -> None:
        self.sync_connection = connection
        self.dialect = connection.dialect
        self._prepared = prepared
        driver = connection.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        self._driver = driver

    async def execute(self, statement: sa.Executable,
                      parameters: Mapping[str, Any] | None = None) -> sa.CursorResult[Any]:
        return self.sync_connection.execute(statement, parameters)

    async def rows(self, statement: sa.Executable,
                   parameters: Mapping[str, Any] | None = None) -> Sequence[Mapping[Any, Any]]:
        """The statement's rows as mappings: prepared (``gateway.store.prepared``) when
        it can be, through SQLAlchemy otherwise."""
        prepared = self._prepared.get(statement, parameters)
        if prepared is None:
            return self.sync_connection.execute(statement, parameters).mappings().all()
        if self._prepared.verify:
            return self._verified(statement, parameters, prepared)
        return prepared.run(self._driver, parameters)

    def _verified(self, statement: sa.Executable, parameters: Mapping[str, Any] | None,
                  prepared: Prepared) -> list[dict[str, Any]]:
        """Runs the statement through SQLAlchemy first, in a savepoint rolled back after
        it, then prepared, and insists both answer the same: the guard on ``prepared``'s
        use of SQLAlchemy's internals (the equivalence test runs the store this way)."""
        savepoint = self.sync_connection.begin_nested()
        try:
            expected = [dict(row) for row in
                        self.sync_connection.execute(statement, parameters).mappings()]
        finally:
            savepoint.rollback()
        found = prepared.run(self._driver, parameters)
        if found != expected:
            raise AssertionError(f"a prepared statement answered differently from "
                                 f"SQLAlchemy: {prepared.sql}")
        self._prepared.verified.add(statement)
        return found

    async def scalar(self, statement: sa.Executable,
                     parameters: Mapping[str, Any] | None = None) -> Any:
        found = await self.rows(statement, parameters)
        return next(iter(found[0].values())) if found else None

    @contextlib.asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        with self.sync_connection.begin_nested():
            yield


def create_inline_engine(url: URL) -> sa.Engine:
    """A synchronous pysqlite engine on the same database file, with the store's pragmas
    but no busy timeout (see the module docstring)."""
    options: dict[str, Any] = {"hide_parameters": True,
                               "connect_args": {"timeout": 0, "check_same_thread": False}}
    if url.database in {None, "", ":memory:"}:
        options["poolclass"] = StaticPool
    engine = sa.create_engine(url.set(drivername="sqlite+pysqlite"), **options)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # BEGIN is ours (begin_immediate)
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "busy_timeout=0", "foreign_keys=ON",
                       "synchronous=NORMAL"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    # No connection events here (BEGIN is issued in ``begin_immediate``): any connection
    # event listener makes SQLAlchemy dispatch four more events around every statement.
    return engine


async def begin_immediate(connection: sa.Connection, *,
                          wait: float = LOCK_WAIT_SECONDS) -> None:
    """Opens ``BEGIN IMMEDIATE`` on ``connection``; while another process holds the write
    lock it retries with a growing pause (the loop stays free) until ``wait`` runs out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    pause = 0.001
    while True:
        try:
            # pysqlite's own BEGIN is off (isolation_level None): this opens the
            # transaction SQLAlchemy's autobegin tracks, and commit()/rollback() end it
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            return
        except sa.exc.OperationalError as exc:
            connection.rollback()  # SQLAlchemy's side of the transaction that never began
            if "locked" not in str(exc.orig) or loop.time() >= deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.05)
