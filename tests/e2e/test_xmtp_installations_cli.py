"""``gateway serve`` and ``gateway xmtp status|revoke`` as processes on the default config
(embedded devnode): a lost libxmtp database stops serve in one line naming the fix,
``--new-installation`` gets past it, and the commands show and revoke the old one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.test_serve_startup import ROOT, STARTS_WITHIN, free_port

pytestmark = pytest.mark.e2e


@dataclass
class Gateway:
    tmp: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return (self.tmp / "data").resolve()

    @property
    def config(self) -> Path:
        path = self.tmp / "gateway.yaml"
        if not path.exists():
            text = (ROOT / "config" / "gateway.yaml").read_text()
            path.write_text(text.replace("8080", str(self.port)))
        return path

    def env(self) -> dict[str, str]:
        return {**os.environ, "GATEWAY_DATA_DIR": str(self.data_dir), "RUST_LOG": "off",
                "PYTHONUNBUFFERED": "1"}

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "gateway", *args, "--config", str(self.config)],
            cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=90,
            check=False)

    def serve_until_listening(self, *extra: str) -> str:
        """Starts serve, waits until it listens, stops it; its output."""
        log_path = self.tmp / "serve.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "gateway", "serve", "--config", str(self.config),
                 *extra], cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                text=True)
        try:
            deadline = time.monotonic() + STARTS_WITHIN
            while "gateway listening" not in log_path.read_text():
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(20)
        return log_path.read_text()


def installation_in(log: str) -> str:
    found = re.search(r"installation ([0-9a-f]{64}), \d+ of 10 installations in use", log)
    assert found, log
    return found.group(1)


class TestALostLibxmtpDatabase:
    def test_stops_serve_in_one_line_until_the_operator_asks_for_a_new_installation(
            self, tmp_path: Path) -> None:
        gateway = Gateway(tmp_path, free_port())
        first = installation_in(gateway.serve_until_listening())
        for lost in (gateway.data_dir / "xmtp").glob("gateway.db3*"):
            lost.unlink()

        refused = gateway.command("serve")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        output = refused.stdout + refused.stderr
        assert "Traceback" not in output
        [error] = [line for line in output.splitlines() if "ERROR" in line]
        assert "the gateway could not start: this data_dir registered XMTP installation" in error
        assert first in error and "--new-installation" in error

        status = gateway.command("xmtp", "status")
        assert status.returncode == 0, status.stderr
        assert "installations:     1 of 10 in use" in status.stdout
        assert f"{first} (active; libxmtp database" in status.stdout
        assert "MISSING" in status.stdout

        second = installation_in(gateway.serve_until_listening("--new-installation"))
        assert second != first

        shown = gateway.command("xmtp", "revoke", first[:16])
        assert shown.returncode == 1 and "nothing revoked: add --yes" in shown.stdout
        revoked = gateway.command("xmtp", "revoke", first[:16], "--yes")
        assert revoked.returncode == 0, revoked.stderr
        assert "installations:     1 of 10 in use" in revoked.stdout
        assert f"{second}  " in revoked.stdout and first not in revoked.stdout.split(
            "revoked.")[1]

    def test_a_command_error_is_one_line(self, tmp_path: Path) -> None:
        gateway = Gateway(tmp_path, free_port())
        done = gateway.command("xmtp", "revoke", "--all-others")
        assert done.returncode == 1
        assert done.stderr.strip().splitlines() == [
            f"gateway xmtp revoke: wallet {wallet_of(done.stderr)} has no XMTP inbox: "
            "nothing to revoke"]


def wallet_of(text: str) -> str:
    found = re.search(r"0x[0-9a-fA-F]{40}", text)
    assert found, text
    return found.group(0)
