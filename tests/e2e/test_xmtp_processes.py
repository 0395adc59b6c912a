"""Two ``gateway serve`` processes on one PostgreSQL database, as an operator runs them:
the same config but for the data directory, the port and ``xmtp.worker`` (one process
does the XMTP work, the other none), behind a round-robin load balancer that spreads
Twilio's webhooks across both. Each is SIGKILLed and started again, in turn, while
phones keep texting: every text reaches the wallet once, in order, promptly; no phone
gets two groups; the inbox's installations stay one."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import yaml
from aiohttp import web
from sqlalchemy.engine import make_url

from gateway.twilio.webhooks import MESSAGES_PATH
from gateway.xmtp.client import XmtpClient
from tests.e2e.bridge.harness import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    ROOT,
    Phones,
    Process,
    Wallet,
    free_port,
    wait_for_port,
)

POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
pytestmark = [
    pytest.mark.e2e, pytest.mark.postgres,
    pytest.mark.skipif(not POSTGRES_URL, reason="GATEWAY_TEST_POSTGRES_URL is not set"),
]

SUPPORT = "+15550100001"
PROMPTLY = 10.0  # seconds a text may take to reach the wallet while its gateway runs
TEXTING_EVERY = 0.3  # seconds between two texts of one phone (people, not a flood)


async def fresh_database() -> str:
    assert POSTGRES_URL is not None
    url = make_url(POSTGRES_URL)
    name = f"{url.database}_processes"
    dsn = url.set(drivername="postgresql")
    server = await asyncpg.connect(dsn.render_as_string(hide_password=False))
    try:
        await server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await server.execute(f'CREATE DATABASE "{name}"')
    finally:
        await server.close()
    return url.set(database=name).render_as_string(hide_password=False)


class Balancer:
    """Round-robin over the gateways that answer, as a load balancer with health checks
    would: a backend that refuses (killed) is skipped and the request goes to the next."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self.served: dict[str, int] = dict.fromkeys(backends, 0)
        self._turn = itertools.count()
        self._session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("content-type", "x-twilio-signature")}
        start = next(self._turn)
        for i in range(len(self.backends) * 3):
            backend = self.backends[(start + i) % len(self.backends)]
            try:
                async with self._session.post(backend + request.path_qs, data=body,
                                              headers=headers) as answer:
                    text = await answer.read()
                    if answer.status >= 500:
                        continue
                    self.served[backend] += 1
                    return web.Response(status=answer.status, body=text,
                                        content_type=answer.content_type)
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        return web.Response(status=503, text="no gateway answered")

    @contextlib.asynccontextmanager
    async def running(self, port: int) -> AsyncIterator[None]:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            self._session = session
            try:
                yield
            finally:
                await runner.cleanup()


@dataclass
class Gateway:
    name: str
    port: int
    process: Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self, session: aiohttp.ClientSession, within: float = 90.0) -> None:
        await wait_for_port(self.process, self.port, within=within)
        deadline = time.monotonic() + within
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(self.url + "/readyz") as response:
                    if response.status == 200:
                        return
            assert time.monotonic() < deadline and self.process.alive(), \
                self.process.output()
            await asyncio.sleep(0.1)


@dataclass
class Deployment:
    tmp: Path
    config: Path
    xmtp: Gateway  # xmtp.worker: true
    web: Gateway  # xmtp.worker: false
    balancer: Balancer
    phones: Phones
    wallet: Wallet
    session: aiohttp.ClientSession

    def installations(self) -> int:
        """How many installations the gateway's inbox has, as the operator reads it."""
        done = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "gateway", "xmtp", "status", "--config", str(self.config)],
            cwd=ROOT, env={**os.environ, **self.xmtp.process.extra_env, "RUST_LOG": "off"},
            capture_output=True, text=True, timeout=60, check=False)
        found = re.search(r"installations:\s+(\d+) of 10 in use", done.stdout)
        assert found, done.stdout + done.stderr
        return int(found.group(1))

    async def restart(self, gateway: Gateway) -> None:
        gateway.process.kill()
        await asyncio.sleep(0.3)
        gateway.process.start()
        await gateway.ready(self.session)


@contextlib.asynccontextmanager
async def deployed(tmp: Path) -> AsyncIterator[Deployment]:
    database = await fresh_database()
    devnode_port, sim_port, balancer_port = free_port(), free_port(), free_port()
    public_url = f"http://127.0.0.1:{balancer_port}"
    devnode = Process("devnode", ["devnode", "--port", str(devnode_port), "--db",
                                  str(tmp / "devnode.db"), "--log-level", "WARNING"],
                      tmp / "devnode.log")
    sim = Process("twilio-sim", [
        "twilio-sim", "--port", str(sim_port), "--auth-token", AUTH_TOKEN,
        "--account-sid", ACCOUNT_SID, "--webhook-url", public_url + MESSAGES_PATH],
        tmp / "sim.log")
    config = tmp / "gateway.yaml"
    gateways = []
    for name, worker in (("xmtp", "true"), ("web", "false")):
        port = free_port()
        env = {"GATEWAY_DATA_DIR": str(tmp / f"data-{name}"), "GATEWAY_PORT": str(port),
               "GATEWAY_XMTP_WORKER": worker}
        gateways.append(Gateway(name, port, Process(
            name, ["serve", "--config", str(config)], tmp / f"{name}.log", env=env)))
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        for process in (devnode, sim, *(g.process for g in gateways)):
            stack.callback(process.stop)
        devnode.start()
        sim.start()
        await wait_for_port(devnode, devnode_port)
        await wait_for_port(sim, sim_port)
        node_url = f"http://127.0.0.1:{devnode_port}"
        agent = Wallet(await XmtpClient.create(node_url=node_url,
                                               private_key=secrets.token_bytes(32)),
                       b"")
        config.write_text(yaml.safe_dump({
            "data_dir": "${GATEWAY_DATA_DIR}",
            "server": {"host": "127.0.0.1", "port": 8080, "public_url": public_url,
                       "log_level": "INFO"},
            "database": {"url": database, "encryption_keys": {
                "k1": base64.b64encode(secrets.token_bytes(32)).decode()}, "active_key": "k1"},
            "twilio": {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN,
                       "api_base_url": f"http://127.0.0.1:{sim_port}",
                       "rate_limits": {"default_per_second": 500.0},
                       "send_timeout_seconds": 5.0, "lease_seconds": 14.0,
                       "retry": {"base_delay_seconds": 0.2, "max_delay_seconds": 2.0}},
            "xmtp": {"env": "local", "node_url": node_url,
                     "wallet_key": "0x" + secrets.token_hex(32),
                     "db_encryption_key": secrets.token_hex(32),
                     "worker": "${GATEWAY_XMTP_WORKER}",
                     "send_timeout_seconds": 10.0, "lease_seconds": 30.0},
            "directory": {"agent": agent.address},
            "rules": [{"name": "support", "proxy": SUPPORT, "channels": ["sms"],
                       "mode": "fixed", "wallets": ["agent"]}],
        }))
        balancer = Balancer([g.url for g in gateways])
        await stack.enter_async_context(balancer.running(balancer_port))
        for gateway in gateways:  # the XMTP one first: it migrates the database
            gateway.process.start()
            await gateway.ready(session)
        deployment = Deployment(tmp, config, gateways[0], gateways[1], balancer,
                                Phones(session, f"http://127.0.0.1:{sim_port}"), agent,
                                session)
        try:
            yield deployment
        except BaseException:
            for gateway in gateways:
                print(f"--- {gateway.name} ---\n{gateway.process.output()}", file=sys.stderr)
            raise


def phone(n: int) -> str:
    return f"+1555123{n:04d}"


def group_name(n: int) -> str:
    return f"SMS · +1 555-123-{n:04d}"


async def groups_by_name(wallet: Wallet) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for group in await wallet.groups():
        found.setdefault(group.name.split(" → ")[0], []).append(group.id)
    return found


class TestTwoProcessesOnePostgres:
    async def test_texts_arrive_once_in_order_promptly_across_sigkills(
            self, tmp_path: Path) -> None:
        async with deployed(tmp_path) as d:
            assert d.installations() == 1
            sent: dict[int, list[str]] = {}
            first_two: dict[int, set[str]] = {}

            async def text(n: int, body: str) -> None:
                await d.phones.text(phone(n), SUPPORT, body)
                sent.setdefault(n, []).append(body)

            async def new_phone(n: int) -> None:
                # its first two texts at once: they reach both processes
                first_two[n] = {f"{n}-a", f"{n}-b"}
                await asyncio.gather(text(n, f"{n}-a"), text(n, f"{n}-b"))

            async def arrived(within: float) -> None:
                for n in sent:
                    group = await d.wallet.group_named(group_name(n), within=within)
                    texts = await d.wallet.wait_for_texts(
                        group, lambda t, n=n: len(t) >= len(sent[n]), within=within)
                    assert set(texts[:2]) == first_two[n], (n, texts)
                    assert texts[2:] == sent[n][2:], (n, texts)  # in order, once each

            await asyncio.gather(*(new_phone(n) for n in (1, 2, 3)))
            await arrived(PROMPTLY)
            for round_ in range(4):
                victim = d.xmtp if round_ % 2 == 0 else d.web
                talking = asyncio.Event()
                stop = asyncio.Event()

                async def keep_texting(n: int, round_: int = round_, stop: asyncio.Event = stop,
                                       talking: asyncio.Event = talking) -> None:
                    i = 0
                    while not stop.is_set():
                        await text(n, f"{n}-r{round_}-{i}")
                        i += 1
                        talking.set()
                        await asyncio.sleep(TEXTING_EVERY)

                phones = [asyncio.create_task(keep_texting(n)) for n in list(sent)]
                await talking.wait()
                victim.process.kill()  # with texts in flight through both processes
                await new_phone(10 + round_)  # a new phone while one process is dead
                await asyncio.sleep(1.0)
                victim.process.start()
                await victim.ready(d.session)
                await asyncio.sleep(1.0)
                stop.set()
                await asyncio.gather(*phones)
                started = time.monotonic()
                await arrived(PROMPTLY)
                assert time.monotonic() - started < PROMPTLY

            assert all(count > 0 for count in d.balancer.served.values()), d.balancer.served
            named = await groups_by_name(d.wallet)
            assert {name: len(ids) for name, ids in named.items()} == {
                group_name(n): 1 for n in sent}
            assert d.installations() == 1
