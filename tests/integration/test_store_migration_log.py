"""The gateway runs its migrations itself: one line of its own says what changed;
Alembic's INFO narration stays out of the log, its warnings do not."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.store import engine as engines


async def upgrade_twice(path: Path) -> None:
    url = f"sqlite+aiosqlite:///{path}"
    engine = engines.create_engine(url)
    try:
        await engines.upgrade(engine)
        await engines.upgrade(engine)  # nothing left to do: nothing to say
    finally:
        await engine.dispose()


class TestMigrationLog:
    async def test_an_upgrade_logs_one_line_of_its_own_and_nothing_from_alembic(
            self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG)
        await upgrade_twice(tmp_path / "gateway.db")
        assert [r.name for r in caplog.records if r.name.startswith("alembic")] == []
        ours = [r.getMessage() for r in caplog.records if r.name == "gateway.store.engine"]
        assert len(ours) == 1
        assert ours[0].startswith("database schema upgraded from nothing to ")

    async def test_alembic_is_left_as_it_was_after_an_upgrade(self, tmp_path: Path) -> None:
        alembic_log = logging.getLogger("alembic")
        alembic_log.setLevel(logging.INFO)
        try:
            await upgrade_twice(tmp_path / "gateway.db")
            assert alembic_log.level == logging.INFO
        finally:
            alembic_log.setLevel(logging.NOTSET)

    async def test_alembic_warnings_still_show_while_it_runs(
            self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG)
        with engines.alembic_quiet():  # the quieting itself is the subject
            logging.getLogger("alembic.runtime.migration").info("narration")
            logging.getLogger("alembic.runtime.migration").warning("a real problem")
        assert [r.getMessage() for r in caplog.records] == ["a real problem"]
