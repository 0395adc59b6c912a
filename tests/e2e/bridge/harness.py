"""The bridge as separate processes: a devnode, a Twilio simulator and ``gateway serve``,
each started with ``python -m gateway …`` on free loopback ports; phones driven through
the simulator's control API, wallets as independent libxmtp clients in the test process.

Every wait is bounded; a process that does not come up in time fails the test with its
output attached.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from eth_account import Account

from gateway.twilio.webhooks import MESSAGES_PATH
from gateway.xmtp.client import Conversation, XmtpClient, XmtpMessage
from tests.ports import free_port

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "e2e-auth-token"
ROOT = Path(__file__).resolve().parents[3]


class Process:
    """A ``python -m gateway`` subprocess with its output in a log file."""

    def __init__(self, name: str, args: Sequence[str], log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "RUST_LOG": "error", "PYTHONUNBUFFERED": "1", **self.extra_env}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "gateway", *self.args], cwd=ROOT, env=env,
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as when a machine loses power."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(5)


async def wait_for_port(process: Process, port: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not process.alive():
            raise AssertionError(f"{process.name} exited:\n{process.output()}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{process.name} did not listen on {port} in {within}s:\n"
                         f"{process.output()}")


@dataclass
class Wallet:
    """A wallet's libxmtp client, as a person's app would run it."""

    client: XmtpClient
    key: bytes
    seen: set[str] = field(default_factory=set)

    @property
    def address(self) -> str:
        return self.client.address

    async def groups(self) -> list[Conversation]:
        await self.client.sync_all()
        return [c for c in self.client.conversations() if not c.is_dm]

    async def group_named(self, name: str, within: float = 15.0) -> Conversation:
        """The group named ``name``, or named after the phone ``name`` and the number it
        texted (``"SMS · +1 555-123-0001 → +1 555-010-0001"`` for ``"SMS · +1
        555-123-0001"``)."""
        deadline = time.monotonic() + within
        while True:
            for group in await self.groups():
                if group.name == name or group.name.startswith(f"{name} → "):
                    return group
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.address} has no group named {name!r}; groups: "
                                     f"{[g.name for g in await self.groups()]}")
            await asyncio.sleep(0.1)

    async def texts(self, group: Conversation) -> list[XmtpMessage]:
        await group.sync()
        return [m for m in await group.messages() if m.text is not None]

    async def wait_for_texts(self, group: Conversation, predicate: Callable[[list[str]], bool],
                             within: float = 15.0) -> list[str]:
        """Texts of the group (oldest first) once ``predicate`` holds on them."""
        deadline = time.monotonic() + within
        while True:
            texts = [m.text or "" for m in await self.texts(group)]
            if predicate(texts):
                return texts
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.address}: condition not met in {within}s; "
                                     f"group {group.name!r} has {texts!r}")
            await asyncio.sleep(0.1)


class Phones:
    """Simulated phones, through the Twilio simulator's control API."""

    def __init__(self, session: aiohttp.ClientSession, sim_url: str) -> None:
        self._session = session
        self._url = sim_url

    async def text(self, from_: str, to: str, body: str, *,
                   media: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
        payload: dict[str, Any] = {"from": from_, "to": to, "body": body,
                                   "media": [{"url": u, "content_type": t} for u, t in media]}
        async with self._session.post(self._url + "/_sim/texts", json=payload) as response:
            result: dict[str, Any] = await response.json()
        assert result.get("status") == 200, result
        return result

    async def inbox(self, phone: str, count: int = 0, within: float = 15.0) -> list[dict[str, Any]]:
        params = {"phone": phone, "count": str(count), "timeout": str(within)}
        async with self._session.get(self._url + "/_sim/inbox", params=params,
                                     timeout=aiohttp.ClientTimeout(total=within + 10)) as r:
            data: dict[str, Any] = await r.json()
        messages: list[dict[str, Any]] = data["messages"]
        return messages

    async def wait_for(self, phone: str, predicate: Callable[[list[str]], bool],
                       within: float = 15.0) -> list[str]:
        """Bodies ``phone`` received (oldest first) once ``predicate`` holds on them."""
        deadline = time.monotonic() + within
        while True:
            bodies = [m["body"] for m in await self.inbox(phone)]
            if predicate(bodies):
                return bodies
            if time.monotonic() > deadline:
                raise AssertionError(f"phone ...{phone[-4:]}: condition not met in "
                                     f"{within}s; it received {bodies!r}")
            await asyncio.sleep(0.1)

    async def text_with_files(self, from_: str, to: str, body: str,
                              files: Sequence[tuple[bytes, str]]) -> dict[str, Any]:
        """An MMS whose files the simulator hosts as Twilio does (behind the account's
        credentials, redirected to a short-lived CDN URL)."""
        payload = {"from": from_, "to": to, "body": body, "attachments": [
            {"data_base64": base64.b64encode(data).decode(), "content_type": kind}
            for data, kind in files]}
        async with self._session.post(self._url + "/_sim/texts", json=payload) as response:
            result: dict[str, Any] = await response.json()
        assert result.get("status") == 200, result
        return result

    async def files_received(self, phone: str, within: float = 15.0) -> list[tuple[bytes, str]]:
        """(bytes, content type) of every file ``phone`` received, once it has one."""
        deadline = time.monotonic() + within
        while True:
            found = [(base64.b64decode(m["data_base64"]), m["content_type"])
                     for text in await self.inbox(phone) for m in text.get("media", [])]
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"phone ...{phone[-4:]} received no file in {within}s")
            await asyncio.sleep(0.1)

    async def fault(self, **fault: Any) -> None:
        async with self._session.post(self._url + "/_sim/faults", json=fault) as response:
            assert response.status == 201, await response.text()


@dataclass
class Bridge:
    """The running processes, and how to reach them."""

    tmp: Path
    devnode_port: int
    sim_port: int
    gateway_port: int
    gateway_key: str
    wallets: dict[str, Wallet]
    rules: list[dict[str, Any]]
    devnode: Process
    sim: Process
    gateway: Process
    phones: Phones
    session: aiohttp.ClientSession

    @property
    def node_url(self) -> str:
        return f"http://127.0.0.1:{self.devnode_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    async def start_devnode(self) -> None:
        self.devnode.start()
        await wait_for_port(self.devnode, self.devnode_port)

    async def start_gateway(self) -> None:
        self.gateway.start()
        await wait_for_port(self.gateway, self.gateway_port, within=60)
        deadline = time.monotonic() + 30
        while True:  # ready: store, chat network and workers are up
            with contextlib.suppress(aiohttp.ClientError):
                async with self.session.get(self.gateway_url + "/readyz") as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline or not self.gateway.alive():
                raise AssertionError(f"gateway not ready:\n{self.gateway.output()}")
            await asyncio.sleep(0.1)

    async def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples whose labels include ``labels``."""
        async with self.session.get(self.gateway_url + "/metrics") as response:
            text = await response.text()
        wanted = [f'{key}="{value}"' for key, value in labels.items()]
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and all(w in line for w in wanted):
                total += float(line.rsplit(" ", 1)[1])
        return total

    async def wait_for_metric(self, name: str, at_least: float, within: float = 15.0,
                              **labels: str) -> None:
        deadline = time.monotonic() + within
        while (value := await self.metric(name, **labels)) < at_least:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}{labels} is {value}, not {at_least}, "
                                     f"after {within}s")
            await asyncio.sleep(0.05)


def gateway_config(*, port: int, sim_port: int, node_url: str, wallet_key: str,
                   directory: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "data_dir": ".",
        "server": {"host": "127.0.0.1", "port": port,
                   "public_url": f"http://127.0.0.1:{port}", "log_level": "INFO"},
        "database": {"url": "sqlite+aiosqlite:///gateway.db",
                     "encryption_keys": {"k1": base64.b64encode(secrets.token_bytes(32)).decode()},
                     "active_key": "k1"},
        "twilio": {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN,
                   "api_base_url": f"http://127.0.0.1:{sim_port}",
                   "rate_limits": {"default_per_second": 500.0},
                   # short, so sends claimed by a SIGKILLed gateway are reconciled soon
                   "send_timeout_seconds": 5.0, "lease_seconds": 14.0,
                   "retry": {"base_delay_seconds": 0.2, "max_delay_seconds": 2.0}},
        "xmtp": {"env": "local", "node_url": node_url, "wallet_key": wallet_key,
                 "db_path": "xmtp/gateway.db3", "db_encryption_key": secrets.token_hex(32)},
        # the simulator's media and the tests' own file servers are on 127.0.0.1
        "media": {"allow_insecure_urls": True},
        "directory": directory,
        "rules": rules,
    }


@contextlib.asynccontextmanager
async def running_bridge(tmp: Path, *, wallets: Sequence[str],
                         rules: Callable[[dict[str, str]], list[dict[str, Any]]],
                         devnode_args: Sequence[str] = (),
                         xmtp: dict[str, Any] | None = None) -> AsyncIterator[Bridge]:
    """Starts devnode, simulator and gateway; registers ``wallets`` (names) as libxmtp
    clients; ``rules(addresses by name)`` gives the gateway's rules. ``devnode_args``:
    more of ``gateway devnode``'s flags; ``xmtp``: more of the gateway's xmtp config."""
    devnode_port, sim_port, gateway_port = free_port(), free_port(), free_port()
    devnode = Process("devnode", ["devnode", "--port", str(devnode_port), "--db",
                                  str(tmp / "devnode.db"), "--log-level", "WARNING",
                                  *devnode_args],
                      tmp / "devnode.log")
    sim = Process("twilio-sim", [
        "twilio-sim", "--port", str(sim_port), "--auth-token", AUTH_TOKEN,
        "--account-sid", ACCOUNT_SID,
        "--webhook-url", f"http://127.0.0.1:{gateway_port}{MESSAGES_PATH}"], tmp / "sim.log")
    gateway_key = "0x" + secrets.token_hex(32)
    config_path = tmp / "gateway.yaml"
    gateway = Process("gateway", ["serve", "--config", str(config_path)], tmp / "gateway.log")
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        for process in (devnode, sim, gateway):
            stack.callback(process.stop)
        devnode.start()
        sim.start()
        await wait_for_port(devnode, devnode_port)
        await wait_for_port(sim, sim_port)
        node_url = f"http://127.0.0.1:{devnode_port}"
        made: dict[str, Wallet] = {}
        for name in wallets:
            key = secrets.token_bytes(32)
            client = await XmtpClient.create(node_url=node_url, private_key=key)
            made[name] = Wallet(client, key)
        addresses = {name: w.address for name, w in made.items()}
        rule_list = rules(addresses)
        config = gateway_config(
            port=gateway_port, sim_port=sim_port, node_url=node_url, wallet_key=gateway_key,
            directory=addresses, rules=rule_list)
        config["xmtp"].update(xmtp or {})
        config_path.write_text(yaml.safe_dump(config))
        bridge = Bridge(tmp=tmp, devnode_port=devnode_port, sim_port=sim_port,
                        gateway_port=gateway_port, gateway_key=gateway_key, wallets=made,
                        rules=rule_list, devnode=devnode, sim=sim, gateway=gateway,
                        phones=Phones(session, f"http://127.0.0.1:{sim_port}"),
                        session=session)
        await bridge.start_gateway()
        try:
            yield bridge
        except BaseException:
            print(f"--- gateway log ---\n{gateway.output()}", file=sys.stderr)
            raise


def address_of(key: bytes) -> str:
    return str(Account.from_key(key).address)
