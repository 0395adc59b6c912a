"""One store contract, every backend: SQLite (a file in tmp_path) and PostgreSQL (from
GATEWAY_TEST_POSTGRES_URL; skipped when unset, CI always sets it).

PostgreSQL tests use their own database, ``<name>_contract``, whose ``public`` schema is
dropped and re-created before each test, so tests are independent and never touch what
other suites keep in the main test database.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from gateway.store import SqlStore, open_store
from tests.contract.scenario import KEYS, OpenStore

POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL")


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


async def _fresh_postgres_database() -> str:
    assert POSTGRES_URL is not None
    contract_db = f"{make_url(POSTGRES_URL).database}_contract"
    server = await asyncpg.connect(_asyncpg_dsn(POSTGRES_URL))
    try:
        exists = await server.fetchval("SELECT 1 FROM pg_database WHERE datname = $1",
                                       contract_db)
        if not exists:
            await server.execute(f'CREATE DATABASE "{contract_db}"')
    finally:
        await server.close()
    db = await asyncpg.connect(_asyncpg_dsn(POSTGRES_URL, contract_db))
    try:
        await db.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
    finally:
        await db.close()
    return make_url(POSTGRES_URL).set(database=contract_db).render_as_string(
        hide_password=False)


@pytest.fixture(params=[
    "sqlite",
    pytest.param("postgres", marks=[
        pytest.mark.postgres,
        pytest.mark.skipif(not POSTGRES_URL, reason="GATEWAY_TEST_POSTGRES_URL is not set"),
    ]),
])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    return await _fresh_postgres_database()


@pytest.fixture
async def open_another(store_url: str) -> AsyncIterator[OpenStore]:
    """Opens further stores on the same database, as other gateway processes would."""
    opened: list[SqlStore] = []

    async def _open(keys: dict[str, bytes] | None = None, active_key: str = "k1") -> SqlStore:
        store = await open_store(store_url, keys=keys or KEYS, active_key=active_key)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_another: OpenStore) -> SqlStore:
    return await open_another()
