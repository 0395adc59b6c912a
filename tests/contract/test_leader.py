"""One leader at a time, on every backend: the second claimant waits for the first."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import StoreError
from gateway.store.engine import advisory_key, create_engine
from gateway.store.leader import leadership

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/leader.db"
    url = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("GATEWAY_TEST_POSTGRES_URL is not set")
    return url


@pytest.mark.parametrize("backend", BACKENDS)
class TestLeadership:
    async def test_a_second_process_waits_until_the_leader_lets_go(
            self, backend: str, tmp_path: Path) -> None:
        first, second = (create_engine(_url(backend, tmp_path)) for _ in range(2))
        order: list[str] = []
        try:
            async with leadership(first, "test-stream", poll_seconds=0.05):
                order.append("first leads")

                async def follower() -> None:
                    async with leadership(second, "test-stream", poll_seconds=0.05):
                        order.append("second leads")

                waiting = asyncio.create_task(follower())
                await asyncio.sleep(0.3)
                assert order == ["first leads"]
                order.append("first lets go")
            await asyncio.wait_for(waiting, 5)
            assert order == ["first leads", "first lets go", "second leads"]
        finally:
            await first.dispose()
            await second.dispose()

    async def test_different_names_do_not_exclude_each_other(
            self, backend: str, tmp_path: Path) -> None:
        engine = create_engine(_url(backend, tmp_path))
        try:
            async with leadership(engine, "one", poll_seconds=0.05):
                await asyncio.wait_for(
                    _enter(leadership(engine, "two", poll_seconds=0.05)), 2)
        finally:
            await engine.dispose()


async def _enter(manager) -> None:  # type: ignore[no-untyped-def]
    async with manager:
        pass


@pytest.mark.postgres
class TestLostPostgresLead:
    async def test_a_leader_whose_connection_dies_stops_leading(self, tmp_path: Path) -> None:
        first, second = (create_engine(_url("postgresql", tmp_path)) for _ in range(2))
        try:
            with pytest.raises(StoreError, match="lost the lead"):
                async with leadership(first, "test-lost", poll_seconds=0.05):
                    await _terminate_holder(second, "test-lost")
                    await asyncio.sleep(10)  # the body is cut short, not run to its end
            await asyncio.wait_for(
                _enter(leadership(second, "test-lost", poll_seconds=0.05)), 5)
        finally:
            await first.dispose()
            await second.dispose()

    async def test_a_cancelled_body_is_still_a_cancellation(self, tmp_path: Path) -> None:
        engine = create_engine(_url("postgresql", tmp_path))
        entered = asyncio.Event()

        async def lead() -> None:
            async with leadership(engine, "test-cancel", poll_seconds=0.05):
                entered.set()
                await asyncio.sleep(10)

        try:
            task = asyncio.create_task(lead())
            await asyncio.wait_for(entered.wait(), 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # the lock was let go: the same name can be taken again at once
            await asyncio.wait_for(
                _enter(leadership(engine, "test-cancel", poll_seconds=0.05)), 2)
        finally:
            await engine.dispose()


async def _terminate_holder(engine: AsyncEngine, name: str) -> None:
    """Ends the backend holding the advisory lock ``name``, as a server restart would."""
    key = advisory_key(name)
    async with engine.connect() as connection:
        terminated = (await connection.execute(sa.text(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
            " AND granted AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = :key"
        ), {"key": key})).scalars().all()
        assert terminated == [True]
