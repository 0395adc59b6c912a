"""The data directory is owned by one process at a time, and a dead owner (SIGKILL
included) leaves it free."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.data_dir import LOCK_FILE, exclusive_data_dir
from gateway.errors import DataDirInUse

ROOT = Path(__file__).resolve().parents[2]

HOLDER = """
import sys, time
from pathlib import Path
from gateway.data_dir import exclusive_data_dir
with exclusive_data_dir(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process owning ``tmp_path / "data"``."""
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-c", HOLDER, str(tmp_path / "data")], cwd=ROOT,
        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"  # EOF if it died: fails, not hangs
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


class TestDataDirClaim:
    def test_a_directory_another_process_owns_is_refused_at_once_naming_its_pid(
            self, tmp_path: Path, holder: subprocess.Popen[str]) -> None:
        with pytest.raises(DataDirInUse) as refused, exclusive_data_dir(tmp_path / "data"):
            pass
        assert refused.value.pid == holder.pid
        assert str(refused.value).startswith(
            f"another gateway is using {tmp_path / 'data'} (pid {holder.pid});")

    def test_the_directory_is_free_again_once_its_owner_was_killed_with_sigkill(
            self, tmp_path: Path, holder: subprocess.Popen[str]) -> None:
        holder.kill()
        holder.wait(10)
        with exclusive_data_dir(tmp_path / "data"):
            pid = (tmp_path / "data" / LOCK_FILE).read_text().strip()
        assert pid == str(os.getpid())

    def test_a_second_claim_in_the_same_process_is_refused_too(self, tmp_path: Path) -> None:
        with (exclusive_data_dir(tmp_path), pytest.raises(DataDirInUse),
              exclusive_data_dir(tmp_path)):
            pass

    def test_the_directory_is_free_once_the_block_ends(self, tmp_path: Path) -> None:
        with exclusive_data_dir(tmp_path):
            pass
        with exclusive_data_dir(tmp_path):
            pass

    def test_a_missing_directory_is_created(self, tmp_path: Path) -> None:
        with exclusive_data_dir(tmp_path / "new" / "data"):
            assert (tmp_path / "new" / "data" / LOCK_FILE).exists()

    def test_other_directories_are_claimed_independently(self, tmp_path: Path) -> None:
        with exclusive_data_dir(tmp_path / "a"), exclusive_data_dir(tmp_path / "b"):
            pass
