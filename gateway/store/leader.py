"""One leader among gateway processes for work that must run once (the XMTP stream
consumer): a PostgreSQL session-level advisory lock, or a file lock beside a SQLite
database. A process that is not the leader waits, and takes over when the leader's
connection or process goes away.

A PostgreSQL lock lives as long as its connection, so the leader checks that connection
while it leads: when it is gone (a server restart, a network failure) another process may
already lead, and the block is cancelled and ends with StoreError("lost the lead")."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.errors import StoreError
from gateway.store.engine import DATABASE_ERRORS, advisory_key, describe_failure

log = logging.getLogger(__name__)

# how long a check of the leader's connection may take before the lead counts as lost
CHECK_TIMEOUT = 10.0


@contextlib.asynccontextmanager
async def leadership(engine: AsyncEngine, name: str, *,
                     poll_seconds: float = 2.0) -> AsyncIterator[None]:
    """Holds the lock called ``name`` for the duration of the block (waits for it).
    Raises StoreError out of the block, cancelling it, if the lock is lost meanwhile."""
    if engine.dialect.name == "postgresql":
        async with _advisory(engine, name, poll_seconds):
            yield
    else:
        async with _file_lock(_lock_path(engine, name), poll_seconds):
            yield


@contextlib.asynccontextmanager
async def _advisory(engine: AsyncEngine, name: str, poll: float) -> AsyncIterator[None]:
    key = advisory_key(name)
    async with engine.connect() as connection:
        waited = False
        while True:
            taken = (await connection.execute(
                sa.select(sa.func.pg_try_advisory_lock(key)))).scalar_one()
            await connection.commit()  # a session lock outlives the transaction
            if taken:
                break
            if not waited:
                log.info("another gateway process leads %s; waiting", name)
                waited = True
            await asyncio.sleep(poll)
        try:
            async with _cancelled_if_lost(connection, name, poll):
                yield
        finally:  # after the check has stopped: one statement at a time on a connection
            with contextlib.suppress(Exception):  # the connection may already be gone
                await connection.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                await connection.commit()


@contextlib.asynccontextmanager
async def _cancelled_if_lost(connection: AsyncConnection, name: str,
                             poll: float) -> AsyncIterator[None]:
    """Checks ``connection`` every ``poll`` seconds while the block runs; when a check
    fails (or hangs past CHECK_TIMEOUT) the block's task is cancelled, and that
    cancellation leaves the block as StoreError, much as asyncio.timeout turns its own
    cancellation into TimeoutError. Any other cancellation stays a cancellation."""
    body = asyncio.current_task()
    assert body is not None, "leadership is entered from a task"
    lost: list[StoreError] = []

    async def watch() -> None:
        while True:
            await asyncio.sleep(poll)
            try:
                async with asyncio.timeout(max(poll, CHECK_TIMEOUT)):
                    await connection.execute(sa.select(1))
                    await connection.commit()
            except (*DATABASE_ERRORS, TimeoutError) as exc:
                lost.append(describe_failure(f"lost the lead of {name}", exc))
                log.error("%s; stopping its work", lost[0])
                body.cancel()
                return

    watcher = asyncio.create_task(watch(), name=f"leadership check {name}")
    try:
        yield
    except asyncio.CancelledError:
        if lost and body.uncancel() == 0:
            raise lost[0] from None
        raise
    else:
        if lost:  # the block ended on its own after the cancel was requested
            body.uncancel()
            raise lost[0]
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def _lock_path(engine: AsyncEngine, name: str) -> Path | None:
    database = engine.url.database
    if not database or database == ":memory:":
        return None  # an in-memory database has one process by definition
    return Path(f"{database}.{name}.lock")


@contextlib.asynccontextmanager
async def _file_lock(path: Path | None, poll: float) -> AsyncIterator[None]:
    if path is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    log.info("another gateway process holds %s; waiting", path.name)
                    waited = True
                await asyncio.sleep(poll)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class ProcessLock:
    """A lock one gateway process holds for as long as it does some work, taken and
    given back by hand (``acquire``, ``release``), with ``watch`` to learn that it was
    lost: the XMTP work (``xmtp_lock``). On PostgreSQL a session-level advisory lock on
    a connection of its own, named (``application_name``) after the process's holder
    id; on SQLite a file lock beside the database; none for an in-memory database.

    The holder id is kept in the data directory, so a process that finds the lock held
    by a session of its own name is the same gateway started again after its previous
    life died without its connection closing (a host that lost power leaves the session
    until TCP gives up on it): that session is ended and the lock taken."""

    def __init__(self, engine: AsyncEngine, name: str, *, holder_id: str,
                 poll_seconds: float = 1.0) -> None:
        self.name = name
        self._key = advisory_key(name)
        self._postgres = engine.dialect.name == "postgresql"
        self._dsn = (engine.url.set(drivername="postgresql")
                     .render_as_string(hide_password=False) if self._postgres else "")
        self._path = None if self._postgres else _lock_path(engine, name)
        self._application_name = f"gateway {holder_id}"[:63]
        self._poll = poll_seconds
        self._connection: Any = None
        self._fd: int | None = None
        self.held = False

    async def acquire(self) -> None:
        """Waits until this process holds the lock (logging who is waited for)."""
        waited_since: float | None = None
        loop = asyncio.get_running_loop()
        while not await self._try():
            if waited_since is None or loop.time() - waited_since > 60:
                log.warning("another gateway process holds %s; this one waits for it to "
                            "stop%s", self.name, await self._holder_named())
                waited_since = loop.time()
            await asyncio.sleep(self._poll)
        self.held = True

    async def watch(self) -> None:
        """Returns never while the lock is held; raises StoreError once it is lost (its
        connection gone, or a check of it failing or hanging)."""
        while True:
            await asyncio.sleep(self._poll)
            if self._connection is None:
                continue  # a file lock lasts as long as this process
            try:
                async with asyncio.timeout(max(self._poll, CHECK_TIMEOUT)):
                    await self._connection.fetchval("SELECT 1")
            except (OSError, TimeoutError, asyncpg.PostgresError,
                    asyncpg.InterfaceError) as exc:
                self.held = False
                await self._drop_connection()
                raise describe_failure(f"lost {self.name}", exc) from exc

    async def release(self) -> None:
        self.held = False
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None
        await self._drop_connection()  # a session lock ends with its session

    async def _try(self) -> bool:
        if not self._postgres:
            return self._try_file()
        try:
            if self._connection is None:
                self._connection = await asyncpg.connect(
                    self._dsn, server_settings={"application_name": self._application_name})
            if await self._connection.fetchval("SELECT pg_try_advisory_lock($1)", self._key):
                return True
            ended = await self._connection.fetchval(
                "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l"
                " JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::bigint::oid"
                " AND l.objid = $2::bigint::oid AND l.objsubid = 1"
                " AND a.application_name = $3 AND l.pid <> pg_backend_pid()",
                *_halves(self._key), self._application_name)
            if ended:
                log.warning("%s was held by this gateway's previous life (its session "
                            "outlived it): ended that session", self.name)
            return False
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("%s: %s", self.name, describe_failure("taking the lock", exc))
            await self._drop_connection()
            return False

    def _try_file(self) -> bool:
        if self._path is None:
            return True  # an in-memory database has one process by definition
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    async def _holder_named(self) -> str:
        if self._connection is None:
            return ""
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            holder = await self._connection.fetchval(
                "SELECT a.application_name || ' at ' || coalesce(host(a.client_addr), 'a "
                "local socket') FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::bigint::oid"
                " AND l.objid = $2::bigint::oid AND l.objsubid = 1", *_halves(self._key))
            if holder:
                return f" ({holder})"
        return ""

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # it may be gone already
                await asyncio.wait_for(connection.close(), 2)


async def lock_is_held(engine: AsyncEngine, name: str) -> bool:
    """Whether any session holds the advisory lock ``name`` (PostgreSQL)."""
    high, low = _halves(advisory_key(name))
    async with engine.connect() as connection:
        found = (await connection.execute(sa.text(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid = CAST(CAST(:high AS bigint) AS oid)"
            " AND objid = CAST(CAST(:low AS bigint) AS oid) AND objsubid = 1"),
            {"high": high, "low": low})).first()
    return found is not None


def _halves(key: int) -> tuple[int, int]:
    """How pg_locks shows a bigint advisory key: its high and low 32 bits, unsigned."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return unsigned >> 32, unsigned & 0xFFFFFFFF
