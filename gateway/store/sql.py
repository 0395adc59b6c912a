"""The durable ``Store``: SQLAlchemy 2 async over SQLite (default) or PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.domain.ports import Store
from gateway.store import engine as engines
from gateway.store import statements
from gateway.store.crypto import ContentCipher
from gateway.store.inline import InlineConnection, begin_immediate, create_inline_engine
from gateway.store.prepared import PreparedStatements
from gateway.store.tx import SqlStoreTx


async def open_store(url: str, *, keys: Mapping[str, bytes], active_key: str,
                     migrate: bool = True, verify_prepared: bool = False) -> SqlStore:
    """Opens the database at ``url`` (``sqlite+aiosqlite:///path`` or
    ``postgresql+asyncpg://…``), bringing its schema up to date unless told not to."""
    cipher = ContentCipher(keys, active_key)
    engine = engines.create_engine(url)
    try:
        engines.ensure_sqlite_directory(url)
        if migrate:
            await engines.upgrade(engine)
    except engines.DATABASE_ERRORS as exc:
        await engine.dispose()
        raise engines.describe_failure("cannot migrate the database", exc) from exc
    except BaseException:
        await engine.dispose()
        raise
    return SqlStore(engine, cipher, verify_prepared=verify_prepared)


class SqlStore:
    def __init__(self, engine: AsyncEngine, cipher: ContentCipher, *,
                 verify_prepared: bool = False) -> None:
        self.engine = engine
        self._cipher = cipher
        # SQLite has one writer at a time anyway; queueing here instead of in SQLite's busy
        # handler (which sleeps and polls) keeps latency low inside one process. Other
        # processes still wait their turn through BEGIN IMMEDIATE and the busy timeout.
        self._sqlite_turn = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        # SQLite transactions run inline on the loop's thread (see gateway.store.inline);
        # the async engine stays for migrations, pings and the API's readers.
        self._inline = (create_inline_engine(engine.url)
                        if engine.dialect.name == "sqlite" and engine.url.database
                        not in (None, "", ":memory:") else None)
        # The one connection those transactions take turns on: checking one out of the
        # pool and back for every transaction cost more than a short transaction's work.
        self._inline_connection: sa.Connection | None = None
        self._prepared = (PreparedStatements(self._inline.dialect, statements.prebuilt(),
                                             verify=verify_prepared)
                          if self._inline is not None else None)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def prepared(self) -> PreparedStatements | None:
        """The prebuilt statements run inline on SQLite (None on PostgreSQL)."""
        return self._prepared

    @property
    def cipher(self) -> ContentCipher:
        """For readers outside a transaction (the API's listings) that open sealed rows."""
        return self._cipher

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlStoreTx]:
        async with self._turn():
            try:
                if self._inline is not None:
                    async with self._inline_transaction() as tx:
                        yield tx
                else:
                    async with self.engine.begin() as connection:
                        yield SqlStoreTx(connection, self._cipher)
            except engines.DATABASE_ERRORS as exc:
                raise engines.describe_failure("database error", exc) from exc

    @contextlib.asynccontextmanager
    async def _inline_transaction(self) -> AsyncIterator[SqlStoreTx]:
        assert self._inline is not None
        if self._inline_connection is None:
            self._inline_connection = self._inline.connect()
        connection = self._inline_connection
        await begin_immediate(connection)
        try:
            assert self._prepared is not None
            yield SqlStoreTx(InlineConnection(connection, self._prepared), self._cipher)
            connection.commit()
        except BaseException as exc:
            # A caller's own error (not found, a duplicate, cancellation) only rolls back;
            # a connection the database itself failed on is not trusted with the next one.
            healthy = not isinstance(exc, engines.DATABASE_ERRORS)
            try:
                connection.rollback()
            except BaseException:
                healthy = False
                raise
            finally:
                if not healthy:
                    self._inline_connection = None
                    connection.close()
            raise

    async def ping(self) -> None:
        async with self._turn():
            try:
                async with self.engine.connect() as connection:
                    await connection.execute(sa.text("SELECT 1"))
            except engines.DATABASE_ERRORS as exc:
                raise engines.describe_failure("database unreachable", exc) from exc

    async def close(self) -> None:
        if self._inline_connection is not None:
            self._inline_connection.close()
            self._inline_connection = None
        if self._inline is not None:
            self._inline.dispose()
        await self.engine.dispose()

    async def reseal(self, *, limit: int = 500) -> int:
        """Key rotation: re-encrypts up to ``limit`` messages sealed under an old key with
        the active one; returns how many. Call until it returns 0, then drop the old key."""
        async with self.transaction() as tx:
            return await tx.reseal_messages(limit=limit)

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        if self._sqlite_turn is None:
            yield
        else:
            async with self._sqlite_turn:
                yield



if TYPE_CHECKING:
    # mypy checks here that SqlStore (and so SqlStoreTx) really implements the ports
    def _implements_store(store: SqlStore) -> Store:
        return store
