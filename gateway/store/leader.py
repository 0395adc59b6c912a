"""One leader among gateway processes for work that must run once (the XMTP stream
consumer): a PostgreSQL session-level advisory lock, or a file lock beside a SQLite
database. A process that is not the leader waits, and takes over when the leader's
connection or process goes away."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.engine import advisory_key

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def leadership(engine: AsyncEngine, name: str, *,
                     poll_seconds: float = 2.0) -> AsyncIterator[None]:
    """Holds the lock called ``name`` for the duration of the block (waits for it)."""
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
            yield
        finally:
            with contextlib.suppress(Exception):  # the connection may already be gone
                await connection.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                await connection.commit()


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
