"""``gateway devnode`` as its own process: serves real clients, logs one line per RPC at
debug level, persists to --db, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
from pathlib import Path

import pytest

from gateway.xmtp.client import XmtpClient
from tests.ports import free_port

pytestmark = pytest.mark.e2e


async def wait_until_listening(port: int, process: asyncio.subprocess.Process) -> None:
    for _ in range(100):
        if process.returncode is not None:
            raise AssertionError(f"devnode exited with {process.returncode}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        await asyncio.sleep(0.05)
    raise AssertionError("devnode did not start listening within 5 s")


class TestDevnodeCommand:
    async def test_the_command_serves_clients_logs_each_rpc_and_stops_on_sigterm(
            self, tmp_path: Path) -> None:
        port, db = free_port(), tmp_path / "data" / "devnode.db"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "devnode", "--port", str(port), "--db", str(db),
            "--log-level", "debug",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            await wait_until_listening(port, process)
            url = f"http://127.0.0.1:{port}"
            alice = await XmtpClient.create(node_url=url, private_key=secrets.token_bytes(32))
            bob = await XmtpClient.create(node_url=url, private_key=secrets.token_bytes(32))
            dm = await alice.new_dm(bob.address)
            await dm.send_text("through a separate process")
            await bob.sync_all()
            assert [m.text for m in await bob.conversation(dm.id).messages()] == [
                "through a separate process"]
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            stdout, stderr = await asyncio.wait_for(process.communicate(), 10)
        assert process.returncode == 0
        assert f"http://127.0.0.1:{port}" in stdout.decode()
        log = stderr.decode()
        for method in ("PublishIdentityUpdate", "UploadKeyPackage", "SendWelcomeMessages",
                       "SendGroupMessages", "QueryWelcomeMessages"):
            assert f"rpc {method} ok" in log
        # --log-level debug is the devnode's: asyncio's and grpc's debug stays out
        debug = [line for line in log.splitlines() if " DEBUG " in line]
        assert debug and all(" DEBUG gateway." in line for line in debug), debug[:5]
        assert db.exists()
