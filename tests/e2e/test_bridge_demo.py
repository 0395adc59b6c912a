"""``gateway demo`` on the embedded default config, as README's first command runs it:
a fresh data directory, then a second run on the same one; with ``--script``, or
without a terminal, it runs the scripted round trip."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def demo(data_dir: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """The demo with no terminal: its stdin is /dev/null."""
    env = {**os.environ, "GATEWAY_DATA_DIR": str(data_dir)}
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "gateway", "demo", *options], cwd=ROOT, env=env,
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240, check=False)


class TestScriptedDemo:
    def test_every_step_arrives_on_a_fresh_data_dir_and_again_on_the_same_one(
            self, tmp_path: Path) -> None:
        for options in (["--script"], []):  # the second without: there is no terminal
            result = demo(tmp_path, *options)
            assert result.returncode == 0, result.stdout + result.stderr
            assert "6/6 steps arrived" in result.stdout
            for step in ("phone → wallet", "wallet → phone", "photo phone → wallet",
                         "photo wallet → phone", "dial mode", "STOP then START"):
                assert f"--- {step}: ok" in result.stdout
        assert (tmp_path / "xmtp" / "demo-wallet.db3").exists()
        # the photos each side received, saved where the transcript says
        assert len(list((tmp_path / "demo-files" / "wallet").iterdir())) == 2
        assert len(list((tmp_path / "demo-files" / "phone").iterdir())) == 2

    def test_the_terminal_shows_the_transcript_and_the_gateway_logs_to_a_file(
            self, tmp_path: Path) -> None:
        result = demo(tmp_path, "--script")
        assert result.returncode == 0, result.stdout + result.stderr
        log_file = tmp_path / "demo.log"
        assert f"gateway logs: {log_file}" in result.stdout
        assert "embedded XMTP devnode" in log_file.read_text()
        # Python's log lines start with a timestamp; libxmtp's native ones use a dot
        python_log_line = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", re.MULTILINE)
        assert not python_log_line.search(result.stdout + result.stderr), result.stderr
