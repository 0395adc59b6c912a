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
