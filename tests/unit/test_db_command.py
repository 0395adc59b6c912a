"""``gateway db current`` only reads: on a fresh install it creates no data directory,
no secrets file and no empty SQLite database."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main

REPO = Path(__file__).resolve().parents[2]


class TestDbCurrent:
    def test_on_a_fresh_install_writes_nothing_and_says_there_is_no_database_yet(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> None:
        data_dir = tmp_path / "data"
        monkeypatch.setenv("GATEWAY_DATA_DIR", str(data_dir))
        assert main(["db", "current", "--config", str(REPO / "config" / "gateway.yaml")]) == 0
        assert capsys.readouterr().out == (
            f"sqlite+aiosqlite:///{data_dir}/gateway.db: at revision none "
            "(no database file yet)\n")
        assert list(tmp_path.iterdir()) == []

    def test_after_an_upgrade_names_the_revision(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> None:
        monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "data"))
        config = str(REPO / "config" / "gateway.yaml")
        assert main(["db", "upgrade", "--config", config]) == 0
        assert main(["db", "current", "--config", config]) == 0
        last = capsys.readouterr().out.splitlines()[-1]
        assert "at revision " in last and "none" not in last
