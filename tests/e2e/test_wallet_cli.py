"""``gateway wallet``: a wallet on the running gateway's embedded devnode, to try wallet
participants without writing libxmtp code — registered and printed for scripts, or
chatting through stdin and stdout."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from eth_account import Account

from tests.e2e.served_gateway import ServedGateway, copy_default_config, free_port, served

pytestmark = pytest.mark.e2e

WITHIN = 30.0  # each step of a chat must show within this


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    with served(tmp_path_factory.mktemp("wallet")) as running:
        yield running


def wallet(home: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "gateway", "wallet", *args], cwd=home, env=env,
        capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
async def session(gateway: ServedGateway) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
            base_url=gateway.url,
            headers={"Authorization": f"Bearer {gateway.token()}"}) as found:
        yield found


@pytest.fixture
def api(session: aiohttp.ClientSession) -> Any:
    async def call(method: str, path: str, body: Any = None) -> Any:
        async with session.request(method, path, json=body) as resp:
            found = await resp.json()
            assert resp.status < 300, found
            return found
    return call


class TestPrintAddress:
    async def test_registers_a_wallet_the_gateway_can_then_add(self, gateway, api):
        done = wallet(gateway.home, "--print-address", env=gateway.env())
        assert done.returncode == 0, done.stderr
        address = done.stdout.strip()
        assert address.startswith("0x") and len(address) == 42
        assert address != address.lower()  # checksummed, as people copy them
        await api("POST", "/v1/conversations", {"unique_name": "printed"})
        joined = await api("POST", "/v1/conversations/printed/participants",
                           {"identity": address})
        assert joined["identity"] == address

    async def test_a_given_key_is_that_wallet(self, gateway):
        key = "0x" + secrets.token_hex(32)
        done = wallet(gateway.home, "--print-address", "--key", key, env=gateway.env())
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == Account.from_key(key).address


class TestChatting:
    async def test_lines_go_into_the_conversation_and_its_messages_come_out(
            self, gateway, api, session):
        key = "0x" + secrets.token_hex(32)
        address = Account.from_key(key).address
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "wallet", "--key", key, cwd=gateway.home,
            env=gateway.env(), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        assert proc.stdin is not None and proc.stdout is not None
        shown: list[str] = []

        async def shows(text: str) -> None:
            async def read() -> None:
                while not any(text in line for line in shown):
                    line = (await proc.stdout.readline()).decode()  # type: ignore[union-attr]
                    assert line, "\n".join(shown)
                    shown.append(line)
            await asyncio.wait_for(read(), WITHIN)

        try:
            await shows(f"wallet {address}")
            await api("POST", "/v1/conversations",
                      {"unique_name": "chat", "friendly_name": "Chat"})
            await api("POST", "/v1/conversations/chat/participants", {"identity": address})
            await shows("joined Chat")
            await api("POST", "/v1/conversations/chat/messages", {"body": "hello wallet"})
            await shows("[Chat] ")
            assert any(line.rstrip().endswith(": hello wallet") for line in shown), shown

            async with session.get("/v1/events", params={
                    "conversation_id": "chat", "types": "message.added"}) as events:
                proc.stdin.write(b"hi from the wallet\n")
                await proc.stdin.drain()
                message = await asyncio.wait_for(_next_message(events), WITHIN)
            assert message["body"] == "hi from the wallet"
            assert message["source"] == "xmtp"

            proc.stdin.close()  # the end of input ends the chat
            assert await asyncio.wait_for(proc.wait(), WITHIN) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def _next_message(events: aiohttp.ClientResponse) -> dict[str, Any]:
    async for raw in events.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("data: "):
            found: dict[str, Any] = json.loads(line[len("data: "):])["data"]["message"]
            return found
    raise AssertionError("the event stream ended")


class TestNothingToTalkTo:
    def test_without_a_running_gateway_it_says_so_in_one_line(self, tmp_path: Path) -> None:
        copy_default_config(tmp_path, free_port())
        env = ServedGateway(tmp_path, 0, tmp_path / "unused.log").env()
        done = wallet(tmp_path, "--print-address", env=env)
        assert done.returncode == 1
        assert done.stdout == ""
        assert done.stderr.startswith("gateway wallet: no gateway is running on ")
        assert len(done.stderr.strip().splitlines()) == 1

    def test_a_devnode_url_left_by_a_killed_gateway_is_not_trusted(
            self, tmp_path: Path) -> None:
        copy_default_config(tmp_path, free_port())
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "devnode.url").write_text(f"http://127.0.0.1:{free_port()}\n")
        env = ServedGateway(tmp_path, 0, tmp_path / "unused.log").env()
        done = wallet(tmp_path, "--print-address", env=env)
        assert done.returncode == 1
        assert "no gateway is running on" in done.stderr

    def test_a_key_that_is_no_key_is_refused(self, tmp_path: Path) -> None:
        done = wallet(tmp_path, "--key", "0x12", "--node", "http://127.0.0.1:1",
                      env=ServedGateway(tmp_path, 0, tmp_path / "unused.log").env())
        assert done.returncode == 1
        assert done.stderr == ("gateway wallet: --key must be a secp256k1 private key: 0x "
                               "and 64 hex digits\n")
