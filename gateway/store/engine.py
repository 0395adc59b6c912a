"""Engines for SQLite (aiosqlite) and PostgreSQL (asyncpg), and Alembic run over them.

SQLite: WAL, a busy timeout, foreign keys on, and every transaction opened with
``BEGIN IMMEDIATE``. pysqlite's own implicit BEGIN is switched off because it starts
transactions late and as DEFERRED: two writers that both read first would then deadlock
and one would fail with "database is locked" instead of waiting its turn.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from gateway.errors import StoreError

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 15_000
MIGRATIONS = Path(__file__).parent / "migrations"

# what a database or its driver raises when it is unreachable or refuses a statement
DATABASE_ERRORS = (sa.exc.SQLAlchemyError, OSError)


def describe_failure(doing: str, exc: BaseException) -> StoreError:
    """A StoreError naming the driver's complaint. Bound values (phone numbers, bodies)
    are not part of it: engines are created with ``hide_parameters``."""
    original = getattr(exc, "orig", None) or exc
    return StoreError(f"{doing}: {type(original).__name__}: {original}")


def ensure_sqlite_directory(url: str) -> None:
    """A fresh install's data directory may not exist yet; SQLite will not create it."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in {None, "", ":memory:"}:
        assert parsed.database is not None
        if not parsed.database.startswith("file:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def normalise_url(url: str) -> URL:
    """``sqlite:///x.db`` and ``postgresql://…`` get the async drivers the store uses."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in {"postgresql", "postgres"}:
        return parsed.set(drivername="postgresql+asyncpg")
    raise StoreError(f"unsupported database backend {backend!r}: use sqlite or postgresql")


def create_engine(url: str) -> AsyncEngine:
    parsed = normalise_url(url)
    # hide_parameters: SQL errors would otherwise quote phone numbers and message content
    options: dict[str, Any] = {"hide_parameters": True}
    if parsed.get_backend_name() == "sqlite":
        options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        if parsed.database in {None, "", ":memory:"}:
            # one connection, or each would see its own empty in-memory database
            options["poolclass"] = StaticPool
        engine = create_async_engine(parsed, **options)
        _configure_sqlite(engine)
        return engine
    return create_async_engine(parsed, pool_size=10, max_overflow=10, **options)


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        try:
            cursor = dbapi_connection.cursor()
            for pragma in ("journal_mode=WAL", f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
                           "foreign_keys=ON", "synchronous=NORMAL"):
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()
        except BaseException:
            # the pool drops a connection that failed here without closing it, which
            # would leave aiosqlite's worker thread behind
            dbapi_connection.close()
            raise

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_xact_lock``."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big",
                          signed=True)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # several gateway processes may start at once; one migrates, the others wait
            await lock(connection, "gateway.migrations")
        await connection.run_sync(_upgrade, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(_current_revision)


def _current_revision(connection: sa.Connection) -> str | None:
    with alembic_quiet():
        from alembic.runtime.migration import MigrationContext

        return MigrationContext.configure(connection).get_current_revision()


async def lock(connection: AsyncConnection, name: str) -> None:
    """A PostgreSQL advisory lock held until the transaction ends."""
    await connection.execute(sa.select(sa.func.pg_advisory_xact_lock(advisory_key(name))))


def _upgrade(connection: sa.Connection, revision: str) -> None:
    before = _current_revision(connection)
    with alembic_quiet():
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    after = _current_revision(connection)
    if after != before:
        log.info("database schema upgraded from %s to %s", before or "nothing", after)


@contextlib.contextmanager
def alembic_quiet() -> Iterator[None]:
    """Alembic narrates at INFO: seven plugins set up when it is first imported (so it is
    imported in here), the dialect, each step; the one line above says what changed.
    Its warnings still show, and a failed migration raises."""
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(max(logging.WARNING, level))
    try:
        yield
    finally:
        alembic_log.setLevel(level)
